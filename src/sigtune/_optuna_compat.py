"""Every use of Optuna's private API, in one place.

Optuna's public API has no way to write a trial attribute by trial id without a ``Trial`` object
(needed to record the failure reason and the constraints of a trial before it is told), to read a
study's storage and id, to let ``study.stop()`` work outside ``Study.optimize``, or to tell a
trial without the deep copy ``Study.tell`` makes of it (:func:`tell`: Optuna's own optimize loop
calls the same internal function; feature-detected, with ``Study.tell`` as the fallback). sigtune
needs these; the rest of the package calls the functions here, and
``tests/architecture/test_optuna_private.py`` checks that no other module touches an Optuna
private name. When Optuna changes one of them, this is the only file to adapt (``make
test-optuna-oldest`` runs the core tests against the oldest Optuna that pyproject allows).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from optuna.storages import _CachedStorage as CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat, get_heartbeat_thread
from optuna.storages.journal._file import BaseJournalFileLock
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

__all__ = [
    "BaseHeartbeat",
    "BaseJournalFileLock",
    "CachedStorage",
    "DelegatedHeartbeat",
    "FrozenStudy",
    "begin_callbacks",
    "end_callbacks",
    "heartbeat",
    "heartbeat_enabled",
    "live_record",
    "sampler_sets_constraints",
    "stale_heartbeat_trial_ids",
    "stop_requested",
    "study_id",
    "study_storage",
    "tell",
    "trial_constraints",
    "trial_id",
]


def trial_constraints(trial: FrozenTrial) -> Mapping[str, float]:
    """The constraint values Optuna stores for a trial (``FrozenTrial.constraints`` of newer Optuna).

    Older Optuna has no ``FrozenTrial.constraints``: read the same ``system_attrs`` it would
    (``constraints`` list and ``constraints:<name>`` keys).
    """
    values = getattr(trial, "constraints", None)
    if values is not None:
        return dict(values)
    out: dict[str, float] = {}
    listed = trial.system_attrs.get("constraints")
    if listed is not None:
        out.update((str(i), c) for i, c in enumerate(listed))
    out.update(
        (k.removeprefix("constraints:"), v)
        for k, v in trial.system_attrs.items()
        if k.startswith("constraints:")
    )
    return out


def _find_tell_with_warning() -> Any:
    """Optuna's internal ``_tell_with_warning`` if it has the parameters sigtune passes."""
    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:  # pragma: no cover - a future Optuna without it
        return None
    try:
        params = inspect.signature(_tell_with_warning).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return None
    if not {"study", "trial", "value_or_values", "state"} <= set(params):
        return None  # pragma: no cover - a future Optuna with another signature
    return _tell_with_warning


_TELL_WITH_WARNING = _find_tell_with_warning()


def tell(
    study: optuna.Study,
    trial: optuna.Trial,
    values: Sequence[float] | None = None,
    state: TrialState | None = None,
    *,
    read_back: bool = True,
) -> FrozenTrial | None:
    """``study.tell(trial, values, state)`` without the deep copy of the trial it returns.

    Optuna's public ``Study.tell`` deep-copies the finished trial for its caller (about half of
    the per-trial bookkeeping of a cheap objective) after reading it back from the storage (on a
    database, a query); its own ``Study.optimize`` calls the internal ``_tell_with_warning``
    instead, and so does this. The returned trial is the storage's own object: read it, do not
    modify it (pass a copy to user code). ``read_back=False``: return ``None`` instead of reading
    the finished trial back, where this Optuna's internal tell does not return it anyway. Falls
    back to ``study.tell`` when the internal function is missing or has another signature.
    """
    if _TELL_WITH_WARNING is None:
        return study.tell(trial, values, state=state)  # pragma: no cover - see above
    out = _TELL_WITH_WARNING(study=study, trial=trial, value_or_values=values, state=state)
    if isinstance(out, tuple) and out and isinstance(out[0], FrozenTrial):
        return out[0]  # Optuna < 5 returns the trial read back after the tell
    if not read_back:
        return None
    frozen: FrozenTrial = study._storage.get_trial(trial._trial_id)
    return frozen


