"""The run seam between the core and the execution engines.

The core (:func:`sigtune._study.run_study`) prepares a study and hands its trials to an
*engine*; engines (``sigtune.engines``) depend on this module and on the rest of the core, never
the other way round. This module holds everything the two sides share:

* :class:`StudyRef` - where the study lives (every worker opens it itself);
* :class:`RunPlan` - what one engine run executes (trial budget, sampler factory, pruner,
  failure policy, constraints, callbacks);
* :class:`RunOutcome` - how it ended;
* :class:`ProgressSink` - the receiver of progress updates;
* :class:`Engine` - the protocol an engine implements;
* the engine registry: :data:`BUILTIN_ENGINES` (import paths, resolved lazily so that the core
  never imports an engine module at import time), :func:`register_engine` and
  :func:`get_engine`.

Adding an engine is one module in ``engines/`` plus one registry line::

    register_engine("sequential", SequentialEngine)   # or "pkg.module:SequentialEngine"

and the engine reuses the per-trial execution of :mod:`sigtune.engines._trial` (running the
objective, validating values, failure reasons, constraints, callbacks).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from sigtune._exceptions import ConfigError

if TYPE_CHECKING:
    import optuna
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.trial import FrozenTrial

    from sigtune._storage import StorageRef

__all__ = [
    "BUILTIN_ENGINES",
    "ConstraintsFunction",
    "Engine",
    "EngineFactory",
    "ProgressSink",
    "RunOutcome",
    "RunPlan",
    "StopReason",
    "StudyRef",
    "TrialCallback",
    "TrialFunction",
    "engine_names",
    "get_engine",
    "register_engine",
]

TrialFunction = Callable[["optuna.Trial"], Any]
"""An Optuna-style objective: ``fn(trial) -> float | Sequence[float]``."""

ConstraintsFunction = Callable[["FrozenTrial"], Sequence[float]]
"""``fn(FrozenTrial) -> Sequence[float]``; every value ``<= 0`` means feasible."""

TrialCallback = Callable[["optuna.Study", "FrozenTrial"], None]
"""Optuna's callback signature ``callback(study, frozen_trial)``, called after a trial is recorded."""

StopReason = Literal["done", "timeout", "max_failures", "interrupted", "error", "stopped"]
"""Why a run ended; ``stopped``: ``study.stop()`` was called (e.g. by a callback)."""


@dataclass(frozen=True)
class StudyRef:
    """A study that every worker can open: its storage and its name."""

    storage: StorageRef
    study_name: str


@dataclass(frozen=True)
class RunPlan:
    """What one engine run executes.

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
        callbacks: ``callback(study, frozen_trial)`` called after each trial is recorded, in the
            process that ran the trial.
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
    callbacks: tuple[TrialCallback, ...] = ()
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


@runtime_checkable
class Engine(Protocol):
    """Executes the trials of one run.

    An engine runs exactly ``plan.n_trials`` trials (fewer only when the run stops early) and
    returns a :class:`RunOutcome`. The per-trial policy (failure reasons, ``trial_timeout``,
    ``max_failures``, constraints, callbacks, Ctrl-C) must behave the same in every engine: use
    :mod:`sigtune.engines._trial`.
    """

    name: str

    def run(
        self,
        study_ref: StudyRef,
        objective: TrialFunction,
        plan: RunPlan,
        *,
        n_jobs: int = 1,
        progress: ProgressSink | None = None,
    ) -> RunOutcome:
        """Run ``plan.n_trials`` trials of the study with ``n_jobs`` workers.

        Args:
            study_ref: Where the study lives; it exists already.
            objective: The trial function.
            plan: Budget, sampler, pruner, failure policy, constraints, callbacks.
            n_jobs: Number of workers.
            progress: Optional progress receiver.

        Returns:
            The :class:`RunOutcome`. Interruption (Ctrl-C) is reported with
            ``stop_reason == "interrupted"`` after every running trial was marked FAIL.
        """
        ...


EngineFactory = Callable[..., Engine]
"""``factory(**options) -> Engine`` (an engine class is a factory)."""

#: Engines shipped with sigtune: name -> ``"module:attribute"`` of the factory, imported only
#: when a run selects it.
BUILTIN_ENGINES: Mapping[str, str] = {
    "local": "sigtune.engines._local:LocalEngine",
    "ray": "sigtune.engines._ray:RayEngine",
}
_ENGINES: dict[str, EngineFactory | str] = {}


def register_engine(name: str, factory: EngineFactory | str) -> None:
    """Make an engine selectable by name (``engine=`` of :func:`sigtune.optimize`, ``engine:``
    of the run-config).

    Args:
        name: The engine name.
        factory: ``factory(**options) -> Engine`` (an engine class), or its
            ``"module:attribute"`` path, imported when the engine is first used.

    Raises:
        ConfigError: If the name is empty or the factory neither callable nor a path.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"engine name must be a non-empty string, got {name!r}")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise ConfigError(
            f"engine {name!r}: factory must be callable or a 'module:attribute' path, "
            f"got {factory!r}"
        )
    _ENGINES[name] = factory


def engine_names() -> list[str]:
    """Names usable as ``engine`` (registered and builtin)."""
    return sorted({*BUILTIN_ENGINES, *_ENGINES})


def get_engine(name: str, options: Mapping[str, Any] | None = None) -> Engine:
    """Build the engine registered as ``name``.

    Args:
        name: A name of :func:`engine_names`, or the ``"module:factory"`` path of an engine.
        options: Keyword arguments of the engine's factory.

    Raises:
        ConfigError: Unknown name, an engine that cannot be imported, or options its factory
            does not accept.
    """
    factory = _ENGINES.get(name) if isinstance(name, str) else None
    if factory is None and isinstance(name, str):
        factory = BUILTIN_ENGINES.get(name) or (name if ":" in name else None)
    if factory is None:
        raise ConfigError(f"unknown engine {name!r}; valid: {', '.join(engine_names())}")
    if isinstance(factory, str):
        from sigtune._imports import resolve_callable

        try:
            factory = resolve_callable(factory)
        except Exception as exc:
            raise ConfigError(f"engine {name!r} is unavailable: {exc}") from None
        if name in _ENGINES or name in BUILTIN_ENGINES:
            _ENGINES[name] = factory
    try:
        engine = factory(**dict(options or {}))
    except TypeError as exc:
        raise ConfigError(f"engine {name!r}: bad options {dict(options or {})!r}: {exc}") from None
    if not callable(getattr(engine, "run", None)):
        raise ConfigError(f"engine {name!r}: its factory returned {engine!r}, which has no run()")
    return engine
