"""Local execution: in-process for ``n_jobs=1``, N worker processes for ``n_jobs > 1``.

Workers are separate *processes* (objectives are CPU-bound Python), started with the ``fork``
start method: the objective, even a local function or a lambda, reaches the workers without being
pickled. Each worker opens the study's storage itself and asks/tells trials with its own sampler.

Exact trial count: before asking a trial, a worker claims a ticket from a counter shared by all
workers of the run (a ``multiprocessing`` value under a lock), so ``n_jobs=8, n_trials=4000`` gives
exactly 4000 trials. Each claimed ticket becomes exactly one finished trial; if a worker dies,
its RUNNING trial is marked FAIL by the parent when the run ends.

Per-trial timeout: ``SIGALRM`` (``setitimer``) in the main thread of the process running the
trial raises :class:`~sigtune.TrialTimeoutError` inside the objective. It interrupts pure-Python
code at the next bytecode; a long call into C (one big NumPy / BLAS operation, a blocking read) is
interrupted only when it returns, and an objective that swallows every exception (``except
Exception:``) also swallows the timeout. In-process runs therefore need to be started from the main
thread when ``trial_timeout`` is set.

Ctrl-C (SIGINT): the signal only interrupts the objective. A worker outside the objective finishes
its storage operation first, so the storage stays consistent; the trial becomes FAILED with reason
``"interrupted"`` and the run reports ``stop_reason == "interrupted"``. The parent forwards SIGINT
to its workers (so ``kill -INT <parent>`` behaves like Ctrl-C in a terminal).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import math
import multiprocessing as mp
import numbers
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from sigtune._exceptions import ConfigError, TrialTimeoutError
from sigtune._storage import FAIL_REASON_KEY
from sigtune._target import StudyTarget, mark_uncounted
from sigtune.engines._base import (
    Engine,
    ProgressSink,
    RunOutcome,
    RunSettings,
    StopReason,
    StudyRef,
    TrialFunction,
)
from sigtune.engines._workers import (
    death_reason,
    descendants,
    fail_dead_worker_trials,
    kill_tree,
)

__all__ = ["LocalEngine", "validate_values"]

INTERRUPTED_REASON = "interrupted"
_CONSTRAINTS_KEY = "constraints"  # Optuna's system-attr key read by its samplers and best_trials
_REASON_BYTES = 1000
_STOP_CODES: dict[int, StopReason] = {
    0: "done",
    1: "timeout",
    2: "max_failures",
    3: "interrupted",
    4: "error",
}
_STOP_NUMBERS = {v: k for k, v in _STOP_CODES.items()}
_POLL_S = 0.1


class _Box:
    """A plain value holder with the ``.value`` interface of ``multiprocessing.RawValue``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _NoLock:
    """The lock of an in-process run: nothing to synchronise."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Shared:
    """Counters of one run.

    With a ``multiprocessing`` context: fork-inherited raw shared memory and one lock, shared by
    the worker processes. Without (``ctx=None``, in-process runs): plain Python values and no
    lock, which keeps the per-trial cost of the sequential hot path minimal.
    """

    def __init__(self, ctx: Any, settings: RunSettings) -> None:
        if ctx is None:
            self.lock: Any = _NoLock()
            raw: Any = lambda _code, value: _Box(value)  # noqa: E731
            self.reason: Any = _Box(b"")
            self.error: Any = _Box(b"")
        else:
            self.lock = ctx.Lock()
            raw = ctx.RawValue
            self.reason = ctx.RawArray("c", _REASON_BYTES)
            self.error = ctx.RawArray("c", _REASON_BYTES)
        self.tickets = raw("q", settings.n_trials)
        self.finished = raw("q", 0)
        self.complete = raw("q", 0)
        self.pruned = raw("q", 0)
        self.failed = raw("q", 0)
        self.best = raw("d", math.nan)
        self.stop = raw("i", 0)
        self.max_failures = settings.max_failures
        self.sign = -1.0 if settings.maximize[0] else 1.0
        self.single = len(settings.maximize) == 1

    def claim(self) -> bool:
        with self.lock:
            if self.stop.value or self.tickets.value <= 0:
                return False
            self.tickets.value -= 1
            return True

    def request_stop(self, reason: StopReason, error: str | None = None) -> None:
        with self.lock:
            if not self.stop.value:
                self.stop.value = _STOP_NUMBERS[reason]
            if error is not None:
                self.error.value = error.encode("utf-8", "replace")[: _REASON_BYTES - 1]

    def record(self, state: TrialState, value: float | None, reason: str | None) -> None:
        with self.lock:
            self.finished.value += 1
            if state == TrialState.COMPLETE:
                self.complete.value += 1
                if self.single and value is not None:
                    best = self.best.value
                    if best != best or self.sign * value < self.sign * best:
                        self.best.value = value
            elif state == TrialState.PRUNED:
                self.pruned.value += 1
            else:
                self.failed.value += 1
                if reason is not None:
                    self.reason.value = reason.encode("utf-8", "replace")[: _REASON_BYTES - 1]
                if _too_many_failures(self.failed.value, self.finished.value, self.max_failures):
                    if not self.stop.value:
                        self.stop.value = _STOP_NUMBERS["max_failures"]

    def outcome(self, elapsed: float) -> RunOutcome:
        reason = self.reason.value.decode("utf-8", "replace") or None
        error = self.error.value.decode("utf-8", "replace") or None
        return RunOutcome(
            n_finished=int(self.finished.value),
            n_complete=int(self.complete.value),
            n_pruned=int(self.pruned.value),
            n_failed=int(self.failed.value),
            stop_reason=_STOP_CODES[int(self.stop.value)],
            last_fail_reason=reason,
            error=error,
            elapsed=elapsed,
        )

    def best_value(self) -> float | None:
        b = float(self.best.value)
        return None if math.isnan(b) else b


def _too_many_failures(failed: int, finished: int, limit: int | float | None) -> bool:
    if limit is None:
        return False
    if isinstance(limit, float):
        return finished >= 10 and failed / finished > limit
    return failed > limit


class _TimeoutExit(BaseException):
    """Raised again and again in an objective that swallowed its TrialTimeoutError."""


class _Guard:
    """Signal handling of one process: SIGINT and SIGALRM interrupt only the objective.

    ``slot``: in a worker process, ``(array, i)`` of shared doubles where the worker publishes
    its state for the parent's watchdog: ``0`` idle, ``-1`` a trial claimed, ``> 0`` the
    ``time.monotonic()`` at which the objective started.
    """

    def __init__(self, trial_timeout: float | None, slot: tuple[Any, int] | None = None) -> None:
        self.trial_timeout = trial_timeout
        self.in_objective = False
        self.interrupted = False
        self.timed_out = False
        self.slot = slot
        self._old: dict[int, Any] = {}

    def mark(self, value: float) -> None:
        if self.slot is not None:
            self.slot[0][self.slot[1]] = value

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        if self.in_objective:
            self.in_objective = False
            raise KeyboardInterrupt

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.in_objective:
            # Stays armed: an objective that swallows the error (`except Exception`) gets it
            # again every 0.2 s until it leaves, and the trial is FAILED whatever it returns.
            first = not self.timed_out
            self.timed_out = True
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            if first:
                raise TrialTimeoutError(f"trial exceeded trial_timeout={self.trial_timeout:g}s")
            raise _TimeoutExit  # not an Exception: `except Exception` cannot keep it

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
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


def validate_values(result: Any, n_objectives: int) -> list[float] | str:
    """Check what an objective returned.

    Args:
        result: The return value.
        n_objectives: Number of objectives of the study.

    Returns:
        The values as floats, or the failure reason (a string) if they are unusable.
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


