"""The lean Asimov Z0 path (hep/_lean.py, binning/_fast.py) against the public path and pyhf."""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import optuna
import pytest

from sigtune import hep
from sigtune._exceptions import SigtuneError
from sigtune.hep._lean import AsimovQ0
from sigtune.pipelines.binning import (
    BinningObjective,
    Histograms,
    ModelCache,
    NormSys,
    UniformBinning,
    WorkspaceOptions,
    expected_z0,
)
from sigtune.pipelines.binning._fast import DictPlan, HistPlan
from sigtune.pipelines.binning._objective import model_and_data

from .conftest import make_events
from .test_workspace import pyhf_z0

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "binning"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"binning_lean_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tutorial() -> ModuleType:
    return _load("tutorial")


def _public_z0(spec: dict[str, Any]) -> float:
    """The public path: a validated workspace, a fresh model, the full discovery test."""
    model, data = model_and_data(spec, validate=True)
    return float(hep.discovery(model, data).z0_exp)


def _with_staterror(spec: dict[str, Any], rel: float = 0.1) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    for smp in out["channels"][0]["samples"]:
        data = np.asarray(smp["data"], float)
        smp["modifiers"].append(
            {"name": "stat_SR", "type": "staterror", "data": (rel * data).tolist()}
        )
    return out


def test_lean_z0_equals_the_public_path_on_tutorial_workspaces(tutorial: ModuleType) -> None:
    cache = ModelCache()
    rng = np.random.default_rng(5)
    for _ in range(12):
        n_bins = int(rng.integers(3, 41))
        spec = tutorial.build_workspace(n_bins, rng.uniform(0, 0.3), rng.uniform(0.7, 1.0))
        for ws in (spec, _with_staterror(spec)):
            plan, _ = cache.plan(ws)
            assert plan is not None  # the lean path applies to this structure
            arrays = plan.arrays(ws)
            assert arrays is not None
            q0 = plan.lean.q0(*arrays)
            assert q0 is not None  # and decides (Asimov data, clean fit)
            assert math.sqrt(q0) == pytest.approx(_public_z0(ws), rel=1e-9, abs=1e-9)
            assert cache.z0_exp(ws) == pytest.approx(math.sqrt(q0), rel=1e-12)
    spec = tutorial.build_workspace(12, 0.1, 0.9)
    assert expected_z0(spec, validate=False) == pytest.approx(pyhf_z0(spec), rel=2e-3)


def test_lean_batch_equals_one_by_one(tutorial: ModuleType) -> None:
    cache = ModelCache()
    specs = [tutorial.build_workspace(10, lo, hi) for lo, hi in [(0, 1), (0.1, 0.9), (0.2, 0.8)]]
    plan, _ = cache.plan(specs[0])
    assert plan is not None
    rows = [plan.arrays(s) for s in specs]
    assert all(r is not None for r in rows)
    q, ok = plan.lean.q0_many(rows)  # type: ignore[arg-type]
    assert ok.all()
    for qi, row in zip(q, rows, strict=True):
        assert qi == pytest.approx(plan.lean.q0(*row), rel=1e-12)  # type: ignore[misc]
    assert len(set(np.round(q, 6))) == 3  # three different candidates


def test_undecided_candidates_take_the_public_path(tutorial: ModuleType) -> None:
    cache = ModelCache()
    spec = tutorial.build_workspace(8, 0.1, 0.9)
    cache.z0_exp(spec)
    plan, _ = cache.plan(spec)
    assert plan is not None
    # observed data that are not the Asimov data of the suggested values
    other = copy.deepcopy(spec)
    other["observations"][0]["data"] = [v * 1.3 for v in other["observations"][0]["data"]]
    arrays = plan.arrays(other)
    assert arrays is not None and plan.lean.q0(*arrays) is None
    assert cache.z0_exp(other) == pytest.approx(_public_z0(other), rel=1e-9)
    # negative counts: the public path's error, not a number
    bad = copy.deepcopy(spec)
    bad["observations"][0]["data"][0] = -1.0
    arrays = plan.arrays(bad)
    assert arrays is not None and plan.lean.q0(*arrays) is None
    with pytest.raises(SigtuneError):
        cache.z0_exp(bad)
    # staterror widths of zero where the template has none: another structure
    stat = _with_staterror(spec)
    cache.z0_exp(stat)
    zero = copy.deepcopy(stat)
    for smp in zero["channels"][0]["samples"]:
        smp["modifiers"][-1]["data"][2] = 0.0
    plan_s, _ = cache.plan(zero)
    assert plan_s is not None and plan_s.arrays(zero) is None
    assert cache.z0_exp(zero) == pytest.approx(_public_z0(zero), rel=1e-9)


def test_shapesys_structures_are_left_to_the_public_path(tutorial: ModuleType) -> None:
    spec = tutorial.build_workspace(6, 0.1, 0.9)
    bkg = spec["channels"][0]["samples"][1]
    bkg["modifiers"].append(
        {"name": "shape_b", "type": "shapesys", "data": [0.1 * v for v in bkg["data"]]}
    )
    cache = ModelCache()
    plan, _ = cache.plan(spec)
    assert plan is None
    assert cache.z0_exp(spec) == pytest.approx(_public_z0(spec), rel=1e-9)


