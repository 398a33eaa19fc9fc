"""Local execution: in-process for ``n_jobs=1``, N worker processes for ``n_jobs > 1``.

Workers are separate *processes* (objectives are CPU-bound Python), started with the ``fork``
start method: the objective, even a local function or a lambda, reaches the workers without being
pickled. Each worker opens the study's storage itself and asks/tells trials with its own sampler.

Exact trial count: before asking a trial, a worker claims a ticket from a counter shared by all
workers of the run (a ``multiprocessing`` value under a lock), so ``n_jobs=8, n_trials=4000`` gives
exactly 4000 trials. Each claimed ticket becomes exactly one finished trial. The storage is checked
too (:class:`~sigtune._target.StudyTarget`), so concurrent runs of one study share ``n_trials``.

Dead workers (a segfault, the OOM killer, ``os._exit``) are replaced by the parent's
:class:`_Supervisor`: the dead worker's trial is FAILED with the signal's name and retried once
(:mod:`sigtune.engines._workers`); only ``max_failures`` stops the run. Workers are not daemonic,
so objectives may start processes of their own.

GPUs: worker ``i`` gets ``SIGTUNE_WORKER_INDEX=i`` in its environment, from which the trainables'
``device: auto | cuda`` pick GPU ``i % n_gpus`` (round robin, :mod:`sigtune.pipelines.ml._device`).
CUDA does not survive a ``fork`` once the parent initialised it, so then the workers are started
with ``spawn`` instead (the objective must then be picklable: a module-level function).

Per-trial timeout: ``SIGALRM`` (``setitimer``) in the main thread of the process running the
trial raises :class:`~sigtune.TrialTimeoutError` inside the objective. It interrupts pure-Python
code at the next bytecode; a long call into C (one big NumPy / BLAS operation, a blocking read) is
interrupted only when it returns: with worker processes the parent kills a worker whose trial runs
1 s past the limit (and the processes it started) and starts a new one. An objective that swallows
every exception (``except Exception:``) cannot keep a timed-out trial alive (see
:class:`~sigtune.engines._trial.TrialGuard`). In-process runs need to be started from the main
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
from sigtune._storage import counted_claims
from sigtune._target import StudyTarget
from sigtune.engines._trial import (
    INTERRUPTED_REASON,
    TrialGuard,
    callbacks_enabled,
    fail_reason,
    open_study,
    run_trial,
    validate_values,
)
from sigtune.engines._workers import death_reason, descendants, fail_dead_worker_trials, kill_tree

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
WORKER_INDEX_ENV = "SIGTUNE_WORKER_INDEX"  # read by sigtune.pipelines.ml._device (GPU round robin)


def cuda_initialized() -> bool:
    """Whether this process initialised CUDA: worker processes must then not be forked."""
    torch = sys.modules.get("torch")
    try:
        return torch is not None and bool(torch.cuda.is_initialized())
    except Exception:  # pragma: no cover - a broken torch install
        return False


def worker_start_method() -> str:
    """``fork`` (objectives need not be picklable), or ``spawn`` once CUDA is initialised."""
    return "spawn" if cuda_initialized() else "fork"


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
        self.unchecked = raw(
            "q", 0
        )  # claims the workers may make before the next StudyTarget check
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
    target = None
    if plan.study_n_trials is not None:
        target = StudyTarget(plan.study_n_trials, shared, count_query=counted_claims)
    with callbacks_enabled(study):
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
            record = run_trial(study, objective, plan, guard, n_objectives)
            shared.record(record.state, record.value, record.reason)
            guard.mark(0.0)
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
    slot: tuple[Any, ...] | None = None,
) -> None:
    """Body of a worker process (after ``fork``, or ``spawn`` once CUDA is initialised)."""
    os.environ[WORKER_INDEX_ENV] = str(index)
    guard = TrialGuard(plan.trial_timeout, slot)
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


def _check_picklable(objective: TrialFunction) -> None:
    import pickle

    try:
        pickle.dumps(objective)
    except Exception as exc:
        raise ConfigError(
            "CUDA is initialised in this process, so n_jobs > 1 starts workers with 'spawn' and "
            f"the objective must be picklable (a module-level function): {fail_reason(exc)}; "
            "or do not touch CUDA before the run"
        ) from exc


class LocalEngine:
    """Runs trials in this process (``n_jobs=1``) or in ``n_jobs`` forked worker processes.

    Args:
        isolate: Also with ``n_jobs=1``, run the trials in one worker process (replaced when it
            dies): a segfaulting objective is a FAIL trial (retried once) instead of the end of
            the run, and ``trial_timeout`` can end a trial stuck in C code. Needs a storage that
            processes can share.
    """

    name = "local"

    def __init__(self, isolate: bool = False) -> None:
        self.isolate = bool(isolate)

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
        if n_jobs == 1 and not self.isolate:
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
            what = f"n_jobs={n_jobs}" if n_jobs > 1 else "isolate=True (a worker process)"
            raise ConfigError(
                f"{what} needs a storage worker processes can open, got "
                f"{study_ref.storage.describe()}; give a storage URL or a run_dir"
            )
        method = worker_start_method()
        if method not in mp.get_all_start_methods():
            raise ConfigError(
                "n_jobs > 1 and isolate need the 'fork' start method (Linux/macOS); use n_jobs=1 "
                "without isolate here"
            )
        if method == "spawn":
            _check_picklable(objective)
        ctx: Any = mp.get_context(method)
        shared = _Shared(ctx, plan)
        n_workers = min(n_jobs, plan.n_trials) or 1
        slots = ctx.RawArray("d", n_workers)  # per worker: 0 idle, -1 claimed, > 0 trial start
        ids = ctx.RawArray("q", [-1] * n_workers)  # per worker: storage id of its last trial
        parent = os.getpid()

        def new_worker(index: int, slot: int) -> Any:
            # Not daemonic: objectives may start processes of their own (a Pool, a DataLoader).
            return ctx.Process(
                target=_worker_main,
                args=(index, study_ref, objective, plan, shared, deadline, parent),
                kwargs={"slot": (slots, slot, ids)},
                name=f"sigtune-worker-{index}",
                daemon=False,
            )

        procs = [new_worker(i, i) for i in range(n_workers)]
        supervisor = _Supervisor(study_ref, plan, shared, slots, ids)
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
        if progress is not None:
            progress.update(
                int(shared.finished.value), int(shared.failed.value), shared.best_value()
            )
        return shared.outcome(time.monotonic() - start)


class _Supervisor:
    """The parent's watch over its workers: trial timeouts in C code, dead workers, retries."""

    _GRACE_S = 1.0  # after trial_timeout, for SIGALRM to work before the worker is killed

    def __init__(
        self, study_ref: StudyRef, plan: RunPlan, shared: _Shared, slots: Any, ids: Any = None
    ) -> None:
        self.study_ref = study_ref
        self.ids = ids
        self.plan = plan
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
        limit = self.plan.trial_timeout
        if limit is None:
            return
        now = time.monotonic()
        for slot, p in enumerate(procs):
            started = self.slots[slot]
            if started > 0 and now - started > limit + self._GRACE_S and p.is_alive():
                if p.pid in self.timed_out:
                    continue
                self.timed_out[p.pid] = (
                    f"TrialTimeoutError: trial exceeded trial_timeout={limit:g}s (stuck in a call "
                    "Python cannot interrupt; worker killed)"
                )
                kill_tree([*descendants(p.pid), p.pid])

    def dead(self, p: Any, slot: int) -> bool:
        """Handle a worker that died; returns whether to start a replacement."""
        self.handled.add(p.pid)
        shared = self.shared
        busy = self.slots[slot] != 0
        self.slots[slot] = 0
        last_id = -1
        if self.ids is not None:
            last_id, self.ids[slot] = int(self.ids[slot]), -1
        reason = self.timed_out.get(p.pid) or death_reason(p.exitcode)
        try:
            failed, retried = fail_dead_worker_trials(
                self.study(),
                int(p.pid),
                reason,
                retry=p.pid not in self.timed_out,
                trial_ids=() if last_id < 0 else (last_id,),
                others={int(i) for i in self.ids} if self.ids is not None else (),
            )
        except Exception as exc:  # the storage itself fails: stop
            shared.request_stop("error", f"{reason}; and its trial: {fail_reason(exc)}")
            return False
        if _STOP_CODES[int(shared.stop.value)] != "error":  # else the worker said why itself
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