def _timeout_reason(limit: float | None) -> str:
    return f"TrialTimeoutError: trial exceeded trial_timeout={limit:g}s"


def _fail_reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _run_trial(
    study: optuna.Study,
    objective: TrialFunction,
    settings: RunSettings,
    guard: _Guard,
    n_objectives: int,
) -> tuple[TrialState, float | None, str | None]:
    """Ask one trial, run the objective, tell the result. Returns (state, first value, reason)."""
    trial = study.ask()
    reason: str | None = None
    result: Any = None
    state = TrialState.COMPLETE
    timeout = settings.trial_timeout
    guard.timed_out = False
    try:
        try:
            guard.in_objective = True
            if guard.interrupted:
                raise KeyboardInterrupt
            if timeout is not None:
                guard.mark(time.monotonic())
                signal.setitimer(signal.ITIMER_REAL, timeout)
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
        mark_uncounted(study._storage, trial._trial_id, "interrupted")
    except _TimeoutExit:
        state = TrialState.FAIL  # the reason is set below
    except SystemExit as exc:  # sys.exit() in the objective ends the trial, not the run
        state, reason = TrialState.FAIL, f"objective called sys.exit({exc.code!r})"
    except Exception as exc:  # the objective's failure becomes a FAILED trial
        state, reason = TrialState.FAIL, _fail_reason(exc)
    if guard.timed_out:  # even if the objective caught the TrialTimeoutError and returned
        state, reason = TrialState.FAIL, _timeout_reason(timeout)
    if state == TrialState.FAIL and guard.slot is not None:
        kill_tree(descendants(os.getpid()))  # processes the failed objective left behind

    values: list[float] | None = None
    if state == TrialState.COMPLETE:
        checked = validate_values(result, n_objectives)
        if isinstance(checked, str):
            state, reason = TrialState.FAIL, checked
        else:
            values = checked
            if settings.constraints is not None:
                reason = _store_constraints(study, trial, values, settings)
                if reason is not None:
                    state, values = TrialState.FAIL, None

    if state == TrialState.FAIL:
        study._storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_KEY, reason)
        study.tell(trial, state=TrialState.FAIL)
        return state, None, reason
    if state == TrialState.PRUNED:
        study.tell(trial, state=TrialState.PRUNED)
        return state, None, None
    assert values is not None
    study.tell(trial, values)
    return state, values[0], None


