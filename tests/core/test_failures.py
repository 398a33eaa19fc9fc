"""Failure policy: failed trials carry a reason, the study goes on; trial_timeout, max_failures,
crashed workers and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from sigtune._exceptions import RunFailedError
from sigtune._study import load_study, optimize
from sigtune.engines._trial import validate_values


@pytest.mark.parametrize(
    ("returned", "reason"),
    [
        (float("nan"), "objective returned nan (not a finite number)"),
        (float("inf"), "objective returned inf (not a finite number)"),
        (np.float32("nan"), "objective returned nan (not a finite number)"),
        ("0.5", "objective returned str ('0.5'); expected a float"),
        (None, "objective returned NoneType (None); expected a float"),
        (True, "objective returned bool (True); expected a float"),
        ([1.0, 2.0], "objective returned 2 value(s) but the study has 1 objective(s)"),
        (np.ones((2, 2)), "objective returned an array of shape (2, 2); expected a float"),
    ],
)
def test_bad_return_values_fail_with_reason(returned: Any, reason: str) -> None:
    def objective(trial: optuna.Trial) -> Any:
        x = trial.suggest_float("x", 0, 1)
        return returned if trial.number == 1 else x

    study = optimize(objective, 4, sampler="random", seed=0)
    states = [t.state for t in study.trials]
    assert states == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert study.trials[1].user_attrs["fail_reason"] == reason


@pytest.mark.parametrize(
    ("value", "n", "expected"),
    [
        (1, 1, [1.0]),
        (np.float64(2.5), 1, [2.5]),
        (np.int64(3), 1, [3.0]),
        (np.array(0.5), 1, [0.5]),
        ((1, 2.0), 2, [1.0, 2.0]),
        (np.array([1.0, 2.0]), 2, [1.0, 2.0]),
    ],
)
def test_accepted_return_values(value: Any, n: int, expected: list[float]) -> None:
    assert validate_values(value, n) == expected


def test_multi_objective_value_checks() -> None:
    assert validate_values([1.0, float("nan")], 2) == (
        "objective returned nan for value 1 (not a finite number)"
    )
    assert "for value 0; expected a float" in str(validate_values(["a", 1.0], 2))
    assert (
        validate_values(1.0, 2) == "objective returned 1 value(s) but the study has 2 objective(s)"
    )


def test_exception_becomes_failed_trial_and_study_goes_on() -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_int("x", 0, 9)
        if trial.number % 3 == 0:
            raise KeyError(f"missing {x}")
        return float(x)

    study = optimize(objective, 9, sampler="random", seed=1)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [0, 3, 6]
    assert all(t.user_attrs["fail_reason"].startswith("KeyError: 'missing ") for t in failed)
    assert study.last_run is not None and study.last_run.n_failed == 3
    assert study.last_run.last_fail_reason == failed[-1].user_attrs["fail_reason"]


def test_pruned_trials_are_not_failures() -> None:
    def objective(trial: optuna.Trial) -> float:
        trial.report(1.0, 0)
        if trial.number % 2:
            raise optuna.TrialPruned()
        return 1.0

    study = optimize(objective, 6, sampler="random", max_failures=0)
    assert study.count()["PRUNED"] == 3 and study.count()["COMPLETE"] == 3


def test_trial_timeout_interrupts_python_loop() -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            while True:  # CPU-bound pure Python: SIGALRM interrupts it
                x = (x * 1.0001) % 1.0
        return x

    study = optimize(objective, 3, sampler="random", trial_timeout=0.3)
    t1 = study.trials[1]
    assert t1.state == TrialState.FAIL
    assert t1.user_attrs["fail_reason"] == "TrialTimeoutError: trial exceeded trial_timeout=0.3s"
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 2


def test_trial_timeout_gives_back_the_callers_interval_timer() -> None:
    """An in-process run with trial_timeout uses SIGALRM; the caller's own timer (here 600 s,
    as pytest-timeout arms one around every test) is armed again afterwards, with its handler."""
    fired: list[int] = []

    def on_alarm(signum: int, frame: Any) -> None:
        fired.append(signum)

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_timer = signal.setitimer(signal.ITIMER_REAL, 600.0)
    try:
        study = optimize(lambda t: t.suggest_float("x", 0, 1), 3, trial_timeout=5.0)
        assert study.count()["COMPLETE"] == 3
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < left <= 600.0 and not fired
        assert signal.getsignal(signal.SIGALRM) is on_alarm
        # a timer that fell due during the run fires at once after it, into its own handler
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        optimize(lambda t: (time.sleep(0.1), t.suggest_float("x", 0, 1))[1], 1, trial_timeout=5.0)
        deadline = time.monotonic() + 60
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, *old_timer)
        signal.signal(signal.SIGALRM, old_handler)


def test_trial_timeout_in_worker_processes(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if x > 0.5:
            time.sleep(30)
        return x

    study = optimize(
        objective, 8, sampler="random", seed=3, trial_timeout=0.5, n_jobs=2, run_dir=tmp_path
    )
    slow = [t for t in study.trials if t.params["x"] > 0.5]
    assert slow and all(t.state == TrialState.FAIL for t in slow)
    assert all("trial_timeout=0.5s" in t.user_attrs["fail_reason"] for t in slow)
    assert len(study.trials) == 8


def test_max_failures_count_stops_run() -> None:
    def objective(trial: optuna.Trial) -> float:
        raise ValueError("broken objective")

    with pytest.raises(RunFailedError) as info:
        optimize(objective, 50, sampler="random", max_failures=2, study_name="mf")
    msg = str(info.value)
    assert "3 of 3 trials failed (max_failures=2)" in msg
    assert "last reason: ValueError: broken objective" in msg
    assert "fix the objective or raise max_failures" in msg


def test_max_failures_fraction_waits_for_ten_trials(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        if trial.number % 4 != 0:
            raise RuntimeError("75% fail")
        return 1.0

    with pytest.raises(RunFailedError, match=r"of 10 trials failed \(max_failures=0.5\)"):
        optimize(objective, 100, sampler="random", max_failures=0.5, run_dir=tmp_path)
    study = load_study("sigtune", tmp_path / "study.journal")
    assert len(study.trials) == 10
    # Under the fraction, the run completes.
    study = optimize(objective, 20, sampler="random", max_failures=0.8, study_name="ok")
    assert len(study.trials) == 20


def test_max_failures_across_worker_processes(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        raise ValueError("always")

    with pytest.raises(RunFailedError, match="max_failures=4"):
        optimize(objective, 200, sampler="random", max_failures=4, n_jobs=2, run_dir=tmp_path)
    study = load_study("sigtune", tmp_path / "study.journal")
    # Stops promptly: the 5th failure sets the stop flag; the other worker finishes at most one.
    assert 5 <= len(study.trials) <= 6
    assert study.count()["RUNNING"] == 0


def test_crashed_worker_trial_marked_failed_and_count_exact(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 3 and not marker.exists():
            marker.touch()
            os._exit(7)  # the worker process dies mid-trial
        return x

    study = optimize(objective, 12, sampler="random", n_jobs=2, run_dir=tmp_path)
    # The dead worker was replaced; its trial is FAIL (not counted) and was run once more.
    assert len(study.trials) == 13 and study.n_finished() == 12
    dead = study.trials[3]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["fail_reason"] == "worker exited with code 7; retried once"
    retry = [t for t in study.trials if t.user_attrs.get("sigtune:retry_of") == 3]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == dead.params
    assert study.count()["COMPLETE"] == 12


def test_workers_dying_stop_the_run_only_under_max_failures(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        os._exit(3)

    with pytest.raises(RunFailedError, match="max_failures=3") as info:
        optimize(objective, 10, sampler="random", n_jobs=2, run_dir=tmp_path, max_failures=3)
    assert "worker exited with code 3" in str(info.value)
    study = load_study("sigtune", tmp_path / "study.journal")
    assert study.count()["RUNNING"] == 0 and study.count()["FAIL"] >= 4


def test_run_timeout_stops_starting_trials() -> None:
    def objective(trial: optuna.Trial) -> float:
        time.sleep(0.05)
        return 0.0

    study = optimize(objective, 10_000, sampler="random", timeout=0.5)
    assert study.last_run is not None and study.last_run.stop_reason == "timeout"
    # Each trial sleeps 0.05 s, so at most 0.5 / 0.05 + 1 trials fit, however slow the machine.
    assert 1 <= len(study.trials) <= 11


_SLOW_SCRIPT = """
import sys, time, sigtune
def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    if trial.number >= 2:
        open(sys.argv[3], "a").write(f"{trial.number}\\n")
        time.sleep(60)
    return x
