"""Studies: :func:`optimize`, :func:`load_study` and the :class:`Study` wrapper.

:func:`optimize` is the Python twin of ``sigtune run``: it creates (or resumes) a study in its
storage, cleans up RUNNING trials left by dead processes, copies a warm-start study, enqueues known
points, runs the remaining trials with the local engine (``n_jobs`` worker processes) and returns a
:class:`Study`. ``n_trials`` is the total number of finished trials (COMPLETE + PRUNED + FAIL) wanted
in the study, so calling :func:`optimize` again with the same arguments resumes an interrupted run;
trials copied by ``warm_start`` do not count.

Best-trial selection is *feasible first* (:mod:`sigtune._best`): trials whose constraint values
are all ``<= 0`` are preferred; if no completed trial is feasible, the ones with the smallest total
violation ``sum(max(c, 0))`` are used.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sigtune import _best
from sigtune._best import constraint_violation, pareto_mask
from sigtune._exceptions import ConfigError, RunFailedError, StorageError
from sigtune._optuna_compat import study_id, study_storage
from sigtune._run import (
    ProgressSink,
    RunOutcome,
    RunPlan,
    StudyRef,
    TrialCallback,
    TrialFunction,
    get_engine,
)
from sigtune._settings import RunSettings, WarmStart
from sigtune._storage import (
    OWNER_KEY,
    StorageNotFoundError,
    StorageRef,
    StudyNotFoundError,
    handle_stale_running,
    indexed_best_trial,
    resolve_storage,
)
from sigtune._target import WARM_START_KEY, n_counted

if TYPE_CHECKING:
    import pandas as pd

    from sigtune._space import SearchSpace

__all__ = [
    "RunSettings",
    "Study",
    "bind_objective",
    "constraint_violation",
    "load_study",
    "optimize",
    "pareto_mask",
    "run_study",
]

log = logging.getLogger(__name__)

_WARM_DONE_KEY = "sigtune:warm_started_from"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_DEFAULT_STUDY_NAME = "sigtune"


@dataclasses.dataclass(frozen=True)
class Fork:
    """``force``: the run went to a new study because the old one had another space/objective.

    Attributes:
        old_name: The study that was not continued.
        new_name: The study that was run.
        run_dir: Its run directory (``None``: no run directory).
        reason: Why the old study could not be continued.
    """

    old_name: str
    new_name: str
    run_dir: Path | None
    reason: str

    def message(self) -> str:
        """One line for the user."""
        where = "" if self.run_dir is None else f" in run directory {self.run_dir}"
        return f"{self.reason}; --force: running the new study {self.new_name!r}{where}"


class Study:
    """A sigtune study: an :class:`optuna.Study` plus feasible-first selection and tables.

    Build it with :func:`optimize` or :func:`load_study`.

    Args:
        study: The Optuna study.
        storage: Where it lives (``None``: unknown, e.g. a plain Optuna study).
        space: The declarative search space, if the objective used one (``best_params`` then
            returns the full params dict, with fixed and inactive parameters).
        last_run: How the last :func:`optimize` call ended.
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        storage: StorageRef | None = None,
        space: SearchSpace | None = None,
        last_run: RunOutcome | None = None,
    ) -> None:
        self._study = study
        self._storage_ref = storage
        self._space = space
        self.last_run = last_run
        self.fork: Fork | None = None

    def __repr__(self) -> str:
        where = self._storage_ref.describe() if self._storage_ref else "?"
        return f"Study(name={self.study_name!r}, storage={where!r}, n_trials={len(self.trials)})"

    # ------------------------------------------------------------------ basics
    @property
    def optuna(self) -> optuna.Study:
        """The underlying :class:`optuna.Study`."""
        return self._study

    @property
    def study_name(self) -> str:
        """The study name."""
        return str(self._study.study_name)

    @property
    def storage(self) -> StorageRef | None:
        """Where the study lives."""
        return self._storage_ref

    @property
    def space(self) -> SearchSpace | None:
        """The declarative search space, if any."""
        return self._space

    @property
    def directions(self) -> list[str]:
        """``"minimize"`` / ``"maximize"`` per objective."""
        return [_direction_name(d) for d in self._study.directions]

    @property
    def n_objectives(self) -> int:
        """Number of objectives."""
        return len(self._study.directions)

    @property
    def trials(self) -> list[FrozenTrial]:
        """All trials (copies), in trial-number order."""
        return list(self._study.get_trials(deepcopy=True))

    def count(self) -> dict[str, int]:
        """Number of trials per state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING`` ...)."""
        counts: dict[str, int] = {s.name: 0 for s in TrialState}
        for t in self._study.get_trials(deepcopy=False):
            counts[t.state.name] += 1
        return counts

    def n_finished(self) -> int:
        """Finished trials that count towards ``n_trials`` (warm-start copies excluded)."""
        return _n_counted(self._study)

    # ------------------------------------------------------------------ best trials
    def _complete(self) -> list[FrozenTrial]:
        return list(self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def _no_complete_trial(self) -> RunFailedError:
        return RunFailedError(
            f"study {self.study_name!r} has no COMPLETE trial yet "
            f"({_describe_counts(self.count())}); look at the fail_reason of its trials "
            "(`sigtune export`) and fix the objective"
        )

    @property
    def best_trial(self) -> FrozenTrial:
        """The best COMPLETE trial, feasible first (single-objective studies; see
        :mod:`sigtune._best`).

        Raises:
            ConfigError: The study has several objectives (use :attr:`best_trials`).
            RunFailedError: No trial completed.
        """
        if self.n_objectives != 1:
            raise ConfigError(
                f"study {self.study_name!r} has {self.n_objectives} objectives: use best_trials "
                "or pareto_front() instead of best_trial/best_value/best_params"
            )
        best = self._indexed_best()
        if best is None:
            # One objective: the best value of the feasible-first pool, ties by the lowest
            # number (what _best.best_trial gives, in one pass).
            pool = _best.feasible_pool(self._complete())
            if not pool:
                raise self._no_complete_trial()
            sign = -1.0 if self._study.directions[0] == StudyDirection.MAXIMIZE else 1.0
            best = min(pool, key=lambda t: (sign * float(t.values[0]), t.number))
        return copy.deepcopy(best)

    def _indexed_best(self) -> FrozenTrial | None:
        """The database's indexed best trial (SQLite, PostgreSQL ...), if it is feasible: then
        it is the feasible-first best too, and no trial needs loading."""
        best = indexed_best_trial(study_storage(self._study), study_id(self._study))
        return best if best is not None and _best.is_feasible(best) else None

    @property
    def best_value(self) -> float:
        """Objective value of :attr:`best_trial`."""
        return float(self.best_trial.values[0])

    @property
    def best_params(self) -> dict[str, Any]:
        """Parameters of :attr:`best_trial` (the full params dict when a search space is used)."""
        return self.params_of(self.best_trial)

    def params_of(self, trial: FrozenTrial) -> dict[str, Any]:
        """The parameters of ``trial`` as the objective saw them."""
        if self._space is not None:
            try:
                return dict(self._space.params_from_trial(trial))
            except Exception:  # a trial from another space (warm start): raw params
                return dict(trial.params)
        return dict(trial.params)

    @property
    def best_trials(self) -> list[FrozenTrial]:
        """The Pareto front (non-dominated COMPLETE trials), feasible first, by trial number.

        For a single objective this is ``[best_trial]`` plus ties.
        """
        front = _best.best_trials(self._complete(), self._study.directions)
        return [copy.deepcopy(t) for t in front]

    def pareto_front(self) -> list[FrozenTrial]:
        """Alias of :attr:`best_trials`, sorted by the first objective value."""
        front = self.best_trials
        return sorted(front, key=lambda t: (float(t.values[0]), t.number))

    # ------------------------------------------------------------------ tables
    def trials_dataframe(self) -> pd.DataFrame:
        """One row per trial: number, state, value_0.., params_*, user_attrs_*, times, fail_reason.

        See :func:`sigtune._export.trials_table` for the columns.
        """
        from sigtune._export import trials_table

        return trials_table(self._study)


def _direction_name(d: StudyDirection) -> str:
    return "maximize" if d == StudyDirection.MAXIMIZE else "minimize"


def _describe_counts(counts: Mapping[str, int]) -> str:
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    return ", ".join(parts) if parts else "no trials"


def _n_counted(study: optuna.Study) -> int:
    return n_counted(study.get_trials(deepcopy=False, states=_FINISHED))


# ---------------------------------------------------------------------- optimize


def optimize(
    objective: Callable[..., Any],
    n_trials: int = 100,
    *,
    space: SearchSpace | Mapping[str, Any] | None = None,
    direction: str | None = None,
    directions: Sequence[str] | None = None,
    sampler: str | BaseSampler = "auto",
    sampler_options: Mapping[str, Any] | None = None,
    pruner: str | BasePruner | None = "none",
    pruner_options: Mapping[str, Any] | None = None,
    seed: int | None = None,
    storage: str | os.PathLike[str] | BaseStorage | None = None,
    study_name: str | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    n_jobs: int = 1,
    timeout: float | None = None,
    trial_timeout: float | None = None,
    max_failures: int | float | None = None,
    constraints: Callable[[FrozenTrial], Sequence[float]] | None = None,
    enqueue: Sequence[Mapping[str, Any]] | None = None,
    warm_start: WarmStart = None,
    on_stale_running: str = "fail",
    objective_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
    callbacks: Sequence[TrialCallback] | None = None,
    engine: str = "local",
    engine_options: Mapping[str, Any] | None = None,
    isolate: bool = False,
    force: bool = False,
) -> Study:
    """Create or resume a study and run it until it holds ``n_trials`` finished trials.

    Args:
        objective: ``fn(trial) -> float | Sequence[float]`` (Optuna style), or
            ``fn(params, trial)`` when ``space`` is given (``params`` from ``space.suggest``).
        n_trials: Finished trials (COMPLETE + PRUNED + FAIL) wanted in the study in total.
        space: Declarative search space (a :class:`~sigtune.SearchSpace` or its mapping).
        direction: ``"minimize"`` (default) or ``"maximize"``.
        directions: One direction per objective (multi-objective).
        sampler: A name for :func:`~sigtune.make_sampler` or an Optuna sampler.
        sampler_options: Options of a named sampler.
        pruner: A name for :func:`~sigtune.make_pruner`, an Optuna pruner or ``None``.
        pruner_options: Options of a named pruner.
        seed: Sampler seed. A sequential run (``n_jobs=1``) with a seed is reproducible;
            worker ``i`` of a parallel run uses ``seed + i``.
        storage: ``None`` (in-memory, or ``<run_dir>/study.journal`` with a run_dir or
            ``n_jobs > 1``), ``"journal:///path"``, ``"sqlite:///path"``, any SQLAlchemy URL or
            an Optuna storage (see :mod:`sigtune._storage`).
        study_name: Name of the study (default ``"sigtune"`` in a persistent storage).
        run_dir: Run directory (created); holds the embedded storage.
        n_jobs: Worker *processes* (``fork``; the objective may be a local function).
        timeout: Seconds for this run; no trial starts after it.
        trial_timeout: Seconds per trial; a trial over it is FAILED (``SIGALRM``; see
            :mod:`sigtune.engines._local` for its limits).
        max_failures: Stop with :class:`~sigtune.RunFailedError` when more than this many trials
            of this run failed (``int``), or more than this fraction once 10 finished
            (``float`` in (0, 1)).
        constraints: ``fn(FrozenTrial) -> Sequence[float]``, feasible when all ``<= 0``; the
            values are stored in the trial's ``system_attrs["constraints"]``, where Optuna's
            samplers (TPE, NSGA-II, GP) read them too. Without it, an objective may call
            ``trial.set_constraint(name, value)`` (also seen by the samplers) or store
            ``trial.set_user_attr("constraints", [...])`` (only used for best-trial selection).
        enqueue: Parameter dicts evaluated first (skipped if already in the study).
        warm_start: An earlier :class:`Study` / ``optuna.Study``, ``(storage, study_name)`` or
            ``{"storage": ..., "study_name": ...}`` (``storage=None``: the same storage). Its
            COMPLETE trials are copied once (marked ``system_attrs["sigtune:warm_start"]``).
        on_stale_running: ``"fail"`` or ``"requeue"``: RUNNING trials of dead processes on resume.
        objective_kwargs: Extra keyword arguments of the objective.
        progress: Show a progress bar on stderr (terminals only).
        callbacks: ``callback(study, frozen_trial)`` called after each trial is recorded
            (Optuna's signature: ``optuna.study.MaxTrialsCallback`` and optuna-integration's
            MLflow / W&B callbacks work unchanged). With ``n_jobs > 1`` they run in the worker
            process that ran the trial. See ``docs/dev/callbacks.md``.
        engine: Name of the execution engine (``"local"``; see :mod:`sigtune._run`).
        engine_options: Keyword arguments of the engine's factory.
        isolate: With ``n_jobs=1``, run each trial in a child process anyway: an objective
            that crashes its process (segfault, ``os._exit``) is a FAIL trial (retried once),
            and ``trial_timeout`` can end a trial stuck in C code.
        force: If the study exists with another search space, start a new study
            ``<name>-2`` (in ``<run_dir>-2``) instead of refusing (:attr:`Study.fork` says so).

    Returns:
        The :class:`Study`.

    Raises:
        ConfigError: Invalid arguments.
        StorageError: The storage cannot be opened.
        RunFailedError: ``max_failures`` was exceeded or worker processes failed.
        KeyboardInterrupt: Ctrl-C; running trials were marked FAIL (reason ``interrupted``).
    """
    if directions is not None and not list(directions):
        raise ConfigError("directions= must name at least one direction")
    settings = RunSettings(
        n_trials=n_trials,
        direction=direction,
        directions=tuple(directions or ()),
        sampler=sampler,
        sampler_options=sampler_options or {},
        pruner=pruner,
        pruner_options=pruner_options or {},
        seed=seed,
        storage=storage,
        study_name=study_name,
        run_dir=None if run_dir is None else Path(run_dir),
        n_jobs=n_jobs,
        timeout=timeout,
        trial_timeout=trial_timeout,
        max_failures=max_failures,
        constraints=constraints,
        enqueue=tuple(enqueue or ()),
        warm_start=warm_start,
        on_stale_running=on_stale_running,  # type: ignore[arg-type]
        callbacks=tuple(callbacks or ()),
        engine=engine,
        engine_options=engine_options or {},
        isolate=isolate,
        force=force,
    )
    space_obj = _as_space(space)
    return run_study(
        bind_objective(objective, space_obj, objective_kwargs),
        settings,
        space=space_obj,
        progress=progress,
    )


def bind_objective(
    objective: Callable[..., Any],
    space: SearchSpace | None = None,
    objective_kwargs: Mapping[str, Any] | None = None,
) -> TrialFunction:
    """The Optuna-style trial function of ``objective``.

    ``fn(params, trial, **kwargs)`` with a space (``params = space.suggest(trial)``),
    ``fn(trial, **kwargs)`` without; ``objective`` itself when there is nothing to bind.
    """
    kwargs = dict(objective_kwargs or {})
    if space is not None:
        return _SpaceObjective(objective, space, kwargs)
    if kwargs:
        return _KwargsObjective(objective, kwargs)
    return objective


class _SpaceObjective:
    """``fn(params, trial, **kwargs)`` as an Optuna-style objective."""

    def __init__(
        self, fn: Callable[..., Any], space: SearchSpace, kwargs: Mapping[str, Any]
    ) -> None:
        self.fn, self.space, self.kwargs = fn, space, dict(kwargs)

    def __call__(self, trial: optuna.Trial) -> Any:
        return self.fn(self.space.suggest(trial), trial, **self.kwargs)


class _KwargsObjective:
    """``fn(trial, **kwargs)`` as an Optuna-style objective."""

    def __init__(self, fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
        self.fn, self.kwargs = fn, dict(kwargs)

    def __call__(self, trial: optuna.Trial) -> Any:
        return self.fn(trial, **self.kwargs)


def _as_space(space: SearchSpace | Mapping[str, Any] | None) -> SearchSpace | None:
    if space is None:
        return None
    from sigtune._space import SearchSpace

    return SearchSpace.from_dict(space)


def run_study(
    trial_fn: TrialFunction,
    settings: RunSettings | int,
    *,
    space: SearchSpace | None = None,
    progress: bool | ProgressSink = False,
    require_existing: bool = False,
    **options: Any,
) -> Study:
    """Run a study as ``settings`` say, for an objective already bound to its space.

    Used by :func:`optimize`, the CLI and the pipelines. ``trial_fn`` is Optuna style;
    ``space`` is only used by the sampler (``auto``/``grid``), by ``enqueue`` and by
    :attr:`Study.best_params`. ``progress`` may also be a :class:`~sigtune._run.ProgressSink`.
    ``require_existing`` makes a missing study a :class:`~sigtune.StorageError` (``sigtune
    resume``). The engine is chosen by name (``settings.engine``) from the registry of
    :mod:`sigtune._run`.

    For backward compatibility ``settings`` may be ``n_trials`` with the other settings as
    keyword arguments (``run_study(fn, 20, sampler="random")``).
    """
    if not isinstance(settings, RunSettings):
        settings = RunSettings(n_trials=settings, **options)
    elif options:
        raise ConfigError(
            f"run_study: give either a RunSettings or keyword settings, not both "
            f"({', '.join(sorted(options))})"
        )
    s = settings
    dirs = list(s.directions)
    if s.run_dir is not None:
        _make_run_dir(s.run_dir)
    ref = resolve_storage(s.storage, run_dir=s.run_dir, n_jobs=s.n_jobs)
    if s.isolate and not ref.shareable:
        raise ConfigError(
            f"isolate=True runs the trials in a worker process that shares the study through its "
            f"storage, but storage {ref.describe()} can only be used in this process; give a "
            "storage URL (e.g. 'journal:///runs/x.journal') or a run_dir"
        )
    study_name = s.study_name
    if study_name is None and ref.kind != "memory":
        study_name = _DEFAULT_STUDY_NAME

    sampler_factory = _sampler_factory(
        s.sampler, s.sampler_options, s.seed, space, s.n_trials, len(dirs)
    )
    pruner_obj = _make_pruner(s.pruner, s.pruner_options)
    engine_options = dict(s.engine_options)
    if s.isolate and s.engine == "local":
        engine_options["isolate"] = True
    engine = get_engine(s.engine, engine_options)

    study = _create_or_load(ref, study_name, dirs, sampler_factory(0), pruner_obj, require_existing)
    fork: Fork | None = None
    reason = _mismatch(study, space, s.objective_key, ref)
    if reason is not None and not s.force:
        raise ConfigError(
            f"{reason}; give this run its own --study-name (or another run_dir), delete the old "
            "study, or pass --force (force=True) to start a new study"
        )
    if reason is not None:
        old_name = str(study.study_name)
        study, ref, new_run_dir = _fork(
            s, study_name, reason, space, dirs, sampler_factory(0), pruner_obj
        )
        fork = Fork(old_name, str(study.study_name), new_run_dir, reason)
        log.warning("%s", fork.message())
    ref_study = StudyRef(ref, str(study.study_name))
    if ref.shareable:
        handle_stale_running(study, policy=s.on_stale_running)
    if s.warm_start is not None:
        _warm_start(study, s.warm_start, ref)
    if s.enqueue:
        _enqueue(study, s.enqueue, space)

    already = _n_counted(study)
    remaining = s.n_trials - already
    outcome: RunOutcome | None = None
    if remaining > 0:
        plan = RunPlan(
            n_trials=remaining,
            sampler_factory=sampler_factory,
            pruner=pruner_obj,
            timeout=s.timeout,
            trial_timeout=s.trial_timeout,
            max_failures=s.max_failures,
            constraints=s.constraints,
            maximize=s.maximize,
            callbacks=s.callbacks,
            study_n_trials=s.n_trials if ref.shareable else None,
        )
        if progress is True:
            from sigtune._progress import RunProgress

            with RunProgress(remaining, str(study.study_name)) as bar:
                bar.start(s.n_trials, already)
                outcome = engine.run(ref_study, trial_fn, plan, n_jobs=s.n_jobs, progress=bar)
        else:
            sink = progress if isinstance(progress, ProgressSink) else None
            if sink is not None:
                sink.start(s.n_trials, already)
            outcome = engine.run(ref_study, trial_fn, plan, n_jobs=s.n_jobs, progress=sink)
    result = Study(study, storage=ref, space=space, last_run=outcome)
    result.fork = fork
    if outcome is not None:
        _raise_for_outcome(outcome, s.max_failures, result)
    return result


def _raise_for_outcome(outcome: RunOutcome, max_failures: int | float | None, study: Study) -> None:
    if outcome.stop_reason == "interrupted":
        raise KeyboardInterrupt(
            f"interrupted after {outcome.n_finished} trial(s) of this run; running trials were "
            f"marked FAIL (reason 'interrupted')"
        )
    if outcome.stop_reason == "max_failures":
        raise RunFailedError(
            f"run of study {study.study_name!r} stopped: {outcome.n_failed} of "
            f"{outcome.n_finished} trials failed (max_failures={max_failures}); last reason: "
            f"{outcome.last_fail_reason}; fix the objective or raise max_failures"
        )
    if outcome.stop_reason == "error":
        raise RunFailedError(f"run of study {study.study_name!r} failed: {outcome.error}")


def _sampler_factory(
    sampler: str | BaseSampler,
    options: Mapping[str, Any] | None,
    seed: int | None,
    space: SearchSpace | None,
    n_trials: int,
    n_objectives: int,
) -> Callable[[int], BaseSampler]:
    if isinstance(sampler, BaseSampler):
        if options:
            raise ConfigError("sampler_options only apply to a sampler given by name")
        return _InstanceSamplers(sampler)
    if not isinstance(sampler, str):
        raise ConfigError(
            f"sampler must be a name or an optuna sampler, got {type(sampler).__name__}"
        )
    from sigtune._samplers import make_sampler

    make_sampler(
        sampler,
        seed=seed,
        options=options,
        space=space,
        n_trials=n_trials,
        n_objectives=n_objectives,
    )  # validate now, in the parent process
    return _NamedSamplers(sampler, dict(options or {}), seed, space, n_trials, n_objectives)


class _NamedSamplers:
    """Worker ``i`` gets ``make_sampler(name, seed=seed + i, ...)``."""

    def __init__(
        self,
        name: str,
        options: dict[str, Any],
        seed: int | None,
        space: SearchSpace | None,
        n_trials: int,
        n_objectives: int,
    ) -> None:
        self.name, self.options, self.seed = name, options, seed
        self.space, self.n_trials, self.n_objectives = space, n_trials, n_objectives

    def __call__(self, worker: int) -> BaseSampler:
        from sigtune._samplers import make_sampler

        seed = None if self.seed is None else self.seed + worker
        return make_sampler(
            self.name,
            seed=seed,
            options=self.options,
            space=self.space,
            n_trials=self.n_trials,
            n_objectives=self.n_objectives,
        )


class _InstanceSamplers:
    """Worker 0 uses the given sampler; other workers a reseeded copy."""

    def __init__(self, sampler: BaseSampler) -> None:
        self.sampler = sampler

    def __call__(self, worker: int) -> BaseSampler:
        if worker == 0:
            return self.sampler
        other = copy.deepcopy(self.sampler)
        other.reseed_rng()
        return other


def _make_pruner(pruner: str | BasePruner | None, options: Mapping[str, Any] | None) -> BasePruner:
    if isinstance(pruner, BasePruner):
        if options:
            raise ConfigError("pruner_options only apply to a pruner given by name")
        return pruner
    from sigtune._pruners import make_pruner

    return make_pruner("none" if pruner is None else pruner, options)


def _create_or_load(
    ref: StorageRef,
    study_name: str | None,
    directions: list[str],
    sampler: BaseSampler,
    pruner: BasePruner,
    require_existing: bool,
) -> optuna.Study:
    try:
        storage = ref.open(create=not require_existing)
    except StorageNotFoundError as exc:
        raise StorageNotFoundError(f"{exc}: start the study with `sigtune run` first") from None
    if require_existing:
        names = [s.study_name for s in storage.get_all_studies()]
        if study_name not in names:
            raise StudyNotFoundError(
                f"no study {study_name!r} in storage {ref.describe()} (found: "
                f"{', '.join(names) or 'none'}); start it with `sigtune run` first"
            )
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            directions=cast(Any, directions),
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except StorageError:
        raise
    except Exception as exc:
        raise StorageError(
            f"cannot create or load study {study_name!r} in {ref.describe()}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    existing = [_direction_name(d) for d in study.directions]
    if existing != directions:
        raise ConfigError(
            f"study {study_name!r} in {ref.describe()} has directions {existing}, but this run "
            f"asks for {directions}; use another study_name or the same directions"
        )
    return study


_SPACE_KEY = "sigtune:space"
_OBJECTIVE_KEY = "sigtune:objective"


def _mismatch(
    study: optuna.Study, space: SearchSpace | None, objective_key: str | None, ref: StorageRef
) -> str | None:
    """Why ``study`` cannot take trials of this run (another search space or objective), or
    ``None``; then the space and objective fingerprints are stored in the study (first run)."""
    storage, sid = study_storage(study), study_id(study)
    attrs = storage.get_study_system_attrs(sid)
    mine = None if space is None else {name: spec.kind for name, spec in space.params.items()}
    stored = attrs.get(_SPACE_KEY)
    if mine is not None and stored is not None and stored != mine:

        def text(d: Mapping[str, Any]) -> str:
            return ", ".join(f"{k} ({v})" for k, v in d.items())

        return (
            f"study {study.study_name!r} in {ref.describe()} was run with another search space "
            f"[{text(stored)}] than this one [{text(mine)}]"
        )
    stored_objective = attrs.get(_OBJECTIVE_KEY)
    if objective_key is not None and stored_objective not in (None, objective_key):
        return (
            f"study {study.study_name!r} in {ref.describe()} was run with another objective "
            f"(the run-config's objective: section changed)"
        )
    if mine is not None and stored is None:
        storage.set_study_system_attr(sid, _SPACE_KEY, mine)
    if objective_key is not None and stored_objective is None:
        storage.set_study_system_attr(sid, _OBJECTIVE_KEY, objective_key)
    return None


def _fork(
    s: RunSettings,
    study_name: str | None,
    reason: str,
    space: SearchSpace | None,
    dirs: list[str],
    sampler: BaseSampler,
    pruner: BasePruner,
) -> tuple[optuna.Study, StorageRef, Path | None]:
    """``force``: the first study ``<name>-2``, ``<name>-3`` ... (in ``<run_dir>-2`` ...) that is
    new or was run with this space and objective (so forcing again resumes it)."""
    base = study_name or _DEFAULT_STUDY_NAME
    for k in range(2, 1000):
        name = f"{base}-{k}"
        run_dir = None if s.run_dir is None else s.run_dir.with_name(f"{s.run_dir.name}-{k}")
        if run_dir is not None:
            _make_run_dir(run_dir)
        ref = resolve_storage(s.storage, run_dir=run_dir, n_jobs=s.n_jobs)
        try:
            study = _create_or_load(ref, name, dirs, sampler, pruner, False)
        except ConfigError:  # another number of objectives / directions
            continue
        if _mismatch(study, space, s.objective_key, ref) is None:
            return study, ref, run_dir
    raise ConfigError(f"{reason}; --force found no free study name {base}-2 ... {base}-999")


def _make_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from sigtune._cli_storage import os_error_message

        raise ConfigError(
            f"cannot create the run directory {run_dir}: {os_error_message(exc)}"
        ) from None


def _open_source(warm_start: WarmStart, ref: StorageRef) -> optuna.Study:
    if isinstance(warm_start, Study):
        return warm_start.optuna
    if isinstance(warm_start, optuna.Study):
        return warm_start
    if isinstance(warm_start, Mapping):
        src_storage, name = warm_start.get("storage"), warm_start.get("study_name")
    elif isinstance(warm_start, tuple | list) and len(warm_start) == 2:
        src_storage, name = warm_start
    elif hasattr(warm_start, "study_name") and hasattr(warm_start, "storage"):  # WarmStartConfig
        src_storage, name = warm_start.storage, warm_start.study_name
    else:
        raise ConfigError(
            "warm_start must be a Study, an optuna.Study, (storage, study_name) or "
            f"{{'storage': ..., 'study_name': ...}}, got {warm_start!r}"
        )
    if not isinstance(name, str):
        raise ConfigError(f"warm_start.study_name must be a string, got {name!r}")
    src_ref = ref if src_storage is None else resolve_storage(src_storage)
    try:
        return optuna.load_study(study_name=name, storage=src_ref.open(track_owner=False))
    except KeyError as exc:
        raise ConfigError(f"warm_start: no study {name!r} in storage {src_ref.describe()}") from exc


def _warm_start(study: optuna.Study, warm_start: WarmStart, ref: StorageRef) -> int:
    src = _open_source(warm_start, ref)
    if len(src.directions) != len(study.directions):
        raise ConfigError(
            f"warm_start: study {src.study_name!r} has {len(src.directions)} objective(s), "
            f"this study {len(study.directions)}"
        )
    storage = study_storage(study)
    done = storage.get_study_system_attrs(study_id(study)).get(_WARM_DONE_KEY, [])
    if src.study_name in done:
        return 0
    copies = []
    for t in src.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        system_attrs = {k: v for k, v in t.system_attrs.items() if k != OWNER_KEY}
        system_attrs[WARM_START_KEY] = src.study_name
        copies.append(
            optuna.trial.create_trial(
                params=t.params,
                distributions=t.distributions,
                values=t.values,
                user_attrs=t.user_attrs,
                system_attrs=system_attrs,
                intermediate_values=t.intermediate_values,
            )
        )
    study.add_trials(copies)
    storage.set_study_system_attr(study_id(study), _WARM_DONE_KEY, [*done, src.study_name])
    log.info("warm start: copied %d trials of study %r", len(copies), src.study_name)
    return len(copies)


def _enqueue(
    study: optuna.Study, points: Sequence[Mapping[str, Any]], space: SearchSpace | None
) -> None:
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise ConfigError(
                f"enqueue[{i}] must be a mapping of parameter -> value, got {point!r}"
            )
        params = dict(point)
        if space is not None:
            try:
                params = space.to_optuna_params(params)
            except ConfigError as exc:
                raise ConfigError(f"enqueue[{i}]: {exc}") from exc
        study.enqueue_trial(params, skip_if_exists=True)


def load_study(
    study_name: str,
    storage: str | os.PathLike[str] | BaseStorage | StorageRef,
    *,
    space: SearchSpace | Mapping[str, Any] | None = None,
    opened: BaseStorage | None = None,
) -> Study:
    """Open an existing study; never creates a storage file.

    Args:
        study_name: Its name.
        storage: Its storage (URL, path or Optuna storage; see :func:`optimize`).
        space: The declarative search space, for :attr:`Study.best_params`.
        opened: The storage already opened from ``storage`` (so it is read once).

    Raises:
        StorageError: No such storage or study (the message lists the studies found).
    """
    ref = resolve_storage(storage)
    backend = opened if opened is not None else ref.open(track_owner=False, create=False)
    names = [s.study_name for s in backend.get_all_studies()]
    if study_name not in names:
        raise StudyNotFoundError(
            f"no study {study_name!r} in storage {ref.describe()} (found: "
            f"{', '.join(names) or 'none'})"
        )
    study = optuna.load_study(study_name=study_name, storage=backend)
    return Study(study, storage=ref, space=_as_space(space))