def _store_constraints(
    study: optuna.Study, trial: optuna.Trial, values: list[float], settings: RunSettings
) -> str | None:
    assert settings.constraints is not None
    frozen = copy.copy(study._storage.get_trial(trial._trial_id))
    frozen.values = values
    try:
        raw = settings.constraints(frozen)
        constraints = [float(c) for c in raw]
    except Exception as exc:
        return f"constraints function failed: {_fail_reason(exc)}"
    if any(math.isnan(c) for c in constraints):
        return f"constraints function returned NaN: {constraints}"
    study._storage.set_trial_system_attr(trial._trial_id, _CONSTRAINTS_KEY, constraints)
    return None


def _loop(
    study: optuna.Study,
    objective: TrialFunction,
    settings: RunSettings,
    shared: _Shared,
    guard: _Guard,
    deadline: float | None,
    on_trial: Any = None,
) -> None:
    n_objectives = len(study.directions)
    target = None if settings.study_n_trials is None else StudyTarget(settings.study_n_trials)
    while True:
        if guard.interrupted:
            shared.request_stop("interrupted")
            return
        if deadline is not None and time.monotonic() >= deadline:
            shared.request_stop("timeout")
            return
        if target is not None and not target.has_room(study):
            return  # other runs of the study reached its n_trials
        if not shared.claim():
            return
        guard.mark(-1.0)
        state, value, reason = _run_trial(study, objective, settings, guard, n_objectives)
        shared.record(state, value, reason)
        guard.mark(0.0)
        if on_trial is not None:
            on_trial()


def _open_study(study_ref: StudyRef, settings: RunSettings, worker: int) -> optuna.Study:
    return optuna.load_study(
        study_name=study_ref.study_name,
        storage=study_ref.storage.open(),
        sampler=settings.sampler_factory(worker),
        pruner=settings.pruner,
    )