def test_lean_path_is_unusable_without_a_poi_at_one(tutorial: ModuleType) -> None:
    spec = tutorial.build_workspace(6, 0.1, 0.9)
    spec["measurements"][0]["config"]["parameters"] = [{"name": "mu", "inits": [0.5]}]
    model, _ = model_and_data(spec, validate=True)
    assert not AsimovQ0(model).usable
    assert ModelCache().z0_exp(spec) == pytest.approx(_public_z0(spec), rel=1e-9)


def _objective(source: Any, options: WorkspaceOptions, **kwargs: Any) -> BinningObjective:
    return BinningObjective(
        source,
        signal=["signal"],
        fine_edges=np.linspace(0.0, 1.0, 101),
        binning={"kind": "variable", "n_bins": (2, 8), "min_ratio": 0.1},
        workspace=options,
        **kwargs,
    )


def _random_params(rng: np.random.Generator) -> dict[str, Any]:
    n = int(rng.integers(2, 9))
    return {"n_bins": n, **{f"w{i}": float(rng.uniform(0.1, 1.0)) for i in range(n)}}


def _check_hist_plan(obj: BinningObjective, n: int = 10) -> None:
    rng = np.random.default_rng(11)
    for _ in range(n):
        hist = obj.candidate_histograms(optuna.trial.FixedTrial(_random_params(rng)))[0]  # type: ignore[arg-type]
        hp = obj._hist_plan(hist)
        assert hp is not None
        spec = obj.workspace_of(hist, lists=False)
        plan, _ = obj._models.plan(spec)
        assert plan is not None and plan.lean is hp.lean
        a, b = hp.arrays(hist), plan.arrays(spec)
        assert a is not None and b is not None
        for x, y in zip(a, b, strict=True):  # the dictionary's numbers, without the dictionary
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
        z0 = obj._lean_z0([hist])[0]
        assert z0 is not None
        assert z0 == pytest.approx(_public_z0(obj.workspace_of(hist, lists=True)), rel=1e-8)


def test_hist_plan_equals_the_dictionary_path_with_control_regions_and_split() -> None:
    realistic = _load("realistic")
    obj = _objective(
        realistic.make_samples(n_events=20_000, seed=3),
        realistic.WORKSPACE,
        region_column="region",
        control_regions=realistic.CONTROL_REGIONS,
    )
    assert obj.options.split and obj.options.prune
    _check_hist_plan(obj)


def test_hist_plan_equals_the_dictionary_path_without_split() -> None:
    options = WorkspaceOptions(
        normsys=(NormSys("bkg_norm", ("background",), 0.95, 1.05),), prune=0.01, lumi=(1.0, 0.02)
    )
    _check_hist_plan(_objective(make_events(seed=4, n=6000), options))


def test_evaluate_and_evaluate_many_use_the_lean_path(fine: Histograms) -> None:
    obj = BinningObjective(fine, binning=UniformBinning(n_bins=(3, 12), lo=0.0, hi=1.0))
    trials = [optuna.trial.FixedTrial({"n_bins": n}) for n in (3, 5, 5, 9)]
    many = obj.evaluate_many(trials)  # type: ignore[arg-type]
    for trial, cand in zip(trials, many, strict=True):
        assert not isinstance(cand, BaseException)
        one = obj.evaluate(trial)  # type: ignore[arg-type]
        assert cand.values[0] == pytest.approx(one.values[0], rel=1e-12)
        ws = obj.workspace_of(one.hist, lists=True)
        assert one.values[0] == pytest.approx(_public_z0(ws), rel=1e-8)
        assert one.workspace["channels"][0]["samples"][0]["name"] == "signal"  # built on demand
    assert len(obj._hist_plans) == 3  # one plan per number of bins


def test_background_observations_are_evaluated_by_the_public_path(fine: Histograms) -> None:
    obj = BinningObjective(
        fine,
        binning=UniformBinning(n_bins=5, lo=0.0, hi=1.0),
        workspace=WorkspaceOptions(observations="background"),
    )
    cand = obj.replay({})  # a JSON workspace (lists)
    assert obj._lean_z0([cand.hist]) == [None]
    assert cand.values[0] == pytest.approx(_public_z0(cand.workspace), rel=1e-9)


def test_hist_plan_signature_tracks_the_structure(fine: Histograms) -> None:
    opts = WorkspaceOptions(split=True)
    h4, h6 = fine.rebin(np.linspace(0, 1, 5)), fine.rebin(np.linspace(0, 1, 7))
    assert HistPlan.signature(h4, opts) != HistPlan.signature(h6, opts)
    assert HistPlan.signature(h4, opts) == HistPlan.signature(
        fine.rebin([0, 0.3, 0.6, 0.8, 1]), opts
    )
    assert isinstance(DictPlan, type)


