"""The ``pbt`` stage on Ray Tune's PopulationBasedTraining: a schedule beats every constant
learning rate at equal epochs, exploits copy weights, perturbations stay in the declared
mutations, outputs (model, schedule, plot, study) are written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import sigtune

pytest.importorskip("torch")
pytest.importorskip("ray.tune")

from sigtune.pipelines.ml import (
    load_trainable,
    make_hep_dataset,
    make_trainable,
    split_random,
)
from sigtune.pipelines.ml._cv import TrainableSpec
from sigtune.pipelines.ml._pbt import PBTStage, run_pbt

# A task where the learning rate must drop: large rates learn fast and then rattle around
# the minimum (small batches), small rates are slow. 6 members x 12 epochs.
DATA = make_hep_dataset(3000, n_informative=4, n_correlated=0, n_noise=4, seed=5)
SPLITS = split_random(DATA, val_fraction=0.3, test_fraction=0.0, seed=1)
BASE = {"num_layers": 1, "units": 16, "batch_size": 16, "patience": None}
RATES = [0.1, 0.03, 0.01, 0.003, 0.001, 0.0003]
DROPOUT = {"low": 0.0, "high": 0.05}
EPOCHS = 12
SEED = 0


def _constant(idx: int, lr: float) -> float:
    t = make_trainable("mlp", seed=SEED + idx, metrics=[])
    h = t.fit(
        SPLITS.train,
        SPLITS.val,
        {**BASE, "learning_rate": lr, "dropout": 0.05, "max_epochs": EPOCHS},
    )
    return float(h.metrics["val_loss"][-1])


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    stage_dir = tmp_path_factory.mktemp("pbt")
    stage = PBTStage.model_validate(
        {
            "population": len(RATES),
            "perturbation_interval": 3,
            "max_epochs": EPOCHS,
            "quantile_fraction": 0.34,
            "resample_probability": 0.25,
            "mutations": {"learning_rate": RATES, "dropout": DROPOUT},
            "max_concurrent": 1,
            "num_cpus": 2,
        }
    )
    members = [{**BASE, "learning_rate": lr, "dropout": 0.05} for lr in RATES]
    out = run_pbt(
        stage,
        factory=TrainableSpec("mlp", {"metrics": [], "n_threads": 1}),
        train=SPLITS.train,
        val=SPLITS.val,
        monitor="val_loss",
        direction="minimize",
        members=members,
        mutations={k: stage.mutations[k] for k in stage.mutations},
        seed=SEED,
        stage_dir=stage_dir,
    )
    return {"out": out, "dir": stage_dir}


@pytest.mark.slow
def test_pbt_beats_every_constant_rate_at_equal_epochs(toy: dict[str, Any]) -> None:
    out = toy["out"]
    constants = [_constant(i, lr) for i, lr in enumerate(RATES)]
    # the same budget: 6 trainings of 12 epochs each
    assert out["epochs_trained"] == len(RATES) * EPOCHS
    assert out["value"] < min(constants), (out["value"], constants)
    # the winner's schedule really changes the rate (a constant could not have won)
    rates = {s["learning_rate"] for s in out["schedule"]}
    assert len(out["schedule"]) == EPOCHS and len(rates) >= 2


@pytest.mark.slow
def test_exploit_copies_the_donor_checkpoint(toy: dict[str, Any]) -> None:
    out = toy["out"]
    assert out["n_exploits"] >= 1
    rows = _rows(toy["dir"])
    exploited = [r for r in rows if r["exploited_from"]]
    assert len(exploited) == out["n_exploits"]
    for r in exploited:
        # weights right after the copy == weights in the donor's checkpoint
        assert r["loaded_digest"] and r["loaded_digest"] == r["source_digest"]
        assert r["exploited_from"] != r["trial_id"]


@pytest.mark.slow
def test_perturbations_stay_in_the_declared_mutations(toy: dict[str, Any]) -> None:
    rows = _rows(toy["dir"])
    lrs = {float(r["hp_learning_rate"]) for r in rows}
    drops = [float(r["hp_dropout"]) for r in rows]
    assert lrs <= set(RATES)
    assert all(DROPOUT["low"] <= d <= DROPOUT["high"] for d in drops)
    # something was explored (not only the initial values)
    assert len(lrs) >= 2 or len(set(drops)) >= 2


@pytest.mark.slow
def test_outputs_model_schedule_plot_and_study(toy: dict[str, Any]) -> None:
    import optuna

    d: Path = toy["dir"]
    out = toy["out"]
    model = load_trainable(d / "best_model")
    assert model.predict(SPLITS.val.X).shape == (len(SPLITS.val),)
    sched = json.loads((d / "schedule.json").read_text())
    assert sched["per_epoch"] == out["schedule"]
    # the change points replay the per-epoch schedule
    p = sched["params"]
    lr = p["learning_rate"]
    for e, s in enumerate(out["schedule"], start=1):
        lr = (p["schedule"] or {}).get(str(e), {}).get("learning_rate", lr)
        assert lr == s["learning_rate"]
    assert (d / "pbt.png").stat().st_size > 1000
    study = sigtune.load_study("pbt", d / "study.journal")
    trials = study.trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len(trials) == len(RATES)
    assert min(t.value for t in trials) == pytest.approx(out["value"])
    assert all(len(t.intermediate_values) == EPOCHS for t in trials)


def _rows(stage_dir: Path) -> list[dict[str, Any]]:
    from sigtune.pipelines.ml._pbt import ROWS_FILE, member_rows

    rows: list[dict[str, Any]] = []
    for f in sorted((stage_dir / "ray").glob(f"*/*/{ROWS_FILE}")):
        rows.extend(member_rows(f.parent))
    return rows


@pytest.mark.slow
def test_one_member_process_serves_the_population_through_every_perturbation(
    toy: dict[str, Any],
) -> None:
    # max_concurrent 1: Tune reuses one actor for every member. Ray Tune's own generator of the
    # members counts as finished once it has created them all, and Tune then ended the actor at
    # each synchronous perturbation and started a new process (imports included) for the next.
    rows = _rows(toy["dir"])
    assert len(rows) == len(RATES) * EPOCHS
    assert len({r["pid"] for r in rows}) == 1, sorted({r["pid"] for r in rows})
