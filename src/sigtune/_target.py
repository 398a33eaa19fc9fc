"""Which trials count towards ``n_trials``, and the study-wide target shared by concurrent runs.

``n_trials`` is the number of finished trials (COMPLETE + PRUNED + FAIL) wanted in the study. Not
counted: copies made by ``warm_start``, and FAILED trials that did not fail through their own
fault and were (or will be) run again: trials of a process that was killed (stale RUNNING on
resume), trials interrupted by Ctrl-C, and a trial whose worker died and which was retried. Those
carry ``system_attrs["sigtune:uncounted"]``.

Several ``sigtune run`` processes on one study share the target: before a worker starts a trial
it counts the study's finished and RUNNING trials in the storage (:class:`StudyTarget`), so two
runs of ``n_trials: 100`` end with about 100 trials, not 200. The count and the creation of the
trial are two storage operations, so ``k`` processes that claim at the same instant overshoot by at
most ``k - 1`` trials.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "UNCOUNTED_KEY",
    "WARM_START_KEY",
    "StudyTarget",
    "is_counted",
    "mark_uncounted",
    "n_counted",
]

WARM_START_KEY = "sigtune:warm_start"
UNCOUNTED_KEY = "sigtune:uncounted"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_CLAIMING = (*_FINISHED, TrialState.RUNNING)
_NEAR = 64  # trials left below which every claim is checked against the storage


def is_counted(trial: FrozenTrial) -> bool:
    """Whether a finished trial counts towards ``n_trials``."""
    attrs = trial.system_attrs
    return WARM_START_KEY not in attrs and UNCOUNTED_KEY not in attrs


def n_counted(trials: Iterable[FrozenTrial]) -> int:
    """Number of trials that count (the caller passes finished trials)."""
    return sum(1 for t in trials if is_counted(t))


def mark_uncounted(storage: Any, trial_id: int, why: str) -> None:
    """Record that a trial is not counted (before it is marked FAIL)."""
    storage.set_trial_system_attr(trial_id, UNCOUNTED_KEY, why)


class StudyTarget:
    """``n_trials`` as a study-wide target, checked against the storage before each trial.

    A check reads every trial of the study. While more than 64 trials are left, a "yes" is reused
    for a while (at least ``refresh_s`` seconds, and 20 times as long as the check took, so checks
    cost at most ~5% of a worker's time, also on a large SQLite study); within 64 trials of the
    target every claim is checked, so ``k`` processes overshoot by at most ``k - 1`` trials.
    """

    def __init__(self, n_trials: int, refresh_s: float = 0.05) -> None:
        self.n_trials = n_trials
        self.refresh_s = refresh_s
        self._valid_until = -1.0

    def has_room(self, study: optuna.Study) -> bool:
        start = time.monotonic()
        if start < self._valid_until:
            return True
        trials = study.get_trials(deepcopy=False, states=_CLAIMING)
        left = self.n_trials - n_counted(trials)
        end = time.monotonic()
        # Far from the target a cached "yes" is safe; near it, check before every trial, so
        # each process can overshoot by at most the one trial it claims while another does.
        if left > _NEAR:
            self._valid_until = end + max(self.refresh_s, 20.0 * (end - start))
        return left > 0
