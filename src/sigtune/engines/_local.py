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
import ctypes
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import optuna
from optuna.trial import TrialState

from sigtune._exceptions import ConfigError
from sigtune._run import ProgressSink, RunOutcome, RunPlan, StopReason, StudyRef, TrialFunction
from sigtune._storage import handle_stale_running
from sigtune.engines._trial import (
    INTERRUPTED_REASON,
    TrialGuard,
    callbacks_enabled,
    fail_reason,
    open_study,
    run_trial,
    validate_values,
)

__all__ = ["INTERRUPTED_REASON", "LocalEngine", "validate_values"]

_REASON_BYTES = 1000
_STOP_CODES: dict[int, StopReason] = {
    0: "done",
    1: "timeout",
    2: "max_failures",
    3: "interrupted",
    4: "error",
    5: "stopped",
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

    def __init__(self, ctx: Any, plan: RunPlan) -> None:
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
        self.tickets = raw("q", plan.n_trials)
        self.finished = raw("q", 0)
        self.complete = raw("q", 0)
        self.pruned = raw("q", 0)
        self.failed = raw("q", 0)
        self.best = raw("d", math.nan)
        self.stop = raw("i", 0)
        self.max_failures = plan.max_failures
        self.sign = -1.0 if plan.maximize[0] else 1.0
        self.single = len(plan.maximize) == 1

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


def _loop(
    study: optuna.Study,
    objective: TrialFunction,
    plan: RunPlan,
    shared: _Shared,
    guard: TrialGuard,
    deadline: float | None,
    on_trial: Any = None,
) -> None:
    n_objectives = len(study.directions)
    with callbacks_enabled(study):
        while True:
            if guard.interrupted:
                shared.request_stop("interrupted")
                return
            if deadline is not None and time.monotonic() >= deadline:
                shared.request_stop("timeout")
                return
            if not shared.claim():
                return
            record = run_trial(study, objective, plan, guard, n_objectives)
            shared.record(record.state, record.value, record.reason)
            if on_trial is not None:
                on_trial()
            if record.stop is not None:
                shared.request_stop(record.stop, record.error)
                return


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
    plan: RunPlan,
    shared: _Shared,
    deadline: float | None,
    parent_pid: int,
) -> None:
    """Body of a worker process (after ``fork``)."""
    guard = TrialGuard(plan.trial_timeout)
    try:
        with guard.installed():
            _interrupt_when_parent_dies(parent_pid)
            study = open_study(study_ref, plan, index)
            _loop(study, objective, plan, shared, guard, deadline)
    except KeyboardInterrupt:
        shared.request_stop("interrupted")
    except BaseException as exc:
        shared.request_stop("error", f"worker {index}: {fail_reason(exc)}")
        sys.stderr.write(f"sigtune worker {index} stopped: {fail_reason(exc)}\n")
        sys.stderr.flush()
        os._exit(1)


class LocalEngine:
    """Runs trials in this process (``n_jobs=1``) or in ``n_jobs`` forked worker processes."""

    name = "local"

    def run(
        self,
        study_ref: StudyRef,
        objective: TrialFunction,
        plan: RunPlan,
        *,
        n_jobs: int = 1,
        progress: ProgressSink | None = None,
    ) -> RunOutcome:
        if n_jobs < 1:
            raise ConfigError(f"n_jobs must be >= 1, got {n_jobs}")
        start = time.monotonic()
        deadline = None if plan.timeout is None else start + plan.timeout
        if n_jobs == 1:
            return self._run_inline(study_ref, objective, plan, deadline, progress, start)
        return self._run_processes(study_ref, objective, plan, n_jobs, deadline, progress, start)

    def _run_inline(
        self,
        study_ref: StudyRef,
        objective: TrialFunction,
        plan: RunPlan,
        deadline: float | None,
        progress: ProgressSink | None,
        start: float,
    ) -> RunOutcome:
        main_thread = threading.current_thread() is threading.main_thread()
        if plan.trial_timeout is not None and not main_thread:
            raise ConfigError(
                "trial_timeout uses SIGALRM and needs the main thread; call optimize() from the "
                "main thread or use n_jobs > 1 (worker processes)"
            )
        shared = _Shared(None, plan)
        guard = TrialGuard(plan.trial_timeout)
        study = open_study(study_ref, plan, 0)
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
            _loop(study, objective, plan, shared, guard, deadline, on_trial)
        if progress is not None:
            progress.update(shared.finished.value, shared.failed.value, shared.best_value())
        return shared.outcome(time.monotonic() - start)

    def _run_processes(
        self,
        study_ref: StudyRef,
        objective: TrialFunction,
        plan: RunPlan,
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
        shared = _Shared(ctx, plan)
        n_workers = min(n_jobs, plan.n_trials) or 1
        procs = [
            ctx.Process(
                target=_worker_main,
                args=(i, study_ref, objective, plan, shared, deadline, os.getpid()),
                name=f"sigtune-worker-{i}",
                daemon=True,
            )
            for i in range(n_workers)
        ]
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
            while any(p.is_alive() for p in procs):
                for p in procs:
                    p.join(_POLL_S / n_workers)
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
        crashed = [p for p in procs if p.exitcode not in (0, None)]
        if crashed:
            self._fail_dead_workers(study_ref, plan, shared, crashed)
        if progress is not None:
            progress.update(
                int(shared.finished.value), int(shared.failed.value), shared.best_value()
            )
        return shared.outcome(time.monotonic() - start)

    @staticmethod
    def _fail_dead_workers(
        study_ref: StudyRef,
        plan: RunPlan,
        shared: _Shared,
        crashed: Sequence[Any],
    ) -> None:
        """Mark RUNNING trials of crashed workers FAIL and count them."""
        pids = {int(p.pid) for p in crashed if p.pid is not None}
        study = optuna.load_study(
            study_name=study_ref.study_name, storage=study_ref.storage.open(track_owner=False)
        )
        marked = handle_stale_running(study, policy="fail", pids=pids)
        for _ in marked:
            shared.record(TrialState.FAIL, None, "worker died")
        if shared.stop.value == 0 and int(shared.tickets.value) > 0:
            codes = ", ".join(f"{p.name}: {p.exitcode}" for p in crashed)
            shared.request_stop("error", f"worker processes died ({codes})")
