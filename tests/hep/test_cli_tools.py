"""``sigtune hep`` workspace tools (inspect, combine, prune, rename, patchset), stdin and bounds,
compared with pyhf's own workspace operations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyhf
import pytest
from test_infer import two_bin_spec
from typer.testing import CliRunner

from sigtune.hep._fit import fit
from sigtune.hep._workspace import Workspace
from sigtune.hep.cli import app

runner = CliRunner()
SBOTTOM = Path(__file__).resolve().parents[1] / "data" / "histfactory" / "sbottom" / "RegionA"
BKG = SBOTTOM / "BkgOnly.json"
PATCHES = ["patch.sbottom_300_205_60.json", "patch.sbottom_1300_850_60.json"]


def _ok(*args: str, stdin: str | None = None) -> Any:
    result = runner.invoke(app, list(args), input=stdin)
    assert result.exit_code == 0, result.output
    return result


def _spec(path: Path = BKG) -> dict[str, Any]:
    return json.loads(path.read_text())


def _pyhf_ws(spec: dict[str, Any]) -> pyhf.Workspace:
    return pyhf.Workspace(spec)


def test_inspect_matches_pyhf() -> None:
    info = json.loads(_ok("inspect", str(BKG), "--json").stdout)
    ws = _pyhf_ws(_spec())
    model = ws.model(poi_name=None)  # background only: the signal comes with a patch
    assert info["channels"] == ws.channel_nbins
    assert info["samples"] == sorted(ws.samples)
    assert [tuple(m) for m in info["modifiers"]] == sorted(set(ws.modifiers))
    assert sorted(p["name"] for p in info["parameters"]) == sorted(model.config.parameters)
    assert info["n_parameters"] == model.config.npars
    assert info["measurements"] == [{"name": "NormalMeasurement", "poi": "mu_SIG"}]
    text = _ok("inspect", str(BKG)).stdout
    assert "SR_meff [3]" in text and "mu_SIG" in text


def test_prune_matches_pyhf(tmp_path: Path) -> None:
    spec = _spec()
    ws = _pyhf_ws(spec)
    modifier = next(n for n, t in ws.modifiers if t == "histosys")
    args = [
        "prune", str(BKG), "--channel", "VRtt_meff", "--sample", ws.samples[0],
        "--modifier", modifier, "--modifier-type", "staterror",
    ]  # fmt: skip
    ours = json.loads(_ok(*args).stdout)
    ref = ws.prune(
        channels=["VRtt_meff"],
        samples=[ws.samples[0]],
        modifiers=[modifier],
        modifier_types=["staterror"],
    )
    assert ours == json.loads(json.dumps(ref))
    out = tmp_path / "pruned.json"
    _ok("prune", str(BKG), "--channel", "VRtt_meff", "-o", str(out))
    assert json.loads(out.read_text()) == json.loads(json.dumps(ws.prune(channels=["VRtt_meff"])))
    bad = runner.invoke(app, ["prune", str(BKG), "--channel", "nope"])
    assert bad.exit_code == 2 and "channel(s) ['nope'] not in the workspace" in bad.output


def test_rename_matches_pyhf() -> None:
    spec = _spec()
    ws = _pyhf_ws(spec)
    args = [
        "rename", str(BKG), "--channel", "SR_meff=SR", "--sample", f"{ws.samples[1]}=bkg",
        "--modifier", "mu_ttbar=mu_top", "--measurement", "NormalMeasurement=meas",
    ]  # fmt: skip
    ours = json.loads(_ok(*args).stdout)
    ref = ws.rename(
        channels={"SR_meff": "SR"},
        samples={ws.samples[1]: "bkg"},
        modifiers={"mu_ttbar": "mu_top"},
        measurements={"NormalMeasurement": "meas"},
    )
    assert ours == json.loads(json.dumps(ref))
    names = {m["name"] for c in ours["channels"] for s in c["samples"] for m in s["modifiers"]}
    assert "mu_top" in names and "mu_ttbar" not in names
    bad = runner.invoke(app, ["rename", str(BKG), "--channel", "SR_meff"])
    assert bad.exit_code == 2 and "OLD=NEW" in bad.output


@pytest.mark.parametrize("join", ["none", "outer", "left outer", "right outer"])
def test_combine_matches_pyhf(tmp_path: Path, join: str) -> None:
    left = _spec()
    if join == "none":  # disjoint names are required
        right = dict(
            _pyhf_ws(left).rename(
                channels={c["name"]: c["name"] + "_2" for c in left["channels"]},
                measurements={"NormalMeasurement": "other"},
            )
        )
    else:  # the same workspace, with one channel renamed
        right = dict(_pyhf_ws(left).rename(channels={"VRtt_meff": "VR2"}))
    rpath = tmp_path / "right.json"
    rpath.write_text(json.dumps(right))
    ours = json.loads(_ok("combine", str(BKG), str(rpath), "--join", join).stdout)
    ref = pyhf.Workspace.combine(_pyhf_ws(left), _pyhf_ws(right), join=join)
    assert ours == json.loads(json.dumps(ref))


def test_combine_conflicts_exit_2() -> None:
    bad = runner.invoke(app, ["combine", str(BKG), str(BKG)])
    assert bad.exit_code == 2 and "in common" in bad.output
    with pytest.raises(pyhf.exceptions.InvalidWorkspaceOperation):
        pyhf.Workspace.combine(_pyhf_ws(_spec()), _pyhf_ws(_spec()), join="none")


def _patchset(tmp_path: Path) -> Path:
    patches = []
    for name in PATCHES:
        masses = [float(v) for v in name.removesuffix(".json").split("_")[1:4]]
        patches.append(
            {
                "metadata": {"name": name.removesuffix(".json")[6:], "values": masses},
                "patch": json.loads((SBOTTOM / name).read_text()),
            }
        )
    doc = {
        "metadata": {
            "description": "two sbottom signal points",
            "digests": {"sha256": pyhf.utils.digest(_spec())},
            "labels": ["m_sb", "m_chi2", "m_chi1"],
            "references": {"hepdata": "ins1748602"},
        },
        "patches": patches,
        "version": "1.0.0",
    }
    path = tmp_path / "patchset.json"
    path.write_text(json.dumps(doc))
    return path


def test_patchset_list_and_apply_match_pyhf(tmp_path: Path) -> None:
    path = _patchset(tmp_path)
    ref = pyhf.PatchSet(json.loads(path.read_text()))
    listed = json.loads(_ok("patchset", "list", str(path), "--json").stdout)["patches"]
    assert [p["name"] for p in listed] == [p.name for p in ref.patches]
    assert [list(p["values"].values()) for p in listed] == [list(p.values) for p in ref.patches]
    name = ref.patches[1].name
    ours = json.loads(_ok("patchset", "apply", str(BKG), str(path), "--name", name).stdout)
    assert ours == json.loads(json.dumps(ref.apply(_pyhf_ws(_spec()), name)))
    bad = runner.invoke(app, ["patchset", "apply", str(BKG), str(path)])
    assert bad.exit_code == 2 and "holds 2 patches" in bad.output


def test_workspace_from_standard_input() -> None:
    text = BKG.read_text()
    a = json.loads(_ok("inspect", "-", "--json", stdin=text).stdout)
    b = json.loads(_ok("inspect", str(BKG), "--json").stdout)
    assert a == b
    spec = two_bin_spec()
    out = json.loads(_ok("fit", "-", "--json", stdin=json.dumps(spec)).stdout)
    assert out["converged"] is True
    empty = runner.invoke(app, ["fit", "-"], input="")
    assert empty.exit_code == 2 and "no workspace on standard input" in empty.output


def test_poi_and_par_bounds(tmp_path: Path) -> None:
    spec = two_bin_spec()
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(spec))
    free = json.loads(_ok("fit", str(path), "--json").stdout)
    mu_hat = free["parameters"]["mu"]["value"]
    cap = round(mu_hat + 0.5, 3)  # forces the POI to its new lower bound
    capped = json.loads(_ok("fit", str(path), "--json", "--poi-bounds", f"{cap},{cap + 5}").stdout)
    assert capped["parameters"]["mu"]["value"] == pytest.approx(cap)
    ws = Workspace(spec)
    model = ws.model()
    bounds = model.suggested_bounds()
    bounds[model.poi_index] = (cap, cap + 5)
    ref = fit(model, ws.data(model), bounds=bounds)
    assert capped["twice_nll"] == pytest.approx(float(ref.twice_nll), rel=1e-9)
    # pyhf with the same bounds
    pws = pyhf.Workspace(spec)
    pmodel = pws.model()
    pb = pmodel.config.suggested_bounds()
    pb[pmodel.config.poi_index] = (cap, cap + 5)
    init = pmodel.config.suggested_init()
    init[pmodel.config.poi_index] = cap + 1
    pbest = pyhf.infer.mle.fit(pws.data(pmodel), pmodel, init_pars=init, par_bounds=pb)
    assert capped["parameters"]["mu"]["value"] == pytest.approx(
        float(pbest[pmodel.config.poi_index]), abs=1e-4
    )
    # every statistics command takes them (options declared once)
    for cmd in ("fit", "discovery", "cls", "limit", "ranking", "scan"):
        help_text = _ok(cmd, "--help").stdout
        assert "--poi-bounds" in help_text and "--par-bounds" in help_text
    wide = json.loads(_ok("limit", str(path), "--json", "--poi-bounds", "0,50").stdout)
    assert np.isfinite(wide["obs"])
    bad = runner.invoke(app, ["fit", str(path), "--par-bounds", "nope=0,1"])
    assert bad.exit_code == 2 and "no parameter 'nope'" in bad.output
    bad = runner.invoke(app, ["fit", str(path), "--poi-bounds", "3"])
    assert bad.exit_code == 2 and "LOW,HIGH" in bad.output
