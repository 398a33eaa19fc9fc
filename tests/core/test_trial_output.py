"""The local engine keeps each trial's stdout/stderr (``sigtune status --trial N``), as Ray does."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest

from sigtune._study import optimize
from sigtune._trial_logs import LOG_CHARS, LOG_KEY, format_trial_log, trial_log


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    if trial.number == 1:
        return x  # prints nothing
    print(f"trial {trial.number}: x={x:.3f}")
    print(f"warning from trial {trial.number}", file=sys.stderr)
    if trial.number == 2:
        raise ValueError("bad x")
    return x


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_output_of_each_trial_is_kept(tmp_path: Path, n_jobs: int) -> None:
    study = optimize(_objective, 4, sampler="random", seed=1, n_jobs=n_jobs, run_dir=tmp_path)
    by_number = {t.number: t for t in study.trials}
    assert LOG_KEY not in by_number[1].system_attrs  # nothing printed: nothing stored
    for n in (0, 2, 3):
        log = by_number[n].system_attrs[LOG_KEY]
        assert f"trial {n}: x=" in log and f"warning from trial {n}" in log
    doc = trial_log(study, 2)
    assert doc["state"] == "FAIL" and doc["fail_reason"] == "ValueError: bad x"
    assert "ValueError: bad x" in doc["traceback"]
    text = format_trial_log(doc)
    assert "Output:" in text and "warning from trial 2" in text


def test_only_the_end_of_a_long_output_is_kept(tmp_path: Path) -> None:
    def chatty(trial: optuna.Trial) -> float:
        for i in range(2000):
            print(f"line {i:05d}")
        return trial.suggest_float("x", 0.0, 1.0)

    study = optimize(chatty, 1, sampler="random", run_dir=tmp_path)
    log = study.trials[0].system_attrs[LOG_KEY]
    assert len(log) == LOG_CHARS and log.endswith("line 01999\n")


def test_streams_are_restored_after_each_trial_and_follow_replacements(tmp_path: Path) -> None:
    """An objective that replaces ``sys.stdout`` and never puts it back: the next trial's output
    is still kept, and after the run the caller's streams are the ones it had."""
    import io

    before = sys.stdout, sys.stderr
    kept: list[io.StringIO] = []

    def rude(trial: optuna.Trial) -> float:
        print(f"trial {trial.number} says hello")
        if trial.number == 1:
            sink = io.StringIO()
            kept.append(sink)
            sys.stdout = sink  # never restored by the objective
            print("into the objective's own sink")
        return trial.suggest_float("x", 0.0, 1.0)

    study = optimize(rude, 4, sampler="random", seed=0)
    assert (sys.stdout, sys.stderr) == before
    logs = [t.system_attrs[LOG_KEY] for t in study.trials]
    for n, log in enumerate(logs):
        assert log.startswith(f"trial {n} says hello\n")
    assert "sink" not in logs[1] and kept[0].getvalue() == "into the objective's own sink\n"
    assert [log.count("hello") for log in logs] == [1, 1, 1, 1]  # no trial keeps another's output
