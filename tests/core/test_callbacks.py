"""Callbacks ``callback(study, frozen_trial)`` after each recorded trial (Optuna's signature)."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

import sigtune
from sigtune import RunFailedError
from sigtune._config import load_config
from sigtune._settings import RunSettings
from sigtune._study import run_study


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    if trial.number % 5 == 4:
        raise ValueError("every fifth fails")
    return x * x


class _FileLog:
    """Appends ``number state`` per call to a file: works from worker processes too."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        stored = study.get_trials(deepcopy=False)[trial.number]
        assert stored.state == trial.state  # called after the trial is recorded
        line = f"{trial.number} {trial.state.name} {os.getpid()}\n"
        with self.path.open("a") as f:
            f.write(line)

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.path.read_text().splitlines()]


def test_user_callback_sees_every_recorded_trial() -> None:
    seen: list[tuple[int, str, bool]] = []

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        seen.append((trial.number, trial.state.name, isinstance(study, optuna.Study)))

    study = sigtune.optimize(_objective, 10, sampler="random", seed=0, callbacks=[callback])
    assert seen == [(t.number, t.state.name, True) for t in study.trials]
    assert [s for _, s, _ in seen].count("FAIL") == 2


def test_optuna_max_trials_callback_stops_the_run() -> None:
    stop = MaxTrialsCallback(4, states=(TrialState.COMPLETE,))
    study = sigtune.optimize(_objective, 50, sampler="random", seed=0, callbacks=[stop])
    assert study.count()["COMPLETE"] == 4
    assert study.last_run is not None and study.last_run.stop_reason == "stopped"
    study.optuna.optimize(lambda t: 1.0, n_trials=1)  # the study object is usable afterwards


@pytest.mark.parametrize("n_jobs", [2, 3])
def test_callbacks_run_in_worker_processes(tmp_path: Path, n_jobs: int) -> None:
    log = _FileLog(tmp_path / "calls.txt")
    stop = MaxTrialsCallback(12, states=(TrialState.COMPLETE,))
    study = sigtune.optimize(
        _objective,
        200,
        sampler="random",
        seed=0,
        n_jobs=n_jobs,
        run_dir=tmp_path,
        callbacks=[log, stop],
    )
    complete = study.count()["COMPLETE"]
    # each worker finishes the trial it is running when another one stops the run
    assert 12 <= complete <= 12 + n_jobs - 1
    assert study.last_run is not None and study.last_run.stop_reason == "stopped"
    lines = log.lines()
    finished = [t for t in study.trials if t.state.is_finished()]
    assert sorted(int(n) for n, _, _ in lines) == [t.number for t in finished]
    assert {(int(n), s) for n, s, _ in lines} == {(t.number, t.state.name) for t in finished}
    assert os.getpid() not in {int(p) for _, _, p in lines}  # ran in the workers


def test_callbacks_from_the_run_config(tmp_path: Path) -> None:
    (tmp_path / "hooks.py").write_text(
        "from pathlib import Path\n"
        "def record(study, trial):\n"
        "    with open(Path(__file__).parent / 'hook.txt', 'a') as f:\n"
        "        f.write(f'{trial.number}\\n')\n"
    )
    (tmp_path / "obj.py").write_text("def f(trial):\n    return trial.suggest_float('x', 0, 1)\n")
    (tmp_path / "run.yaml").write_text(
        "n_trials: 5\nsampler: random\nobjective: obj.py:f\ncallbacks: ['hooks.py:record']\n"
        f"run_dir: {tmp_path / 'run'}\n"
    )
    cfg = load_config(tmp_path / "run.yaml")
    settings = RunSettings.from_config(cfg)
    assert len(settings.callbacks) == 1
    from sigtune._config import build_objective

    run_study(build_objective(cfg).objective, settings)
    assert (tmp_path / "hook.txt").read_text().split() == ["0", "1", "2", "3", "4"]


def test_a_failing_callback_stops_the_run_with_its_name() -> None:
    def broken(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.number == 2:
            raise RuntimeError("tracking server down")

    with pytest.raises(RunFailedError, match=r"callback .*broken failed on trial 2: Runtime"):
        sigtune.optimize(_objective, 10, sampler="random", callbacks=[broken])


def test_study_stop_in_the_objective_stops_the_run() -> None:
    def objective(trial: optuna.Trial) -> float:
        if trial.number == 3:
            trial.study.stop()
        return trial.suggest_float("x", 0, 1)

    study = sigtune.optimize(objective, 20, sampler="random")
    assert len(study.trials) == 4 and study.count()["COMPLETE"] == 4


def test_callbacks_must_be_callable() -> None:
    with pytest.raises(sigtune.ConfigError, match=r"callbacks\[0\] must be callable"):
        sigtune.optimize(_objective, 1, callbacks=["module:function"])  # type: ignore[list-item]
    with pytest.raises(sigtune.ConfigError, match="callbacks"):
        load_config({"n_trials": 1, "objective": "m:f", "callbacks": ["nocolon"]})


def test_a_callback_changing_its_trial_does_not_change_the_study() -> None:
    # The engine tells the storage without Optuna's deep copy; callbacks still get their own copy.
    def vandal(study: optuna.Study, trial: FrozenTrial) -> None:
        trial.user_attrs["vandal"] = True
        trial.params["x"] = 99.0
        if trial.values is not None:
            trial.values = [-1.0]

    study = sigtune.optimize(_objective, 6, sampler="random", seed=0, callbacks=[vandal])
    for t in study.optuna.get_trials(deepcopy=False):
        assert "vandal" not in t.user_attrs and t.params["x"] != 99.0
        assert t.values is None or t.values[0] >= 0.0


def test_runs_record_the_same_without_optunas_internal_tell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fallback of ``_optuna_compat.tell`` (public ``study.tell``) records the same trials."""
    from sigtune import _optuna_compat

    def run() -> list[tuple[str, tuple[float, ...] | None, dict[str, object]]]:
        study = sigtune.optimize(_objective, 10, sampler="random", seed=3)
        return [
            (t.state.name, None if t.values is None else tuple(t.values), t.user_attrs)
            for t in study.trials
        ]

    internal = run()
    assert _optuna_compat._TELL_WITH_WARNING is not None  # found on every Optuna we allow
    monkeypatch.setattr(_optuna_compat, "_TELL_WITH_WARNING", None)
    public = run()
    assert public == internal
    assert [s for s, _, _ in public].count("FAIL") == 2
