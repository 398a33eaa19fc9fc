"""The engine seam: a second engine is one class plus one registry line, and it records trials
exactly as the local engine does because both use the shared per-trial code."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest

import sigtune
from sigtune import ConfigError
from sigtune._config import load_config
from sigtune._run import (
    Engine,
    ProgressSink,
    RunOutcome,
    RunPlan,
    StudyRef,
    TrialFunction,
    engine_names,
    get_engine,
    register_engine,
)
from sigtune._settings import RunSettings
from sigtune._storage import OWNER_KEY
from sigtune._study import run_study
from sigtune.engines import LocalEngine
from sigtune.engines._trial import TRACEBACK_KEY, TrialGuard, open_study, run_trial


class SequentialEngine:
    """Runs the plan's trials one after the other in this process."""

    name = "sequential"
    runs: list[int] = []  # noqa: RUF012 - plan sizes seen, for the tests

    def run(
        self,
        study_ref: StudyRef,
        objective: TrialFunction,
        plan: RunPlan,
        *,
        n_jobs: int = 1,
        progress: ProgressSink | None = None,
    ) -> RunOutcome:
        start = time.monotonic()
        SequentialEngine.runs.append(plan.n_trials)
        study = open_study(study_ref, plan, worker=0)
        guard = TrialGuard(plan.trial_timeout)
        counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        last_reason = None
        with guard.installed():
            for _ in range(plan.n_trials):
                record = run_trial(study, objective, plan, guard)
                counts[record.state.name] += 1
                last_reason = record.reason or last_reason
                if record.stop is not None:
                    break
        return RunOutcome(
            n_finished=sum(counts.values()),
            n_complete=counts["COMPLETE"],
            n_pruned=counts["PRUNED"],
            n_failed=counts["FAIL"],
            stop_reason="done",
            last_fail_reason=last_reason,
            error=None,
            elapsed=time.monotonic() - start,
        )


register_engine("sequential", SequentialEngine)


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    if trial.number == 2:
        raise ValueError("bad point")
    if trial.number == 3:
        return float("nan")
    return x * x


def test_a_registered_engine_runs_trials_through_the_shared_per_trial_code(
    tmp_path: Path,
) -> None:
    SequentialEngine.runs.clear()
    study = sigtune.optimize(
        _objective,
        8,
        sampler="random",
        seed=0,
        run_dir=tmp_path,
        engine="sequential",
        constraints=lambda t: [t.values[0] - 0.5],
    )
    assert SequentialEngine.runs == [8]
    trials = study.trials
    assert len(trials) == 8
    assert [t.state.name for t in trials].count("FAIL") == 2
    # failure reasons, traceback, owner stamps and constraints: the shared per-trial code
    assert trials[2].user_attrs["fail_reason"] == "ValueError: bad point"
    assert "raise ValueError" in trials[2].system_attrs[TRACEBACK_KEY]
    assert "not a finite number" in trials[3].user_attrs["fail_reason"]
    assert TRACEBACK_KEY not in trials[3].system_attrs
    assert all(OWNER_KEY in t.system_attrs for t in trials)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert all(t.system_attrs["constraints"] == [t.values[0] - 0.5] for t in done)
    assert study.last_run is not None and study.last_run.n_failed == 2


def test_sequential_and_local_engines_record_the_same_trials(tmp_path: Path) -> None:
    def values(engine: str) -> list[tuple[str, float | None, str | None]]:
        s = sigtune.optimize(
            _objective,
            6,
            sampler="random",
            seed=3,
            engine=engine,
            study_name=engine,
            run_dir=tmp_path,
        )
        return [
            (t.state.name, t.value if t.values else None, t.user_attrs.get("fail_reason"))
            for t in s.trials
        ]

    assert values("sequential") == values("local")


def test_the_engine_is_chosen_by_the_run_config(tmp_path: Path) -> None:
    SequentialEngine.runs.clear()
    (tmp_path / "obj.py").write_text("def f(trial):\n    return trial.suggest_float('x', 0, 1)\n")
    cfg = load_config(
        {
            "n_trials": 3,
            "objective": f"{tmp_path / 'obj.py'}:f",
            "engine": "sequential",
            "run_dir": str(tmp_path),
            "sampler": "random",
        }
    )
    settings = RunSettings.from_config(cfg)
    assert settings.engine == "sequential"
    run_study(_objective, settings)
    assert SequentialEngine.runs == [3]


def test_an_engine_can_be_named_by_its_import_path() -> None:
    engine = get_engine("sigtune.engines._local:LocalEngine")
    assert isinstance(engine, LocalEngine) and isinstance(engine, Engine)
    assert isinstance(SequentialEngine(), Engine)


def test_registry_lists_local_lazily_and_rejects_unknown_names() -> None:
    assert {"local", "sequential"} <= set(engine_names())
    assert isinstance(get_engine("local"), LocalEngine)
    with pytest.raises(ConfigError, match="unknown engine 'nope'; valid: local"):
        sigtune.optimize(_objective, 1, engine="nope")
    with pytest.raises(ConfigError, match="bad options"):
        get_engine("local", {"workers": 3})
    with pytest.raises(ConfigError, match=r"engine.name: unknown engine 'nope'"):
        load_config({"n_trials": 1, "objective": "m:f", "engine": "nope"})