def test_objective_with_lean_plans_pickles(fine: Histograms) -> None:
    import pickle

    obj = BinningObjective(fine, binning=UniformBinning(n_bins=(3, 12), lo=0.0, hi=1.0))
    trial = optuna.trial.FixedTrial({"n_bins": 7})
    first = obj.evaluate(trial)  # type: ignore[arg-type]
    assert obj._hist_plans
    clone = pickle.loads(pickle.dumps(obj))
    assert not clone._hist_plans  # rebuilt in the process that unpickles
    assert clone.evaluate(trial).values == pytest.approx(first.values, rel=1e-12)  # type: ignore[arg-type]


def test_without_the_compiled_engine_every_candidate_takes_the_public_path(
    tutorial: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sigtune.hep import _jit

    spec = tutorial.build_workspace(7, 0.1, 0.9)
    model, _ = model_and_data(spec, validate=True)
    monkeypatch.setattr(_jit, "ENABLED", False)
    lean = AsimovQ0(model)
    assert not lean.usable
    row = (
        lean.nom,
        lean.hs_dp,
        lean.hs_dm,
        lean.ns_hi,
        lean.ns_lo,
        lean.gsig,
        np.zeros(lean.n_main),
    )
    _, ok = lean.q0_many([row])
    assert not ok.any()
    cache = ModelCache()
    assert cache.plan(spec)[0] is None
    assert cache.z0_exp(spec) == pytest.approx(_public_z0(spec), rel=1e-9)


def test_lean_arrays_of_the_wrong_shape_are_refused(tutorial: ModuleType) -> None:
    cache = ModelCache()
    spec = tutorial.build_workspace(7, 0.1, 0.9)
    plan, _ = cache.plan(spec)
    assert plan is not None
    arrays = plan.arrays(spec)
    assert arrays is not None
    with pytest.raises(ValueError, match="shape"):
        plan.lean.q0(arrays[0][:, :-1], *arrays[1:])


def test_malformed_dictionaries_get_the_public_paths_error(tutorial: ModuleType) -> None:
    cache = ModelCache()
    spec = tutorial.build_workspace(6, 0.1, 0.9)
    cache.z0_exp(spec)
    bad = copy.deepcopy(spec)
    bad["channels"][0]["samples"][1]["data"] = bad["channels"][0]["samples"][1]["data"][:-1]
    # the lean reader gives up and the unvalidated public path (hep.Model) raises, as it did
    # before the lean path: an error, never a number
    with pytest.raises((ValueError, SigtuneError)):
        cache.z0_exp(bad)
    with pytest.raises(SigtuneError):  # validated: the schema/model error
        expected_z0(bad, validate=True)


def test_observations_are_read_by_channel_name(tutorial: ModuleType) -> None:
    spec = tutorial.build_workspace(6, 0.1, 0.9)
    two = copy.deepcopy(spec)
    cr = copy.deepcopy(spec["channels"][0])
    cr["name"] = "CR"
    for smp in cr["samples"]:
        smp["data"] = [2.0 * v for v in smp["data"]]
    two["channels"].append(cr)
    two["observations"].append(
        {"name": "CR", "data": [2.0 * v for v in spec["observations"][0]["data"]]}
    )
    cache = ModelCache()
    first = cache.z0_exp(two)
    swapped = copy.deepcopy(two)
    swapped["observations"].reverse()
    plan, _ = cache.plan(swapped)
    assert plan is not None and plan.lean.q0(*plan.arrays(swapped)) is not None  # type: ignore[misc]
    assert cache.z0_exp(swapped) == pytest.approx(first, rel=1e-12)
    assert first == pytest.approx(_public_z0(two), rel=1e-9)


@pytest.mark.parametrize("n_rows", [1, 3])
def test_the_kernel_gets_the_fits_read_only_arrays(
    tutorial: ModuleType, monkeypatch: pytest.MonkeyPatch, n_rows: int
) -> None:
    """The counts, auxdata, fixed-parameter mask and bounds reach the compiled kernel read-only,
    as the fits pass them: numba compiles one version of ``_minimize_row`` and ``_derivs`` per
    array type (writeable and read-only are two types), so with the same types the binning path
    and the fits share them (about 18 CPU-s less compilation on an empty cache)."""
    numba = pytest.importorskip("numba")
    from sigtune.hep import _lean

    seen: list[tuple[bool, ...]] = []
    kernel = _lean._q0_rows

    def recording(*args: Any) -> None:
        seen.append(tuple(numba.typeof(a).mutable for a in args[4:10]))
        assert numba.typeof(args[1]).mutable  # the start: the fit works in place
        kernel(*args)

    monkeypatch.setattr(_lean, "_q0_rows", recording)
    spec = tutorial.build_workspace(7, 0.1, 0.9)
    model, _ = model_and_data(spec, validate=True)
    lean = AsimovQ0(model)
    assert lean.usable
    row = (lean.nom, lean.hs_dp, lean.hs_dm, lean.ns_hi, lean.ns_lo, lean.gsig, lean.nom.sum(0))
    for _ in range(2):
        q, ok = lean.q0_many([row] * n_rows)
        assert ok.all() and np.all(q > 0)
    # n, ga, pa, free, lo, hi; the second call goes through the same recorder (no entry point
    # can be taken from it), with the cached per-row arrays
    assert seen == [(False,) * 6] * 2