def live_record(trial: optuna.Trial) -> FrozenTrial | None:
    """The running trial's own record of itself, without a storage read: params, user attrs and
    the constraints it set through the ``Trial`` API (``Trial._cached_frozen_trial``, which Optuna
    updates on each of those calls). Read it, do not modify it; ``None`` if this Optuna has none.
    """
    record = getattr(trial, "_cached_frozen_trial", None)
    return record if isinstance(record, FrozenTrial) else None


def sampler_sets_constraints(sampler: Any) -> bool:
    """Whether the sampler stores constraint values on a trial when it is told (Optuna's samplers
    with a ``constraints_func``, kept as ``_constraints_func``, as sigtune's ``auto`` does)."""
    return getattr(sampler, "_constraints_func", None) is not None


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object of a study (``Study._storage``)."""
    storage: BaseStorage = study._storage
    return storage


def study_id(study: optuna.Study) -> int:
    """The storage id of a study (``Study._study_id``)."""
    return int(study._study_id)


def trial_id(trial: optuna.Trial | Any) -> int:
    """The storage id of a live trial (``Trial._trial_id``)."""
    return int(trial._trial_id)


def begin_callbacks(study: optuna.Study) -> None:
    """Let ``study.stop()`` be called (by a callback) outside ``Study.optimize``.

    Optuna allows ``stop()`` only inside its optimize loop; sigtune's engines run their own loop,
    so they mark the study as in a loop once (per process) and read the flag with
    :func:`stop_requested` after each trial's callbacks.
    """
    study._thread_local.in_optimize_loop = True


def end_callbacks(study: optuna.Study) -> None:
    """Undo :func:`begin_callbacks` (so that ``study.optimize`` can run on the object later)."""
    study._thread_local.in_optimize_loop = False


def stop_requested(study: optuna.Study) -> bool:
    """Whether ``study.stop()`` was called since the study object was created."""
    return bool(getattr(study, "_stop_flag", False))


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Any:
    """A context manager recording the trial's heartbeat while it runs (a no-op unless the
    storage has a heartbeat: server databases, see :mod:`sigtune._storage`)."""
    return get_heartbeat_thread(trial_id(trial), study_storage(study))


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether the storage records Optuna heartbeats."""
    return isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None


def stale_heartbeat_trial_ids(study: optuna.Study) -> list[int]:
    """Ids of the RUNNING trials whose heartbeat is older than the storage's grace period."""
    storage = study_storage(study)
    if not heartbeat_enabled(storage):
        return []
    assert isinstance(storage, BaseHeartbeat)
    return list(storage._get_stale_trial_ids(study_id(study)))


class DelegatedHeartbeat(BaseHeartbeat):
    """Mixin of a storage wrapper (attribute ``_inner``): the wrapped storage's heartbeat.

    Optuna enables the heartbeat only for storages that subclass its private ``BaseHeartbeat``;
    a wrapper must forward it, or a heartbeat configured on the wrapped ``RDBStorage`` would be
    silently off.
    """

    _inner: BaseStorage

    def _beat(self) -> BaseHeartbeat | None:
        inner = self._inner
        return inner if isinstance(inner, BaseHeartbeat) else None

    def record_heartbeat(self, trial_id: int) -> None:
        beat = self._beat()
        if beat is not None:
            beat.record_heartbeat(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        beat = self._beat()
        return [] if beat is None else list(beat._get_stale_trial_ids(study_id))

    def get_heartbeat_interval(self) -> int | None:
        beat = self._beat()
        return None if beat is None else beat.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Any:
        beat = self._beat()
        getter = getattr(beat, "get_heartbeat_stale_trial_callback", None)
        return None if getter is None else getter()

    def get_failed_trial_callback(self) -> Any:
        beat = self._beat()
        getter = getattr(beat, "get_failed_trial_callback", None)
        return None if getter is None else getter()
