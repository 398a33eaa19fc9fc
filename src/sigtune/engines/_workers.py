"""Worker-process supervision helpers of the local engine.

* :func:`death_reason` turns a worker's exit code into the ``fail_reason`` of its trial
  (``"worker killed by signal 11 (SIGSEGV)"``; a ``SIGKILL`` nobody sent on purpose is most often
  the kernel's out-of-memory killer, and the reason says so).
* :func:`fail_dead_worker_trials` marks the RUNNING trial of a dead worker FAIL with that reason and
  retries it once (its parameters are enqueued again; the retried trial does not count towards
  ``n_trials``, the retry does). A trial whose retry also kills its worker stays FAIL.
* :func:`descendants` / :func:`kill_tree` find and end the processes an objective started, so a
  timed-out or failed trial leaves no children behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Container, Iterable

import optuna
from optuna.trial import TrialState

from sigtune._optuna_compat import study_storage, trial_id
from sigtune._storage import FAIL_REASON_KEY, OWNER_KEY, owner_pid
from sigtune._target import mark_uncounted

__all__ = [
    "RETRY_KEY",
    "death_reason",
    "descendants",
    "fail_dead_worker_trials",
    "kill_tree",
]

RETRY_KEY = "sigtune:retry_of"


def death_reason(exitcode: int | None) -> str:
    """Why a worker process ended, in words."""
    if exitcode is None:
        return "worker died"
    if exitcode < 0:
        signum = -exitcode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if signum == signal.SIGKILL:
            return (
                f"worker killed by signal {signum} ({name}; out of memory? the kernel's OOM "
                "killer sends SIGKILL)"
            )
        return f"worker killed by signal {signum} ({name})"
    return f"worker exited with code {exitcode}"


def fail_dead_worker_trials(
    study: optuna.Study,
    pid: int,
    reason: str,
    *,
    retry: bool,
    trial_ids: Container[int] = (),
    others: Container[int] = (),
) -> tuple[int, int]:
    """FAIL the RUNNING trials of a dead worker; retry each once if ``retry``.

    The worker's trials are those stamped with its ``pid`` and those of ``trial_ids`` (the ids it
    published: when two workers pop the same enqueued trial, the loser's stamp may land last),
    except those of ``others`` (the trials other live workers published as theirs).

    Returns:
        ``(failed, retried)``: trials marked FAIL, and how many of them were enqueued again.
    """
    storage = study_storage(study)
    failed = retried = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.system_attrs.get(OWNER_KEY)
        tid = trial_id(trial)
        stamped = isinstance(owner, str) and owner_pid(owner) == pid
        if tid not in trial_ids and (not stamped or tid in others):
            continue
        again = retry and RETRY_KEY not in trial.user_attrs
        try:
            storage.set_trial_user_attr(
                tid, FAIL_REASON_KEY, reason + ("; retried once" if again else "")
            )
            if again:
                mark_uncounted(storage, tid, "retried")
            if not storage.set_trial_state_values(tid, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        failed += 1
        if again:
            params = dict(trial.params) or dict(trial.system_attrs.get("fixed_params") or {})
            study.enqueue_trial(params, user_attrs={RETRY_KEY: trial.number})
            retried += 1
    return failed, retried


def descendants(pid: int) -> list[int]:
    """All descendant processes of ``pid`` (Linux ``/proc``), children first."""
    parent_of: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            parent_of[int(entry)] = int(fields[1])
    out: list[int] = []
    frontier = [pid]
    while frontier:
        nxt = [c for c, p in parent_of.items() if p in frontier and c not in out]
        out += nxt
        frontier = nxt
    return out


def kill_tree(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to each process (gone ones are skipped)."""
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)