def _interrupt_when_parent_dies(parent_pid: int) -> None:
    """Linux: deliver SIGINT to this worker when the parent dies (e.g. ``kill -9`` of the run).

    The worker then marks its running trial ``interrupted`` and exits instead of running on as an
    orphan. Elsewhere (no ``prctl``) orphans finish their current trial and claim no new one only
    once the run's tickets are used up.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGINT), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no usable libc
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        raise KeyboardInterrupt


def _worker_main(
    index: int,
    study_ref: StudyRef,
    objective: TrialFunction,
    settings: RunSettings,
    shared: _Shared,
    deadline: float | None,
    parent_pid: int,
    slot: tuple[Any, int] | None = None,
) -> None:
    """Body of a worker process (after ``fork``)."""
    guard = _Guard(settings.trial_timeout, slot)
    try:
        with guard.installed():
            _interrupt_when_parent_dies(parent_pid)
            study = _open_study(study_ref, settings, index)
            _loop(study, objective, settings, shared, guard, deadline)
    except KeyboardInterrupt:
        shared.request_stop("interrupted")
    except BaseException as exc:
        shared.request_stop("error", f"worker {index}: {_fail_reason(exc)}")
        sys.stderr.write(f"sigtune worker {index} stopped: {_fail_reason(exc)}\n")
        sys.stderr.flush()
        os._exit(1)


class LocalEngine(Engine):
    """Runs trials in this process (``n_jobs=1``) or in ``n_jobs`` forked worker processes."""

    name = "local"

    def run(
        self,
        study_ref: StudyRef,
        objective: TrialFunction,
        settings: RunSettings,
        *,
        n_jobs: int = 1,
        progress: ProgressSink | None = None,
    ) -> RunOutcome:
        if n_jobs < 1:
            raise ConfigError(f"n_jobs must be >= 1, got {n_jobs}")
        start = time.monotonic()
        deadline = None if settings.timeout is None else start + settings.timeout
        if n_jobs == 1:
            return self._run_inline(study_ref, objective, settings, deadline, progress, start)
        return self._run_processes(
            study_ref, objective, settings, n_jobs, deadline, progress, start
        )

    def _run_inline(
        self,
        study_ref: StudyRef,
        objective: TrialFunction,
        settings: RunSettings,
        deadline: float | None,
        progress: ProgressSink | None,
        start: float,
    ) -> RunOutcome:
        main_thread = threading.current_thread() is threading.main_thread()
        if settings.trial_timeout is not None and not main_thread:
            raise ConfigError(
                "trial_timeout uses SIGALRM and needs the main thread; call optimize() from the "
                "main thread or use n_jobs > 1 (worker processes)"
            )
        shared = _Shared(None, settings)
        guard = _Guard(settings.trial_timeout)
        study = _open_study(study_ref, settings, 0)
        on_trial = None
        if progress is not None:
            last = [0.0]

            def on_trial() -> None:
                now = time.monotonic()
                if now - last[0] >= _POLL_S:
                    last[0] = now
                    progress.update(shared.finished.value, shared.failed.value, shared.best_value())

        ctx = guard.installed() if main_thread else contextlib.nullcontext()
        with ctx:
            _loop(study, objective, settings, shared, guard, deadline, on_trial)
        if progress is not None:
            progress.update(shared.finished.value, shared.failed.value, shared.best_value())
        return shared.outcome(time.monotonic() - start)

    def _run_processes(
        self,
        study_ref: StudyRef,
        objective: TrialFunction,
        settings: RunSettings,
        n_jobs: int,
        deadline: float | None,
        progress: ProgressSink | None,
        start: float,
    ) -> RunOutcome:
        if not study_ref.storage.shareable:
            raise ConfigError(
                f"n_jobs={n_jobs} needs a storage worker processes can open, got "
                f"{study_ref.storage.describe()}"
            )
        if "fork" not in mp.get_all_start_methods():
            raise ConfigError(
                "n_jobs > 1 needs the 'fork' start method (Linux/macOS); use n_jobs=1 here"
            )
        ctx = mp.get_context("fork")
        shared = _Shared(ctx, settings)
        n_workers = min(n_jobs, settings.n_trials) or 1
        slots = ctx.RawArray("d", n_workers)  # per worker: 0 idle, -1 claimed, > 0 trial start
        parent = os.getpid()

        def new_worker(index: int, slot: int) -> Any:
            # Not daemonic: objectives may start processes of their own (a Pool, a DataLoader).
            return ctx.Process(
                target=_worker_main,
                args=(index, study_ref, objective, settings, shared, deadline, parent),
                kwargs={"slot": (slots, slot)},
                name=f"sigtune-worker-{index}",
                daemon=False,
            )

        procs = [new_worker(i, i) for i in range(n_workers)]
        supervisor = _Supervisor(study_ref, settings, shared, slots)
        main_thread = threading.current_thread() is threading.main_thread()
        old_handler: Any = None

        def forward_sigint(signum: int, frame: FrameType | None) -> None:
            shared.request_stop("interrupted")
            for p in procs:
                if p.pid is not None and p.exitcode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGINT)

        if main_thread:
            old_handler = signal.signal(signal.SIGINT, forward_sigint)
        try:
            for p in procs:
                p.start()
            next_index = n_workers
            while any(p.is_alive() for p in procs):
                for p in procs:
                    p.join(_POLL_S / n_workers)
                supervisor.watch(procs)
                for slot, p in enumerate(procs):
                    if p.exitcode in (0, None) or p.pid in supervisor.handled:
                        continue
                    if supervisor.dead(p, slot) and not shared.stop.value:
                        procs[slot] = new_worker(next_index, slot)  # replace the dead worker
                        next_index += 1
                        procs[slot].start()
                if progress is not None:
                    progress.update(
                        int(shared.finished.value), int(shared.failed.value), shared.best_value()
                    )
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, old_handler)
            for p in procs:  # only on an unexpected error in this loop
                if p.is_alive():
                    p.terminate()
                    p.join()
        for slot, p in enumerate(procs):
            if p.exitcode not in (0, None) and p.pid not in supervisor.handled:
                supervisor.dead(p, slot)
        supervisor.close()
        if progress is not None:
            progress.update(
                int(shared.finished.value), int(shared.failed.value), shared.best_value()
            )
        return shared.outcome(time.monotonic() - start)


class _Supervisor:
    """The parent's watch over its workers: trial timeouts in C code, dead workers, retries."""

    _GRACE_S = 1.0  # after trial_timeout, for SIGALRM to work before the worker is killed

    def __init__(
        self, study_ref: StudyRef, settings: RunSettings, shared: _Shared, slots: Any
    ) -> None:
        self.study_ref = study_ref
        self.settings = settings
        self.shared = shared
        self.slots = slots
        self.handled: set[int | None] = set()
        self.timed_out: dict[int, str] = {}
        self.idle_deaths = 0
        self._study: optuna.Study | None = None

    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = optuna.load_study(
                study_name=self.study_ref.study_name,
                storage=self.study_ref.storage.open(track_owner=False),
            )
        return self._study

    def watch(self, procs: Sequence[Any]) -> None:
        """Kill workers whose trial ran past ``trial_timeout`` (stuck where SIGALRM cannot act)."""
        limit = self.settings.trial_timeout
        if limit is None:
            return
        now = time.monotonic()
        for slot, p in enumerate(procs):
            started = self.slots[slot]
            if started > 0 and now - started > limit + self._GRACE_S and p.is_alive():
                if p.pid in self.timed_out:
                    continue
                self.timed_out[p.pid] = (
                    f"{_timeout_reason(limit)} (stuck in a call Python cannot interrupt; "
                    "worker killed)"
                )
                kill_tree([*descendants(p.pid), p.pid])

    def dead(self, p: Any, slot: int) -> bool:
        """Handle a worker that died; returns whether to start a replacement."""
        self.handled.add(p.pid)
        shared = self.shared
        busy = self.slots[slot] != 0
        self.slots[slot] = 0
        reason = self.timed_out.get(p.pid) or death_reason(p.exitcode)
        try:
            failed, retried = fail_dead_worker_trials(
                self.study(), int(p.pid), reason, retry=p.pid not in self.timed_out
            )
        except Exception as exc:  # the storage itself is gone: stop
            shared.request_stop("error", f"{reason}; and its trial: {_fail_reason(exc)}")
            return False
        sys.stderr.write(f"sigtune: {p.name} (pid {p.pid}): {reason}\n")
        sys.stderr.flush()
        with shared.lock:
            if busy and failed == 0:
                shared.tickets.value += 1  # claimed a trial but died before creating it
            shared.tickets.value += retried
        for _ in range(failed - retried):
            shared.record(TrialState.FAIL, None, reason)
        for _ in range(retried):
            shared.record(TrialState.FAIL, None, reason + "; retried once")
        if failed == 0:
            self.idle_deaths += 1
            if self.idle_deaths > 2 * len(self.slots):
                shared.request_stop("error", f"worker processes died outside any trial ({reason})")
                return False
        return int(shared.tickets.value) > 0

    def close(self) -> None:
        self._study = None
