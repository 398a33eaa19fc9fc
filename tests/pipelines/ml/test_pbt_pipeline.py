"""The ``pbt`` stage in the pipeline: config checks, off by default (pipeline unchanged),
resume after SIGKILL, reproducible with a seed and one member at a time, PB2, cv on the
winner's schedule."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._pbt import ROWS_FILE, MutationRange, member_rows, split_mutable
from sigtune.pipelines.ml._pipeline import STAGES, load_pipeline_config, run_pipeline

LOGREG = {
    "kind": "sklearn",
    "options": {"estimator": "sklearn.linear_model.LogisticRegression", "metrics": ["auc"]},
}
GEN = {
    "generate": {"n_events": 600, "n_informative": 2, "n_correlated": 0, "n_noise": 1, "seed": 2}
}


# ---------------------------------------------------------------------- config
def test_stage_order_and_default_off() -> None:
    assert STAGES.index("selection") < STAGES.index("pbt") < STAGES.index("cv")
    cfg = load_pipeline_config({"data": GEN, "search_space": {"C": 1.0}})
    assert cfg.pbt is None


def test_mutable_marks_give_mutations_and_refuse_architecture() -> None:
    space = {
        "units": {"type": "range", "value_type": "int", "bounds": [4, 8]},
        "learning_rate": {"bounds": [1e-4, 1e-2], "sampling": "log", "mutable": True},
        "batch_size": {"values": [32, 64], "mutable": True},
        "dropout": {"bounds": [0.0, 0.3], "mutable": False},
    }
    clean, muts = split_mutable(space)
    assert "mutable" not in clean["learning_rate"] and "mutable" not in clean["dropout"]
    assert muts == {
        "learning_rate": MutationRange(low=1e-4, high=1e-2, log=True),
        "batch_size": [32, 64],
    }
    bad = {**space, "units": {**space["units"], "mutable": True}}
    with pytest.raises(ConfigError, match="'units' changes the network's architecture"):
        load_pipeline_config({"data": GEN, "search_space": bad})
    with pytest.raises(ConfigError, match=r"num_layers.*cannot be mutated"):
        load_pipeline_config(
            {"data": GEN, "pbt": {"mutations": {"num_layers": {"low": 1, "high": 3}}}}
        )
    with pytest.raises(ConfigError, match="pb2 needs ranges"):
        load_pipeline_config(
            {"data": GEN, "pbt": {"scheduler": "pb2", "mutations": {"batch_size": [32, 64]}}}
        )
    with pytest.raises(ConfigError, match="low must be < high"):
        load_pipeline_config(
            {"data": GEN, "pbt": {"mutations": {"learning_rate": {"low": 1, "high": 0.1}}}}
        )


def test_pipeline_with_pbt_off_is_unchanged(tmp_path: Path) -> None:
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "data": GEN,
        "trainable": LOGREG,
        "search_space": {"C": {"type": "range", "bounds": [0.01, 10], "sampling": "log"}},
        "presearch": {"enabled": False},
        "varsel": {"enabled": False},
        "search": {"n_trials": 3, "sampler": "random", "pruner": "none"},
        "selection": {"enabled": False},
        "cv": {"k": 2},
        "evaluation": {"enabled": False},
    }
    res = run_pipeline(cfg)
    assert res.ran == ["search", "cv"]
    assert "pbt" not in res.outputs and not (tmp_path / "run" / "pbt").exists()
    best = res.outputs["search"]["best_trial"]
    assert list(res.outputs["cv"]["trials"]) == [f"trial_{best}"]
    dumped = json.loads((tmp_path / "run" / "pipeline_config.json").read_text())
    assert dumped["pbt"] is None


# ---------------------------------------------------------------------- with Ray
def _pbt_config(run_dir: Path, **pbt: Any) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "seed": 4,
        "data": {
            "generate": {
                "n_events": 1200,
                "n_informative": 3,
                "n_correlated": 0,
                "n_noise": 2,
                "seed": 1,
            }
        },
        "trainable": {"kind": "mlp", "options": {"metrics": [], "n_threads": 1}},
        "search_space": {
            "num_layers": 1,
            "units": 8,
            "learning_rate": {
                "type": "range",
                "bounds": [1e-3, 1e-1],
                "sampling": "log",
                "mutable": True,
            },
            "batch_size": 64,
            "max_epochs": 2,
            "patience": None,
        },
        "presearch": {"enabled": False},
        "varsel": {"enabled": False},
        "search": {"n_trials": 3, "sampler": "random", "pruner": "none"},
        "selection": {"enabled": False},
        "pbt": {
            "population": 3,
            "perturbation_interval": 2,
            "max_epochs": 6,
            "init": "top_k",
            "quantile_fraction": 0.34,
            "num_cpus": 2,
            "max_concurrent": 1,
            **pbt,
        },
        "cv": {"enabled": False},
        "evaluation": {"enabled": False},
    }


def _raw_rows(run_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in sorted((run_dir / "pbt" / "ray").glob(f"*/*/{ROWS_FILE}")):
        rows.extend(member_rows(f.parent))
    return rows


@pytest.mark.slow
def test_seeded_pbt_is_reproducible(tmp_path: Path, local_ray: Any) -> None:
    a = run_pipeline(_pbt_config(tmp_path / "a")).outputs["pbt"]
    b = run_pipeline(_pbt_config(tmp_path / "b")).outputs["pbt"]
    assert a["n_exploits"] >= 1
    assert a["schedule"] == b["schedule"]
    assert a["value"] == b["value"]
    strip = lambda ex: sorted(  # noqa: E731 -- trial ids differ by an experiment prefix
        (k.split("_")[-1], [(e, d.split("_")[-1]) for e, d in v]) for k, v in ex.items()
    )
    assert strip(a["exploits"]) == strip(b["exploits"])


@pytest.mark.slow
def test_pb2_keeps_its_bounds(tmp_path: Path, local_ray: Any) -> None:
    pytest.importorskip("GPy")
    out = run_pipeline(_pbt_config(tmp_path / "pb2", scheduler="pb2")).outputs["pbt"]
    assert out["scheduler"] == "pb2" and out["epochs_trained"] == 3 * 6
    lrs = [float(r["hp_learning_rate"]) for r in _raw_rows(tmp_path / "pb2")]
    assert all(1e-3 <= x <= 1e-1 for x in lrs)


@pytest.mark.slow
def test_pbt_resumes_after_sigkill_and_cv_uses_the_winner(tmp_path: Path, local_ray: Any) -> None:
    run_dir = tmp_path / "run"
    cfg = _pbt_config(run_dir)
    cfg["cv"] = {"k": 2, "metrics": ["weighted_loss"]}
    cfg_file = tmp_path / "pipeline.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    src = str(Path(__file__).resolve().parents[3] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sigtune.pipelines.ml", str(cfg_file)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    backup = run_dir / "pbt" / "ray" / "state-backup"

    def progressed() -> bool:  # the backed-up experiment state records a member at epoch >= 3
        for f in backup.glob("experiment_state-*.json"):
            try:
                state = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            for _, meta in state["trial_data"]:
                if (json.loads(meta).get("last_result") or {}).get("epoch", 0) >= 3:
                    return True
        return False

    try:
        while not progressed():
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (run_dir / "pbt" / "done.json").exists()
    before = len(_raw_rows(run_dir))
    assert before >= 3
    # what a kill while Tune rewrites its experiment state leaves (seen in CI): an empty file
    states = sorted((run_dir / "pbt" / "ray" / "pbt").glob("experiment_state-*.json"))
    assert states
    states[-1].write_bytes(b"")
    # and a kill while Tune's syncer copies a member's progress.csv from its staging folder, or
    # before it ran, leaves the stored copy without the last rows (seen in CI: a resumed member's
    # rows of epochs 1-3 were gone): the stage must not depend on that file
    for f in (run_dir / "pbt" / "ray" / "pbt").glob("*/progress.csv"):
        header = f.read_text().splitlines()[:1]  # (a member's stored copy may still be empty)
        f.write_text("".join(line + "\n" for line in header))

    res = run_pipeline(cfg)
    assert res.skipped == ["search"] and res.ran == ["pbt", "cv"]
    out = res.outputs["pbt"]
    rows = _raw_rows(run_dir)
    last: dict[str, int] = {}
    for r in rows:
        last[r["trial_id"]] = max(last.get(r["trial_id"], 0), int(r["epoch"]))
    assert last == dict.fromkeys(last, 6) and len(last) == 3  # every member reached epoch 6
    for tid in last:  # every member's rows from before the kill are still there
        assert {1, 2} <= {int(r["epoch"]) for r in rows if r["trial_id"] == tid}, tid
    # (an exploit after the resume may copy a donor one epoch ahead: a member can skip a row)
    assert 3 * 5 <= out["epochs_trained"] <= 3 * 6
    # the second run trained fewer epochs than a run from scratch: it went on from checkpoints
    assert len(rows) - before < 3 * 6
    resumed = [r for r in rows[before:] if r["loaded_digest"] and not r["exploited_from"]]
    assert resumed and all(int(r["epoch"]) > 1 for r in resumed)
    # cv trains the PBT winner's schedule
    assert list(res.outputs["cv"]["trials"]) == ["pbt_winner"]
    assert res.outputs["cv"]["trials"]["pbt_winner"]["params"] == out["params"]


def test_run_config_ml_objective_carries_the_pbt_section(tmp_path: Path) -> None:
    from sigtune._config import load_config
    from sigtune.pipelines.ml._config import MLObjectiveConfig, pipeline_config_from_run

    raw = {
        "study_name": "ml",
        "run_dir": str(tmp_path / "run"),
        "n_trials": 2,
        "search_space": {"learning_rate": {"type": "range", "bounds": [1e-3, 1e-2]}},
        "objective": {
            "type": "ml",
            "data": GEN,
            "pbt": {
                "population": 4,
                "scheduler": "pb2",
                "mutations": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
            },
        },
    }
    config = load_config(raw)
    section = MLObjectiveConfig.model_validate(raw["objective"])
    pcfg = pipeline_config_from_run(section, config)
    assert pcfg.pbt is not None and pcfg.pbt.population == 4 and pcfg.pbt.scheduler == "pb2"
    assert pcfg.pbt.mutations["learning_rate"] == MutationRange(low=1e-4, high=1e-2, log=True)


def test_explore_clip_keeps_tune_perturbations_in_range() -> None:
    from sigtune.pipelines.ml._pbt import _explore_clip

    muts = {
        "learning_rate": MutationRange(low=1e-4, high=1e-2, log=True),
        "batch_size": MutationRange(low=16, high=256, type="int"),
        "optimizer_choice": ["a", "b"],
    }
    explore = _explore_clip(muts)
    # Ray Tune multiplies by 1.2 / 0.8 without bounds
    out = explore({"learning_rate": 1e-2 * 1.2, "batch_size": 16 * 0.8, "optimizer_choice": "b"})
    assert out == {"learning_rate": 1e-2, "batch_size": 16, "optimizer_choice": "b"}
    assert isinstance(out["batch_size"], int)
    assert explore({"batch_size": 100.6})["batch_size"] == 101


@pytest.mark.slow
def test_a_failing_member_ends_the_stage_with_an_error(tmp_path: Path, local_ray: Any) -> None:
    cfg = _pbt_config(tmp_path / "run")
    cfg["trainable"] = LOGREG  # cannot checkpoint during training
    cfg["search_space"] = {"C": {"type": "range", "bounds": [0.1, 10], "mutable": True}}
    cfg["search"]["n_trials"] = 2
    with pytest.raises(ConfigError, match=r"PBT member\(s\) failed.*checkpoints during training"):
        run_pipeline(cfg)
    assert not (tmp_path / "run" / "pbt" / "done.json").exists()


def test_row_log_keeps_every_complete_row_after_a_cut_line(tmp_path: Path) -> None:
    import numpy as np

    from sigtune.pipelines.ml._pbt import _row_log

    class _Trial:
        path = str(tmp_path / "member")

    log = _row_log()
    row = {"trial_id": "t", "member": 0, "config": {"lr": 0.1}, "info": {"a": np.float32(0.5)}}
    log.on_trial_result(0, [], _Trial(), {**row, "epoch": 1})
    f = tmp_path / "member" / ROWS_FILE
    f.write_bytes(f.read_bytes() + b'{"epoch": 2, "va')  # a crash while writing epoch 2's row
    log.on_trial_result(0, [], _Trial(), {**row, "epoch": 2})  # epoch 2 trained again
    rows = member_rows(tmp_path / "member")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["info/a"] == 0.5 and "config" not in rows[0]


def test_state_mirror_keeps_the_last_complete_copy(tmp_path: Path) -> None:
    from sigtune.pipelines.ml._pbt import _mirror_state

    exp, backup = tmp_path / "pbt", tmp_path / "state-backup"
    exp.mkdir()
    state = exp / "experiment_state-s1.json"
    search = exp / "basic-variant-state-s1.json"
    state.write_text(json.dumps({"trial_data": [1]}))
    search.write_bytes(pickle.dumps({"finished": False}))
    seen: dict[str, tuple[int, int]] = {}
    _mirror_state(exp, backup, seen)
    assert json.loads((backup / state.name).read_text()) == {"trial_data": [1]}
    assert pickle.loads((backup / search.name).read_bytes()) == {"finished": False}
    # a torn rewrite (Tune's syncer mid-copy) is not mirrored: the copy stays complete
    state.write_text('{"trial_data": [1, 2')
    search.write_bytes(pickle.dumps({"finished": True})[:-3])
    _mirror_state(exp, backup, seen)
    assert json.loads((backup / state.name).read_text()) == {"trial_data": [1]}
    assert pickle.loads((backup / search.name).read_bytes()) == {"finished": False}
    state.write_text(json.dumps({"trial_data": [1, 2]}))
    _mirror_state(exp, backup, seen)
    assert json.loads((backup / state.name).read_text()) == {"trial_data": [1, 2]}
    assert not list(backup.glob(".*.tmp"))


def test_repair_state_restores_torn_files_or_starts_afresh(tmp_path: Path) -> None:
    from sigtune.pipelines.ml._pbt import _repair_state

    exp, backup = tmp_path / "pbt", tmp_path / "state-backup"
    exp.mkdir()
    backup.mkdir()
    (exp / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    good = exp / "experiment_state-s1.json"
    good.write_text(json.dumps({"trial_data": ["old"]}))
    torn = exp / "experiment_state-s2.json"
    torn.write_bytes(b"")
    (backup / torn.name).write_text(json.dumps({"trial_data": ["last"]}))
    search = exp / "basic-variant-state-s2.json"
    search.write_bytes(pickle.dumps([1, 2, 3])[:5])
    assert _repair_state(exp, backup) == [torn.name]
    assert json.loads(torn.read_text()) == {"trial_data": ["last"]}
    assert json.loads(good.read_text()) == {"trial_data": ["old"]}  # untouched
    assert not search.exists() and (exp / (search.name + ".torn")).exists()  # no copy: aside
    # nothing complete left: the experiment is set aside and the stage starts afresh
    for f in exp.glob("experiment_state-*.json"):
        f.write_text("{")
    (backup / torn.name).unlink()
    assert _repair_state(exp, backup) == []
    assert not exp.exists() and (tmp_path / "pbt.unrestorable-1").is_dir()
    assert _repair_state(exp, backup) == []  # no experiment: nothing to do


@pytest.mark.parametrize("scheduler", ["pbt", "pb2"])
def test_synchronous_pbt_goes_on_after_a_resume(scheduler: str) -> None:
    """A restored experiment gets a fresh scheduler while the members are epochs further on:
    after they have all reported, one of them must be runnable (Ray Tune alone leaves every
    member PAUSED forever; seen in CI as a 600 s timeout of the resume test)."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pbt import _PBTTrialState

    from sigtune.pipelines.ml._pbt import _resumable_synch

    common: dict[str, Any] = {
        "time_attr": "epoch",
        "metric": "val_loss",
        "mode": "min",
        "perturbation_interval": 2,
        "synch": True,
    }
    if scheduler == "pb2":
        pytest.importorskip("GPy")
        from ray.tune.schedulers.pb2 import PB2

        sched = _resumable_synch(PB2)(hyperparam_bounds={"lr": [0.01, 0.1]}, **common)
    else:
        sched = _resumable_synch(PopulationBasedTraining)(
            hyperparam_mutations={"lr": [0.01, 0.1]}, **common
        )

    class FakeTrial:
        def __init__(self, i: int) -> None:
            self.trial_id = self.experiment_tag = str(i)
            self.status = Trial.PAUSED
            self.config = {"lr": 0.01}

        def is_finished(self) -> bool:
            return False

    trials = [FakeTrial(i) for i in range(3)]

    class FakeController:
        def get_trials(self) -> list[FakeTrial]:
            return trials

        def get_live_trials(self) -> list[FakeTrial]:
            return trials

    ctl = FakeController()
    for t in trials:  # what a restore gives the scheduler: fresh per-member states
        sched._trial_state[t] = _PBTTrialState(t)
    sched._checkpoint_or_exploit = lambda *a, **k: None  # exploiting needs a running Tune
    for epoch in (5, 7):  # each member trains on from its checkpoint to the next sync point
        for i, t in enumerate(trials):
            assert sched.choose_trial_to_run(ctl) is t
            t.status = Trial.RUNNING
            sched.on_trial_result(ctl, t, {"epoch": epoch, "val_loss": 0.5 + i, "lr": 0.01})
            t.status = Trial.PAUSED
        assert sched._next_perturbation_sync == epoch + 2
