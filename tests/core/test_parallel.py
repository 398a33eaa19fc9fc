"""Local parallel runs: worker processes share the storage and the trial count is exact."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sigtune._storage import EMBEDDED_FILENAME, OWNER_KEY
from sigtune._study import load_study, optimize


def _trivial(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    return x * x


def _check_exact(study_path: str, n: int, n_workers: int) -> None:
    study = load_study("sigtune", study_path)
    trials = study.trials
    assert len(trials) == n
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    owners = {t.system_attrs[OWNER_KEY] for t in trials}
    assert len(owners) == n_workers  # every worker process did trials


@pytest.mark.slow
def test_8_workers_x_500_on_embedded_default(tmp_path: Path) -> None:
    study = optimize(_trivial, 4000, sampler="random", seed=0, n_jobs=8, run_dir=tmp_path)
    assert study.last_run is not None
    assert study.last_run.n_finished == 4000 and study.last_run.n_failed == 0
    _check_exact(str(tmp_path / EMBEDDED_FILENAME), 4000, 8)


@pytest.mark.slow
def test_8_workers_x_500_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    study = optimize(_trivial, 4000, sampler="random", seed=0, n_jobs=8, storage=url)
    assert study.last_run is not None and study.last_run.n_failed == 0
    _check_exact(url, 4000, 8)


def test_local_closure_objective_reaches_workers(tmp_path: Path) -> None:
    offset = 3.0  # a closure: works with the fork start method without pickling

    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0, 1) + offset

    study = optimize(objective, 30, sampler="random", n_jobs=3, run_dir=tmp_path)
    assert len(study.trials) == 30
    assert all(3.0 <= t.values[0] <= 4.0 for t in study.trials)
    assert len({t.system_attrs[OWNER_KEY] for t in study.trials}) >= 2


def test_workers_get_different_seeds(tmp_path: Path) -> None:
    study = optimize(_trivial, 40, sampler="random", seed=5, n_jobs=2, run_dir=tmp_path)
    xs = [t.params["x"] for t in study.trials]
    assert len(set(xs)) == 40  # no two workers replay the same random stream


def test_parallel_resume_counts_exactly(tmp_path: Path) -> None:
    optimize(_trivial, 25, sampler="tpe", seed=1, n_jobs=3, run_dir=tmp_path)
    study = optimize(_trivial, 61, sampler="tpe", seed=1, n_jobs=4, run_dir=tmp_path)
    assert len(study.trials) == 61
    assert study.last_run is not None and study.last_run.n_finished == 36


def test_more_workers_than_trials(tmp_path: Path) -> None:
    study = optimize(_trivial, 2, sampler="random", n_jobs=5, run_dir=tmp_path)
    assert len(study.trials) == 2
