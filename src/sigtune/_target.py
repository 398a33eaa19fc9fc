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
    """``n_trials`` as a study-wide target, checked against the storage before trials.

    A check reads every trial of the study, so it is not repeated before every trial while the
    target is far: after a check that found ``left`` trials missing, the next ``left // 16``
    claims of this process go unchecked (other processes cannot use up ``left`` meanwhile unless
    there are more than 15 of them going as fast). Within 64 trials of the target every claim is
    checked, so ``k`` processes overshoot by at most ``k - 1`` trials.

    A finished trial never changes whether it counts, so a check only looks again at the trials
    after the longest run of finished ones it has seen (trials are listed by number): the cost of
    a check is the storage's listing, not a pass over every trial in Python. On a database (SQLite, PostgreSQL ...) a check is one ``COUNT`` query. The workers of one run
    may share the unchecked claims (``shared``: an object with a ``lock`` and an ``unchecked``
    integer ``.value``), so a check by any of them serves all.
    """

    def __init__(self, n_trials: int, shared: Any = None, count_query: Any = None) -> None:
        self.n_trials = n_trials
        # ``count_query(storage, study_id) -> int | None``: a database's COUNT of the counted
        # claims (sigtune._storage.counted_claims); None: look at the trials.
        self._count_query = count_query
        self._unchecked = 0
        self._shared = shared
        self._prefix = 0  # trials [0, _prefix) are finished: their count is final
        self._prefix_counted = 0

    def has_room(self, study: optuna.Study) -> bool:
        shared = self._shared
        if shared is None:
            if self._unchecked > 0:
                self._unchecked -= 1
                return True
        else:
            with shared.lock:
                if shared.unchecked.value > 0:
                    shared.unchecked.value -= 1
                    return True
        left = self.n_trials - self._count(study)
        if left > _NEAR:
            if shared is None:
                self._unchecked = left // 16
            else:
                with shared.lock:
                    shared.unchecked.value = left // 16
        return left > 0

    def _count(self, study: optuna.Study) -> int:
        if self._count_query is not None:
            from sigtune._optuna_compat import study_id, study_storage

            counted = self._count_query(study_storage(study), study_id(study))
            if counted is not None:
                return int(counted)
        trials = study.get_trials(deepcopy=False)  # all states, by trial number
        i, counted, n = self._prefix, self._prefix_counted, len(trials)
        while i < n and trials[i].state in _FINISHED:
            counted += is_counted(trials[i])
            i += 1
        self._prefix, self._prefix_counted = i, counted
        for t in trials[i:]:
            if t.state in _CLAIMING and is_counted(t):
                counted += 1
        return counted
