"""Analysis-scale binning: cheap candidates, batched evaluation, control regions, bad inputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import sigtune
from sigtune.cli import app
from sigtune.pipelines.binning import (
    BinningError,
    BinningObjective,
    EventSample,
    ModelCache,
    exhaustive_scan,
    expected_z0,
    optimize_batched,
)
from sigtune.pipelines.binning._objective import model_and_data

from .conftest import make_events
from .test_workspace import pyhf_z0

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "binning"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"binning_scale_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def realistic() -> ModuleType:
    return _load("realistic")


@pytest.fixture(scope="module")
def large(realistic: ModuleType) -> BinningObjective:
    return BinningObjective(
        realistic.make_samples(n_events=20_000, seed=3),
        signal=["signal"],
        fine_edges=np.linspace(0.0, 1.0, 101),
        binning={"kind": "variable", "n_bins": (2, 8), "min_ratio": 0.1},
        workspace=realistic.WORKSPACE,
        region_column="region",
        control_regions=realistic.CONTROL_REGIONS,
        min_background=1.0,
    )


def _objective(**kwargs: Any) -> BinningObjective:
    return BinningObjective(
        make_events(),
        signal=["signal"],
        fine_edges=np.linspace(0.0, 1.0, 101),
        binning={"kind": "uniform", "n_bins": (2, 12), "lo": (0.0, 0.3), "hi": (0.7, 1.0)},
        **kwargs,
    )


def test_model_cache_gives_the_models_built_afresh() -> None:
    obj = _objective()
    cache = ModelCache()
    rng = np.random.default_rng(0)
    for _ in range(12):
        n = int(rng.integers(2, 6))
        hist = obj.fine.rebin(np.linspace(rng.uniform(0, 0.2), rng.uniform(0.8, 1), n + 1))
        spec = obj.workspace_of(hist, lists=False)
        model, data = cache.model_and_data(spec)
        ref, ref_data = model_and_data(obj.workspace_of(hist), validate=True)
        np.testing.assert_allclose(data, ref_data, rtol=1e-12)
        x = ref.suggested_init() + 0.05
        assert model.twice_nll(x, data) == pytest.approx(ref.twice_nll(x, ref_data), rel=1e-12)
    assert len(cache) <= 4  # one model per number of bins


def test_control_regions_make_a_valid_multichannel_workspace(
    large: BinningObjective,
) -> None:
    import pyhf

    cand = large.replay({"n_bins": 4, "w0": 1.0, "w1": 0.5, "w2": 0.3, "w3": 0.2})
    ws = cand.workspace
    assert [c["name"] for c in ws["channels"]] == ["SR", "CR_top", "CR_wjets"]
    pyhf.Workspace(ws)  # schema-valid
    mods = {
        (c["name"], s["name"]): {m["name"] for m in s["modifiers"]}
        for c in ws["channels"]
        for s in c["samples"]
    }
    assert "mu_ttbar" in mods[("CR_top", "ttbar")] and "mu_ttbar" in mods[("SR", "ttbar")]
    assert "jes" in mods[("SR", "zjets")] and "jes" in mods[("CR_wjets", "zjets")]  # shared
    assert all("pileup" not in m and "ttbar_pdf" not in m for m in mods.values())  # pruned
    assert cand.values[0] == pytest.approx(pyhf_z0(ws), rel=2e-3)


def test_evaluate_many_equals_one_by_one(large: BinningObjective) -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    trials = [study.ask() for _ in range(24)]
    one = [large.evaluate(t) for t in trials]
    many = large.evaluate_many(trials)
    for a, b in zip(one, many, strict=True):
        assert not isinstance(b, BaseException)
        assert b.values[0] == pytest.approx(a.values[0], abs=1e-6)
        assert b.constraints == a.constraints
    assert len({len(c.edges) for c in one}) > 1  # several structures in the batch


def test_optimize_batched_with_random_sampler_is_the_sequential_study() -> None:
    obj = _objective(figure="z0_exp", max_rel_stat=0.3)
    seq = sigtune.optimize(obj, n_trials=20, direction="maximize", sampler="random", seed=5)
    bat = optimize_batched(obj, 20, batch_size=8, sampler="random", seed=5)
    a, b = seq.optuna.trials, bat.optuna.trials
    assert [t.params for t in a] == [t.params for t in b]
    np.testing.assert_allclose([t.value for t in a], [t.value for t in b], atol=1e-6)
    assert [t.user_attrs["constraints"] for t in a] == [t.user_attrs["constraints"] for t in b]
    assert bat.best_value == pytest.approx(seq.best_value, abs=1e-6)


def test_optimize_batched_tpe_and_failures() -> None:
    obj = _objective(figure="z0_exp")
    study = optimize_batched(obj, 30, batch_size=10, sampler="tpe", seed=1)
    assert len(study.optuna.trials) == 30
    assert all(t.state.name == "COMPLETE" for t in study.optuna.trials)
    with pytest.raises(sigtune.ConfigError, match="batch_size"):
        optimize_batched(obj, 5, batch_size=0)


def test_exhaustive_scan_finds_the_grid_optimum() -> None:
    obj = _objective(figure="z0_exp")
    grid = {"n_bins": list(range(2, 9)), "lo": [0.0, 0.2], "hi": [0.8, 1.0]}
    scan = exhaustive_scan(obj, grid, batch_size=9)
    assert len(scan.candidates) == 28 and not scan.failures
    best = scan.best("maximize")
    values = [obj.replay(c.params).values[0] for c in scan.candidates]
    assert best.values[0] == pytest.approx(max(values), abs=1e-6)
    bad = exhaustive_scan(obj, {"n_bins": [3]})  # lo / hi missing: a failure, not a crash
    assert not bad.candidates and "lo" in bad.failures[0][1]


def test_multi_objective_cls_limit(large: BinningObjective) -> None:
    obj = BinningObjective(
        large.fine,
        binning={"kind": "uniform", "n_bins": (2, 6)},
        objectives=("figure", "cls_limit_exp"),
    )
    assert obj.directions == ["maximize", "minimize"]
    cand = obj.replay({"n_bins": 4})
    assert cand.values[0] > 0 and 0 < cand.values[1] < 10


def _write_config(tmp_path: Path, samples: list[EventSample], **extra: Any) -> Path:
    files = []
    for s in samples:
        path = tmp_path / f"{s.name}.parquet"
        pd.DataFrame({"x": s.discriminant, "w": s.weight}).to_parquet(path)
        files.append({"name": s.name, "path": str(path), "discriminant": "x", "weight": "w"})
    cfg = {
        "n_trials": 12,
        "seed": 1,
        "run_dir": str(tmp_path / "run"),
        "report": False,
        "objective": {
            "type": "binning",
            "samples": files,
            "signal": ["signal"],
            "fine_bins": {"n": 100},
            "binning": {"kind": "uniform", "n_bins": [2, 10]},
            "plot": False,
            **extra,
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("zero_signal", "sample 'signal' has zero total yield"),
        ("outside", "sample 'background': all 3000 events lie outside"),
        ("zero_background", "sample 'background' has zero total yield"),
    ],
)
def test_bad_inputs_exit_2_naming_the_sample(tmp_path: Path, change: str, message: str) -> None:
    rng = np.random.default_rng(0)
    sig = EventSample.from_arrays("signal", rng.normal(0.6, 0.1, 2000), np.full(2000, 0.01))
    xb = rng.random(3000)
    wb = np.full(3000, 0.05)
    if change == "zero_signal":
        sig = EventSample.from_arrays("signal", sig.discriminant, np.zeros(2000))
    elif change == "outside":
        xb = xb + 5.0
    else:
        wb = np.zeros(3000)
    bkg = EventSample.from_arrays("background", xb, wb)
    result = CliRunner().invoke(app, ["run", str(_write_config(tmp_path, [sig, bkg])), "--quiet"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([ln for ln in result.output.strip().splitlines() if ln.strip()]) == 1


def test_batch_size_in_the_run_config(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sig = EventSample.from_arrays("signal", rng.normal(0.6, 0.1, 2000), np.full(2000, 0.01))
    bkg = EventSample.from_arrays("background", rng.random(3000), np.full(3000, 0.05))
    path = _write_config(tmp_path, [sig, bkg], batch_size=5, figure="z0_exp")
    cfg = yaml.safe_load(path.read_text())
    cfg["sampler"] = "tpe"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["run", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_trials"] == 12 and summary["n_complete"] == 12
    header = (tmp_path / "run" / "trials.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["number", "state", "value_0"] and header[-1] == "fail_reason"
    assert "user_attrs_constraints" in header
    # a small grid is scanned in batches by default, and stops when exhausted
    cfg["sampler"] = "bruteforce"
    cfg["objective"].pop("batch_size")
    cfg["run_dir"] = str(tmp_path / "grid")
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["run", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    trials = (tmp_path / "grid" / "trials.csv").read_text().splitlines()[1:]
    n_bins = {int(row.split(",")[3]) for row in trials}
    assert n_bins == set(range(2, 11))  # every grid point


def test_expected_z0_uses_one_model_per_structure() -> None:
    tutorial = _load("tutorial")
    a, b = tutorial.build_workspace(7, 0.1, 0.9), tutorial.build_workspace(7, 0.2, 0.8)
    for spec in (a, b, a):
        assert expected_z0(spec, validate=False) == pytest.approx(expected_z0(spec), abs=1e-9)
    with pytest.raises(BinningError, match="zero total yield"):
        BinningObjective(
            [EventSample.from_arrays("signal", [0.5], [0.0]), EventSample.from_arrays("b", [0.5])],
            signal=["signal"],
            fine_edges=np.linspace(0, 1, 11),
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["realistic", "realistic_mo"])
def test_realistic_examples_run(tmp_path: Path, name: str) -> None:
    cfg = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    cfg["run_dir"] = str(tmp_path / "run")
    cfg["n_trials"] = 8
    cfg["report"] = False
    cfg["objective"]["generator"] = str(EXAMPLES / "realistic.py") + ":make_samples"
    cfg["objective"]["generator_kwargs"]["n_events"] = 20_000
    cfg["objective"]["plot"] = False
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["run", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    ws = json.loads((tmp_path / "run" / "best_workspace.json").read_text())
    assert [c["name"] for c in ws["channels"]] == ["SR", "CR_top", "CR_wjets"]
    assert summary["values"][0] == pytest.approx(pyhf_z0(ws), rel=2e-3)
    if name == "realistic_mo":
        assert summary["objectives"] == ["figure", "cls_limit_exp"]
        assert summary["pareto_front"] and all(
            len(p["values"]) == 2 for p in summary["pareto_front"]
        )
