"""Per-trial execution shared by every engine.

An engine decides *where* trials run (this process, worker processes, a cluster) and how many
run at once; *what happens in one trial* is defined here, once, so that every engine records the
same thing:

1. :func:`open_study` opens the study through its :class:`~sigtune._storage.StorageRef`, whose
   storage stamps the running process into every new trial (the owner stamp that lets a resumed
   run find RUNNING trials of dead processes);
2. :func:`run_trial` asks a trial, runs the objective under the :class:`TrialGuard` (per-trial
   timeout, Ctrl-C), validates the returned values (:func:`validate_values`), evaluates the
   constraints, tells the result - a FAILED trial with its ``fail_reason`` (and the traceback of
   the exception in ``system_attrs["sigtune:traceback"]``) - and calls the user callbacks
   ``callback(study, frozen_trial)`` after the trial is recorded.

A minimal sequential engine is::

    guard = TrialGuard(plan.trial_timeout)
    study = open_study(study_ref, plan, worker=0)
    with guard.installed(), callbacks_enabled(study):
        for _ in range(plan.n_trials):
            record = run_trial(study, objective, plan, guard)
            if record.stop is not None:
                break
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import os
import signal
import time
import traceback
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.trial import TrialState

from sigtune._best import is_feasible
from sigtune._exceptions import TrialTimeoutError
from sigtune._optuna_compat import (
    begin_callbacks,
    end_callbacks,
    heartbeat,
    live_record,
    sampler_sets_constraints,
    stop_requested,
    study_storage,
    tell,
    trial_id,
)
from sigtune._run import RunPlan, StopReason, StudyRef, TrialFunction
from sigtune._storage import FAIL_REASON_KEY, FAIL_TRACEBACK_KEY
from sigtune._target import mark_uncounted
from sigtune._trial_logs import LOG_CHARS, LOG_KEY, OutputCapture

__all__ = [
    "CONSTRAINTS_KEY",
    "INTERRUPTED_REASON",
    "TRACEBACK_KEY",
    "TrialGuard",
    "TrialRecord",
    "callbacks_enabled",
    "fail_reason",
    "open_study",
    "run_trial",
    "validate_values",
]

INTERRUPTED_REASON = "interrupted"
CONSTRAINTS_KEY = "constraints"  # Optuna's system-attr key read by its samplers and best_trials
TRACEBACK_KEY = FAIL_TRACEBACK_KEY
_TRACEBACK_CHARS = 4000


class TrialRecord(NamedTuple):
    """What :func:`run_trial` recorded.

    Attributes:
        state: COMPLETE, PRUNED or FAIL.
        value: First objective value of a COMPLETE, feasible trial (``None`` otherwise: the
            progress line's "best" is the best feasible value, as ``sigtune best`` reports).
        reason: ``fail_reason`` of a FAILED trial.
        stop: Set when the run must stop after this trial: ``"interrupted"`` (Ctrl-C),
            ``"stopped"`` (``study.stop()`` was called by the objective or a callback) or
            ``"error"`` (a callback raised; see ``error``).
        error: The message of a failed callback.
    """

    state: TrialState
    value: float | None
    reason: str | None
    stop: StopReason | None = None
    error: str | None = None


class _TimeoutExit(BaseException):
    """Raised again and again in an objective that swallowed its TrialTimeoutError."""


class TrialGuard:
    """Signal handling of one process: SIGINT and SIGALRM interrupt only the objective.

    ``SIGALRM`` (``setitimer``) implements ``trial_timeout``: it raises
    :class:`~sigtune.TrialTimeoutError` inside the objective, then every 0.2 s a
    ``BaseException`` that ``except Exception`` cannot keep, and the trial is FAILED whatever the
    objective returns. Handlers can only be installed from the main thread (:meth:`installed`); a
    guard that is not installed must not be given a ``trial_timeout``.

    ``slot``: in a worker process, ``(array, i)`` of shared doubles where the worker publishes
    its state for the parent's watchdog (:mod:`sigtune.engines._workers`): ``0`` idle, ``-1`` a
    trial claimed, ``> 0`` the ``time.monotonic()`` at which the objective started. A worker also
    ends the processes a failed trial left behind.
    """

    def __init__(self, trial_timeout: float | None, slot: tuple[Any, ...] | None = None) -> None:
        self.trial_timeout = trial_timeout
        self.in_objective = False
        self.interrupted = False
        self.timed_out = False
        self.slot = slot
        self.output = OutputCapture()  # the objective's stdout/stderr, one trial at a time
        self._old: dict[int, Any] = {}

    def mark(self, value: float) -> None:
        """Publish this worker's state to the parent (no-op outside worker processes)."""
        if self.slot is not None:
            self.slot[0][self.slot[1]] = value

    def mark_trial(self, tid: int) -> None:
        """Publish the storage id of this worker's trial, so the parent can fail the trial of a
        worker that died even if its owner stamp was overwritten (two workers popping the same
        enqueued trial)."""
        if self.slot is not None and len(self.slot) > 2:
            self.slot[2][self.slot[1]] = tid

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        if self.in_objective:
            self.in_objective = False
            raise KeyboardInterrupt

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.in_objective:
            first = not self.timed_out
            self.timed_out = True
            signal.setitimer(signal.ITIMER_REAL, 0.2)  # stays armed until the objective leaves
            if first:
                raise TrialTimeoutError(f"trial exceeded trial_timeout={self.trial_timeout:g}s")
            raise _TimeoutExit

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Install the handlers for the duration of the block (main thread only).

        With a ``trial_timeout`` the block uses the process's real-time interval timer; a timer
        that was armed before (the caller's own ``signal.alarm``/``setitimer``, pytest-timeout's)
        is armed again at the end with the time it had left, after its handler is back.
        """
        outer = (0.0, 0.0)
        began = time.monotonic()
        if self.trial_timeout is not None:
            outer = signal.getitimer(signal.ITIMER_REAL)
        self._old[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        if self.trial_timeout is not None:
            self._old[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_alarm)
        try:
            yield
        finally:
            if self.trial_timeout is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
            for sig, handler in self._old.items():
                signal.signal(sig, handler)
            self._old.clear()
            if outer[0] > 0:  # due meanwhile: it fires at once, into its own handler
                left = outer[0] - (time.monotonic() - began)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), outer[1])


def validate_values(result: Any, n_objectives: int) -> list[float] | str:
    """Check what an objective returned.

    Args:
        result: The return value.
        n_objectives: Number of objectives of the study.

    Returns:
        The values as floats, or the failure reason (a string) if they are unusable.

    Example:
        >>> validate_values(0.5, 1)
        [0.5]
        >>> validate_values(float("nan"), 1)
        'objective returned nan (not a finite number)'
        >>> validate_values((1, 2.5), 2)
        [1.0, 2.5]
    """
    if type(result) is float and n_objectives == 1:  # hot path
        if math.isfinite(result):
            return [result]
        return f"objective returned {result!r} (not a finite number)"
    if isinstance(result, np.ndarray):
        if result.ndim > 1:
            return f"objective returned an array of shape {result.shape}; expected a float"
        result = result.tolist()
    items: Sequence[Any]
    if isinstance(result, numbers.Real) and not isinstance(result, bool | np.bool_):
        items = [result]
    elif isinstance(result, Sequence) and not isinstance(result, str | bytes):
        items = result
    else:
        expected = "a float" if n_objectives == 1 else f"a sequence of {n_objectives} floats"
        return f"objective returned {type(result).__name__} ({result!r:.80}); expected {expected}"
    if len(items) != n_objectives:
        return (
            f"objective returned {len(items)} value(s) but the study has {n_objectives} "
            f"objective(s)"
        )
    values: list[float] = []
    for i, v in enumerate(items):
        if not isinstance(v, numbers.Real) or isinstance(v, bool | np.bool_):
            return (
                f"objective returned {type(v).__name__} ({v!r:.80}) for value {i}; expected a float"
            )
        f = float(v)
        if not math.isfinite(f):
            where = "" if n_objectives == 1 else f" for value {i}"
            return f"objective returned {f!r}{where} (not a finite number)"
        values.append(f)
    return values


def fail_reason(exc: BaseException) -> str:
    """The one-line ``fail_reason`` of an exception: ``"Type: message"``.

    Example:
        >>> fail_reason(ValueError("x must be > 0"))
        'ValueError: x must be > 0'
    """
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _traceback_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(text) > _TRACEBACK_CHARS:  # keep the innermost frames, where the error is
        text = "...\n" + text[-_TRACEBACK_CHARS:]
    return text


def open_study(study_ref: StudyRef, plan: RunPlan, worker: int) -> optuna.Study:
    """Open the study in this process, with worker ``worker``'s sampler and the plan's pruner.

    The storage comes from :meth:`~sigtune._storage.StorageRef.open`, which stamps this process
    as the owner of every trial it creates.
    """
    return optuna.load_study(
        study_name=study_ref.study_name,
        storage=study_ref.storage.open(),
        sampler=plan.sampler_factory(worker),
        pruner=plan.pruner,
    )


@contextlib.contextmanager
def callbacks_enabled(study: optuna.Study) -> Iterator[None]:
    """Let the objective and callbacks call ``study.stop()`` while trials run in this block."""
    begin_callbacks(study)
    try:
        yield
    finally:
        end_callbacks(study)


def run_trial(
    study: optuna.Study,
    objective: TrialFunction,
    plan: RunPlan,
    guard: TrialGuard,
    n_objectives: int | None = None,
) -> TrialRecord:
    """Ask one trial, run the objective, tell the result and call the callbacks.

    Args:
        study: The study, opened in this process (:func:`open_study`).
        objective: The trial function.
        plan: Its ``trial_timeout``, ``constraints`` and ``callbacks`` apply.
        guard: The signal guard of this process (its handlers must be installed when
            ``plan.trial_timeout`` is set).
        n_objectives: ``len(study.directions)`` (pass it to save the lookup per trial).

    Returns:
        The :class:`TrialRecord`. Exceptions of the objective become FAILED trials; a callback
        that raises makes the record's ``stop == "error"``.
    """
    if n_objectives is None:
        n_objectives = len(study.directions)
    trial = study.ask()
    guard.mark_trial(trial_id(trial))
    reason: str | None = None
    result: Any = None
    state = TrialState.COMPLETE
    failure: BaseException | None = None
    timeout = plan.trial_timeout
    guard.timed_out = False
    output = guard.output
    try:
        try:
            guard.in_objective = True
            if guard.interrupted:
                raise KeyboardInterrupt
            if timeout is not None:
                guard.mark(time.monotonic())
                signal.setitimer(signal.ITIMER_REAL, timeout)
            with heartbeat(study, trial), output:  # heartbeat: server databases
                result = objective(trial)
        finally:
            guard.in_objective = False
            if timeout is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                guard.mark(-1.0)
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except KeyboardInterrupt:
        guard.interrupted = True
        state, reason = TrialState.FAIL, INTERRUPTED_REASON
        mark_uncounted(study_storage(study), trial_id(trial), "interrupted")
    except _TimeoutExit:
        state = TrialState.FAIL  # the reason is set below
    except SystemExit as exc:  # sys.exit() in the objective ends the trial, not the run
        state, reason = TrialState.FAIL, f"objective called sys.exit({exc.code!r})"
    except Exception as exc:  # the objective's failure becomes a FAILED trial
        state, reason, failure = TrialState.FAIL, fail_reason(exc), exc
    if guard.timed_out:  # also when the objective caught the TrialTimeoutError and returned
        state, reason = (
            TrialState.FAIL,
            f"TrialTimeoutError: trial exceeded trial_timeout={timeout:g}s",
        )
    if state == TrialState.FAIL and guard.slot is not None:
        end_children()  # processes the failed objective left behind (worker processes only)

    values: list[float] | None = None
    constraints: list[float] | None = None
    if state == TrialState.COMPLETE:
        checked = validate_values(result, n_objectives)
        if isinstance(checked, str):
            state, reason = TrialState.FAIL, checked
        else:
            values = checked
            if plan.constraints is not None:
                constraints, reason = _constraints(study, trial, values, plan)
                if reason is not None:
                    state, values = TrialState.FAIL, None

    log = output.text()
    if log:  # only when the objective printed: no extra storage write per trial otherwise
        study_storage(study).set_trial_system_attr(trial_id(trial), LOG_KEY, log[-LOG_CHARS:])
    # The finished trial is read back from the storage (a query on a database) only for the
    # callbacks, or where the trial's own record cannot tell the progress value (feasibility).
    read_back = bool(plan.callbacks)
    value = None
    if state == TrialState.FAIL:
        storage = study_storage(study)
        storage.set_trial_user_attr(trial_id(trial), FAIL_REASON_KEY, reason)
        if failure is not None:
            storage.set_trial_system_attr(trial_id(trial), TRACEBACK_KEY, _traceback_text(failure))
        frozen = tell(study, trial, state=TrialState.FAIL, read_back=read_back)
    elif state == TrialState.PRUNED:
        frozen = tell(study, trial, state=TrialState.PRUNED, read_back=read_back)
    else:
        assert values is not None
        # A sampler with a constraints_func stores the trial's constraints when it is told.
        own = not read_back and not sampler_sets_constraints(study.sampler)
        record = live_record(trial) if own else None
        frozen = tell(study, trial, values, read_back=record is None)
        if frozen is not None:
            value = progress_value(frozen)
        else:
            assert record is not None
            value = _live_progress_value(record, values, constraints)
    if plan.callbacks:
        assert frozen is not None
        error = _call_callbacks(study, frozen, plan)
        if error is not None:
            return TrialRecord(state, value, reason, "error", error)
    if guard.interrupted:
        return TrialRecord(state, value, reason, "interrupted")
    if stop_requested(study):
        return TrialRecord(state, value, reason, "stopped")
    return TrialRecord(state, value, reason)


def progress_value(frozen: optuna.trial.FrozenTrial) -> float | None:
    """The first value of a COMPLETE trial for the run's progress "best", ``None`` if infeasible
    (constraints from the run's ``constraints`` or set by the objective, as in :mod:`sigtune._best`)."""
    values = frozen.values
    if values is None:
        return None
    # Without any constraint key the trial is feasible: skip is_feasible's parsing (hot path).
    if _has_constraints(frozen) and not is_feasible(frozen):
        return None
    return float(values[0])


def _live_progress_value(
    record: optuna.trial.FrozenTrial, values: list[float], constraints: list[float] | None
) -> float | None:
    """:func:`progress_value` of a trial just told COMPLETE with ``values``, from the running
    trial's own record (:func:`~sigtune._optuna_compat.live_record`: its user attrs and the
    constraints it set) and the run's ``constraints`` stored for it: no storage read."""
    if constraints is None and not _has_constraints(record):
        return float(values[0])
    view = copy.copy(record)
    if constraints is not None:
        view.system_attrs = {**record.system_attrs, CONSTRAINTS_KEY: constraints}
    view.values = values
    return progress_value(view)


def _has_constraints(frozen: optuna.trial.FrozenTrial) -> bool:
    return "constraints" in frozen.user_attrs or any(
        key.startswith(CONSTRAINTS_KEY) for key in frozen.system_attrs
    )


def end_children() -> None:
    """Kill the descendants of this process (after a failed trial in a worker process)."""

    from sigtune.engines._workers import descendants, kill_tree

    kill_tree(descendants(os.getpid()))


def _call_callbacks(study: optuna.Study, frozen: Any, plan: RunPlan) -> str | None:
    for callback in plan.callbacks:
        try:
            callback(study, copy.deepcopy(frozen))
        except Exception as exc:
            name = getattr(callback, "__qualname__", None) or type(callback).__name__
            return f"callback {name} failed on trial {frozen.number}: {fail_reason(exc)}"
    return None


def _store_constraints(
    study: optuna.Study, trial: optuna.Trial, values: list[float], plan: RunPlan
) -> str | None:
    return _constraints(study, trial, values, plan)[1]


def _constraints(
    study: optuna.Study, trial: optuna.Trial, values: list[float], plan: RunPlan
) -> tuple[list[float] | None, str | None]:
    """Evaluate the run's constraints on the trial and store them: ``(constraints, None)``, or
    ``(None, fail_reason)`` when the constraints function fails or returns NaN."""
    assert plan.constraints is not None
    storage = study_storage(study)
    frozen = copy.copy(storage.get_trial(trial_id(trial)))
    frozen.values = values
    try:
        raw = plan.constraints(frozen)
        constraints = [float(c) for c in raw]
    except Exception as exc:
        return None, f"constraints function failed: {fail_reason(exc)}"
    if any(math.isnan(c) for c in constraints):
        return None, f"constraints function returned NaN: {constraints}"
    storage.set_trial_system_attr(trial_id(trial), CONSTRAINTS_KEY, constraints)
    return constraints, None
