"""The engine interface: how a batch of trials of one study gets executed.

An engine receives a :class:`StudyRef` (where the study lives), the trial function (the objective
already bound to its search space and keyword arguments) and :class:`RunSettings`, runs exactly
``settings.n_trials`` trials (fewer only when the run stops early) and returns a
:class:`RunOutcome`. The per-trial failure policy (reasons on FAILED trials, ``trial_timeout``,
``max_failures``, Ctrl-C) is the engine's job, so that every engine behaves the same.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from sigtune._storage import StorageRef

__all__ = [
    "Engine",
    "ProgressSink",
    "RunOutcome",
    "RunSettings",
    "StopReason",
    "StudyRef",
    "TrialFunction",
]

TrialFunction = Callable[[optuna.Trial], Any]
"""An Optuna-style objective: ``fn(trial) -> float | Sequence[float]``."""

ConstraintsFunction = Callable[[FrozenTrial], Sequence[float]]

StopReason = Literal["done", "timeout", "max_failures", "interrupted", "error"]


@dataclass(frozen=True)
class StudyRef:
    """A study that every worker can open: its storage and its name."""

    storage: StorageRef
    study_name: str


@dataclass(frozen=True)
class RunSettings:
    """What one run does.

    Attributes:
        n_trials: Trials to run now (each ends COMPLETE, PRUNED or FAIL).
        sampler_factory: ``factory(worker_index) -> sampler``; worker 0 of a run gets the same
            sampler a sequential run would (seeded runs stay reproducible), other workers get
            different seeds.
        pruner: The pruner (copied into each worker process).
        timeout: Seconds for the whole run; no new trial starts after it (running ones finish).
        trial_timeout: Seconds per trial; a trial over it becomes FAILED.
        max_failures: ``int`` count, or ``float`` fraction in (0, 1) of the finished trials of this
            run (checked once 10 trials finished); exceeding it stops the run.
        constraints: ``fn(FrozenTrial) -> Sequence[float]`` evaluated after each completed trial.
        maximize: Per objective, whether it is maximised (for the progress display).
        study_n_trials: The study-wide target (counted trials, see :mod:`sigtune._target`):
            workers stop claiming trials once the storage holds it, so concurrent runs of one
            study share ``n_trials``. ``None``: only this run's ``n_trials`` counts.
    """

    n_trials: int
    sampler_factory: Callable[[int], BaseSampler]
    pruner: BasePruner | None = None
    timeout: float | None = None
    trial_timeout: float | None = None
    max_failures: int | float | None = None
    constraints: ConstraintsFunction | None = None
    maximize: tuple[bool, ...] = field(default=(False,))
    study_n_trials: int | None = None


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended.

    Attributes:
        n_finished: Trials finished by this run (COMPLETE + PRUNED + FAIL).
        n_complete: COMPLETE trials of this run.
        n_pruned: PRUNED trials of this run.
        n_failed: FAIL trials of this run (including trials of crashed workers).
        stop_reason: Why the run ended.
        last_fail_reason: ``fail_reason`` of the last failed trial, if any.
        error: The message of an error outside any trial (``stop_reason == "error"``).
        elapsed: Wall time in seconds.
    """

    n_finished: int
    n_complete: int
    n_pruned: int
    n_failed: int
    stop_reason: StopReason
    last_fail_reason: str | None
    error: str | None
    elapsed: float


class ProgressSink(abc.ABC):
    """Receives progress while a run goes (see :mod:`sigtune._progress`)."""

    def start(self, total: int, done: int) -> None:  # noqa: B027 - optional hook
        """Called once before the run: the study wants ``total`` trials and has ``done``."""

    @abc.abstractmethod
    def update(self, done: int, failed: int, best: float | None) -> None:
        """Called at most ~10 times per second with counts of this run and the best value."""


class Engine(abc.ABC):
    """Executes the trials of one run."""

    name: str = "base"

    @abc.abstractmethod
    def run(
        self,
        study_ref: StudyRef,
        objective: TrialFunction,
        settings: RunSettings,
        *,
        n_jobs: int = 1,
        progress: ProgressSink | None = None,
    ) -> RunOutcome:
        """Run ``settings.n_trials`` trials of the study with ``n_jobs`` workers.

        Args:
            study_ref: Where the study lives; it must exist.
            objective: The trial function.
            settings: Failure policy, sampler, pruner, budget.
            n_jobs: Number of workers.
            progress: Optional progress receiver.

        Returns:
            The :class:`RunOutcome`. Interruption (Ctrl-C) is reported with
            ``stop_reason == "interrupted"`` after every running trial was marked FAIL.
        """