sigtune.optimize(objective, 50, sampler="random", storage=sys.argv[1], n_jobs=int(sys.argv[2]))
"""


def _wait_for(path: Path, n_lines: int, proc: subprocess.Popen[str], limit: float = 60) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if path.exists() and len(path.read_text().splitlines()) >= n_lines:
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the objective to start")


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_sigint_marks_running_trials_interrupted(tmp_path: Path, n_jobs: int) -> None:
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_SCRIPT)
    storage = str(tmp_path / "s.journal")
    started = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, str(script), storage, str(n_jobs), str(started)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(started, n_jobs, proc)  # every worker is inside its objective now
        proc.send_signal(signal.SIGINT)  # to the parent only: it forwards to its workers
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    study = load_study("sigtune", storage)
    counts = study.count()
    assert counts["RUNNING"] == 0
    interrupted = [t for t in study.trials if t.user_attrs.get("fail_reason") == "interrupted"]
    assert len(interrupted) == n_jobs
    assert counts["COMPLETE"] >= 2


def test_cli_sigint_exit_code_and_resume_message(tmp_path: Path) -> None:
    (tmp_path / "obj.py").write_text(
        textwrap.dedent(
            """
            import pathlib, time
            def objective(trial):
                x = trial.suggest_float("x", 0, 1)
                if trial.number >= 1:
                    pathlib.Path(__file__).with_name("started").touch()
                    time.sleep(60)
                return x
            """
        )
    )
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"study_name: ctrlc\nrun_dir: {tmp_path}/run\nn_trials: 5\nsampler: random\n"
        "objective: obj.py:objective\nreport: false\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sigtune.cli", "run", str(config), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        end = time.monotonic() + 60
        while not (tmp_path / "started").exists() and time.monotonic() < end:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert f"Interrupted. Resume with: sigtune run {config}" in err
    study = load_study("ctrlc", tmp_path / "run" / "study.journal")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs["fail_reason"] == "interrupted"
