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
