"""Candidate workspaces: pyhf schema, modifiers, and Z0 against pyhf."""

from __future__ import annotations

import math

import numpy as np
import pyhf
import pytest
from scipy import stats

from sigtune.pipelines.binning import (
    BinningError,
    Histograms,
    NormSys,
    WorkspaceOptions,
    build_workspace,
    expected_z0,
)


def pyhf_z0(spec: dict, *, expected: bool = False) -> float:
    """Z0 from pyhf's q0 asymptotics (the oracle)."""
    ws = pyhf.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    p_obs, p_exp = pyhf.infer.hypotest(0.0, data, model, test_stat="q0", return_expected=True)
    return float(stats.norm.isf(float(p_exp if expected else p_obs)))


def _modifiers(spec: dict, sample: str) -> dict[str, dict]:
    s = next(x for x in spec["channels"][0]["samples"] if x["name"] == sample)
    return {m["name"]: m for m in s["modifiers"]}


OPTIONS = [
    WorkspaceOptions(),
    WorkspaceOptions(normsys=(NormSys("bkg_norm", ("background",), 0.95, 1.05),)),
    WorkspaceOptions(split=True, lumi=(1.0, 0.02)),
    WorkspaceOptions(staterror=False, prune=0.02),
]


@pytest.mark.parametrize("opt", OPTIONS, ids=["default", "normsys", "split+lumi", "prune"])
def test_schema_valid_and_modifiers(fine: Histograms, opt: WorkspaceOptions) -> None:
    hist = fine.rebin(np.linspace(0.0, 1.0, 11))
    spec = build_workspace(hist, opt)
    pyhf.Workspace(spec)  # validates against pyhf's schema
    sig, bkg = _modifiers(spec, "signal"), _modifiers(spec, "background")
    assert sig["mu"]["type"] == "normfactor"
    if opt.staterror:
        np.testing.assert_allclose(
            bkg["staterror_SR"]["data"], np.sqrt(hist["background"].sumw2), rtol=1e-12
        )
    else:
        assert "staterror_SR" not in bkg
    if opt.normsys:
        assert bkg["bkg_norm"]["data"] == {"hi": 1.05, "lo": 0.95}
    if opt.split:
        up, _down = hist["background"].variations["bkg_w"]
        nom = hist["background"].counts
        assert bkg["bkg_w"]["type"] == "normsys"
        assert math.isclose(bkg["bkg_w"]["data"]["hi"], up.sum() / nom.sum(), rel_tol=1e-12)
        shape_up = np.array(bkg["bkg_w_shape"]["data"]["hi_data"])
        assert math.isclose(shape_up.sum(), nom.sum(), rel_tol=1e-12)  # shape only
        assert sig["lumi"]["type"] == "lumi" and bkg["lumi"]["type"] == "lumi"
    elif opt.prune is None:
        np.testing.assert_allclose(
            bkg["bkg_w"]["data"]["hi_data"], hist["background"].variations["bkg_w"][0]
        )
    obs = np.array(spec["observations"][0]["data"])
    np.testing.assert_allclose(obs, hist.total("all"), rtol=1e-12)


def test_pruning_drops_only_negligible_variations(fine: Histograms) -> None:
    hist = fine.rebin(np.linspace(0.0, 1.0, 6))
    bkg = hist["background"]
    effect = max(
        float(np.max(np.abs(v - bkg.counts) / bkg.counts)) for v in bkg.variations["bkg_scale"]
    )
    keep = build_workspace(hist, WorkspaceOptions(prune=effect * 0.99))
    drop = build_workspace(hist, WorkspaceOptions(prune=effect * 1.01))
    assert "bkg_scale" in _modifiers(keep, "background")
    assert "bkg_scale" not in _modifiers(drop, "background")


def test_unknown_normsys_sample(fine: Histograms) -> None:
    with pytest.raises(BinningError, match="unknown samples \\['ttbar'\\]"):
        build_workspace(fine, WorkspaceOptions(normsys=(NormSys("n", ("ttbar",), 0.9, 1.1),)))
    with pytest.raises(BinningError, match="observations"):
        WorkspaceOptions(observations="data")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "edges",
    [np.linspace(0, 1, 4), np.linspace(0.1, 0.9, 9), np.array([0.0, 0.3, 0.45, 0.6, 0.7, 1.0])],
    ids=["3", "8", "variable"],
)
@pytest.mark.parametrize("opt", OPTIONS[:3], ids=["default", "normsys", "split+lumi"])
def test_z0_equals_pyhf(fine: Histograms, edges: np.ndarray, opt: WorkspaceOptions) -> None:
    spec = build_workspace(fine.rebin(edges), opt)
    ours = expected_z0(spec)
    assert ours == pytest.approx(pyhf_z0(spec), rel=2e-3, abs=2e-3)
    assert expected_z0(spec, validate=False) == pytest.approx(ours, rel=1e-12)


def test_z0_with_background_only_observations_equals_pyhf_expected(fine: Histograms) -> None:
    opt = WorkspaceOptions(observations="background", normsys=OPTIONS[1].normsys)
    spec = build_workspace(fine.rebin(np.linspace(0, 1, 6)), opt)
    assert expected_z0(spec) == pytest.approx(pyhf_z0(spec, expected=True), rel=2e-3)
