"""Storage URLs, the embedded default storage, trial ownership and stale RUNNING trials.

Which storage a study lives in is decided once, by :func:`resolve_storage`, and described by a
picklable :class:`StorageRef`. Every process that works on the study (the main process and each
worker process) calls :meth:`StorageRef.open` to get its *own* storage object: database engines and
file handles are never shared across a ``fork``.

Accepted values (``storage=`` of :func:`sigtune.optimize`, ``storage:`` of the run-config):

====================================  ===========================================================
``None``                              in-memory for ``n_jobs=1`` without ``run_dir``; otherwise
                                      the embedded default ``<run_dir>/study.journal``
``"journal:///runs/x.journal"``       Optuna ``JournalStorage`` with a file backend (relative path;
                                      ``journal:////abs/path`` for an absolute one, like SQLite)
``"runs/x.journal"``, ``"x.log"``     a plain path ending ``.journal`` / ``.log``: journal file
``"sqlite:///runs/x.db"``             ``RDBStorage`` on SQLite, WAL mode and a 120 s busy timeout
``"postgresql://..."``, ``mysql://``  any SQLAlchemy URL: ``RDBStorage`` with ``pool_pre_ping``
an ``optuna.storages.BaseStorage``    used as is (in-process runs only)
====================================  ===========================================================

Why the embedded default is a journal file and not SQLite: Optuna's journal file backend is an
append-only log written under a file lock, designed for several processes; with 8 worker processes
and a trivial objective it records a trial about 4x faster than SQLite (WAL, busy timeout), a
record is one ``write`` + ``fsync`` (a killed process leaves no half transaction), and it needs no
tuning to avoid ``database is locked``. sigtune locks the journal with
:class:`~sigtune._journal.FlockLock` (``flock(2)``, at most 2 ms between tries when contended)
instead of Optuna's symlink lock (up to 1 s between tries): no starvation of waiting workers, a
worker killed while holding the lock releases it at once, and a holder that never lets go (a
stopped process) is reported after ``SIGTUNE_LOCK_TIMEOUT`` seconds. The file itself is read and
written by :class:`~sigtune._journal.CheckedJournalBackend` (Optuna's format; torn and corrupt
records are refused instead of appended to).
``sqlite:///`` remains fully supported (the 8-worker test runs on both); choose it when you want to
open the study with SQL tools.

Trial ownership: every trial created through a :class:`StorageRef` records the process that runs it
in ``system_attrs["sigtune:owner"]`` (``host:pid:start``; the owner is written in the same storage
operation that creates the trial, so it costs nothing extra). On resume, RUNNING trials whose owner
process is gone are *stale*: :func:`handle_stale_running` marks them FAIL with
``fail_reason = "worker died (stale RUNNING on resume)"`` (and, with ``on_stale_running="requeue"``,
enqueues their parameters again). Trials of live processes, and of processes on other hosts, are not
touched by the owner stamps.

Heartbeat (server databases: PostgreSQL, MySQL, ...): there Optuna's own heartbeat is on; every
trial records one every :data:`HEARTBEAT_INTERVAL_S` while it runs, and on resume a RUNNING trial
without one for :data:`HEARTBEAT_GRACE_S` is stale whatever host ran it (``fail_reason`` =
:data:`STALE_HEARTBEAT_REASON`). SQLite and the journal file (one host) rely on the owner stamps.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import socket
import sqlite3
import warnings
import weakref
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import (
    BaseStorage,
    InMemoryStorage,
    JournalStorage,
    RDBStorage,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sigtune._exceptions import ConfigError, StorageError
from sigtune._journal import CheckedJournalBackend, FlockLock, os_error_text
from sigtune._optuna_compat import (
    CachedStorage,
    DelegatedHeartbeat,
    FrozenStudy,
    stale_heartbeat_trial_ids,
    study_storage,
    trial_id,
)
from sigtune._target import mark_uncounted

__all__ = [
    "EMBEDDED_FILENAME",
    "FAIL_REASON_KEY",
    "FAIL_TRACEBACK_KEY",
    "OWNER_KEY",
    "STALE_REASON",
    "FlockLock",
    "StorageNotFoundError",
    "StorageRef",
    "StudyNotFoundError",
    "counted_claims",
    "current_owner",
    "handle_stale_running",
    "indexed_best_trial",
    "owner_is_alive",
    "resolve_storage",
]

log = logging.getLogger(__name__)

EMBEDDED_FILENAME = "study.journal"
OWNER_KEY = "sigtune:owner"
FAIL_REASON_KEY = "fail_reason"
# System attr holding the full traceback of a trial whose objective raised (``sigtune status
# --failed`` and the report show it).
FAIL_TRACEBACK_KEY = "sigtune:traceback"
STALE_REASON = "worker died (stale RUNNING on resume)"
#: Heartbeat of server databases (PostgreSQL, MySQL, ...): Optuna's, recorded every
#: HEARTBEAT_INTERVAL_S while a trial runs; a RUNNING trial without one for HEARTBEAT_GRACE_S is
#: stale on resume, whatever host ran it (owner stamps only judge processes of this host).
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 180
STALE_HEARTBEAT_REASON = (
    f"worker died (no heartbeat for {HEARTBEAT_GRACE_S} s; stale RUNNING on resume)"
)
_SQLITE_BUSY_TIMEOUT_S = 120.0


class StudyNotFoundError(StorageError):
    """The storage has no study of that name (bad input: ``sigtune`` exits with code 2)."""


class StorageNotFoundError(StudyNotFoundError):
    """A read-only command was pointed at a storage that does not exist (exit code 2)."""


StorageKind = Literal["memory", "journal", "sqlite", "rdb", "object"]


@dataclass(frozen=True)
class StorageRef:
    """Where a study lives, in a form every worker process can open again.

    Attributes:
        kind: ``memory``, ``journal``, ``sqlite``, ``rdb`` (other SQLAlchemy URLs) or ``object``
            (a storage object given by the caller).
        url: Normalised URL (``journal:////abs/path.journal``, ``sqlite:////abs/x.db``, the
            SQLAlchemy URL), ``None`` for ``memory`` / ``object``.
        instance: The storage object for ``memory`` / ``object`` (cannot be re-opened elsewhere).
    """

    kind: StorageKind
    url: str | None = None
    instance: BaseStorage | None = None

    @property
    def shareable(self) -> bool:
        """Whether other processes can open this storage (``n_jobs > 1``, resume)."""
        return self.url is not None

    @property
    def path(self) -> Path | None:
        """The file behind a ``journal`` / ``sqlite`` storage, else ``None``."""
        if self.url is None or self.kind not in ("journal", "sqlite"):
            return None
        return Path(self.url.split(":///", 1)[1])

    def describe(self) -> str:
        """A short human-readable description (for messages and ``sigtune status``)."""
        if self.url is not None:
            return _redact(self.url)
        return "in-memory" if self.kind == "memory" else type(self.instance).__name__

    def open(self, *, track_owner: bool = True, create: bool = True) -> BaseStorage:
        """Create this process's storage object.

        Args:
            track_owner: Record the creating process in every new trial (see module docstring).
                Ignored for in-memory storage, which cannot outlive its process.
            create: Create a missing journal / SQLite file; ``False`` (read-only commands)
                raises :class:`StorageNotFoundError` instead.

        Raises:
            StorageError: The database cannot be reached or the file cannot be created.
        """
        if self.instance is not None:
            if self.kind == "memory" or not track_owner:
                return self.instance
            return _OwnedStorage(self.instance)
        assert self.url is not None
        try:
            inner = _open_url(self.kind, self.url, create)
        except StorageError:
            raise
        except Exception as exc:  # SQLAlchemy / driver / OS errors
            raise StorageError(
                f"cannot open storage {self.describe()}: {type(exc).__name__}: {exc}"
            ) from exc
        return _OwnedStorage(inner) if track_owner else inner


def resolve_storage(
    storage: str | os.PathLike[str] | BaseStorage | StorageRef | None,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    n_jobs: int = 1,
) -> StorageRef:
    """Decide where a study is stored.

    Args:
        storage: ``None``, a URL / path (see the module docstring) or a storage object.
        run_dir: Run directory; with ``storage=None`` the embedded file goes there.
        n_jobs: Number of worker processes; ``> 1`` needs a storage other processes can open.

    Returns:
        The :class:`StorageRef`.

    Raises:
        ConfigError: The URL is not understood, or an in-process-only storage was asked to serve
            several worker processes.
    """
    ref = _resolve(storage, run_dir=run_dir, n_jobs=n_jobs)
    if n_jobs > 1 and not ref.shareable:
        raise ConfigError(
            f"n_jobs={n_jobs} runs worker processes that share the study through its storage, "
            f"but storage {ref.describe()} can only be used in this process; give a storage URL "
            "(e.g. 'journal:///runs/x.journal' or 'sqlite:///runs/x.db') or a run_dir"
        )
    return ref


def _resolve(
    storage: str | os.PathLike[str] | BaseStorage | StorageRef | None,
    *,
    run_dir: str | os.PathLike[str] | None,
    n_jobs: int,
) -> StorageRef:
    if isinstance(storage, StorageRef):
        return storage
    if isinstance(storage, InMemoryStorage):
        return StorageRef("memory", instance=storage)
    if isinstance(storage, BaseStorage):
        return StorageRef("object", instance=storage)
    if storage is None:
        if run_dir is None:  # n_jobs > 1 is rejected by the caller
            return StorageRef("memory", instance=InMemoryStorage())
        path = Path(run_dir) / EMBEDDED_FILENAME
        return StorageRef("journal", url=f"journal:///{path.resolve()}")
    if isinstance(storage, os.PathLike):
        storage = os.fspath(storage)
    if not isinstance(storage, str):
        raise ConfigError(
            f"storage must be a URL string, a path or an optuna storage, got {type(storage).__name__}"
        )
    text = storage.strip()
    if not text:
        raise ConfigError("storage is an empty string; give a URL or leave it null")
    if text.startswith("journal://"):
        rest = text[len("journal://") :]
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"journal storage URL {text!r} must look like 'journal:///relative/path.journal' "
                "or 'journal:////absolute/path.journal'"
            )
        return StorageRef("journal", url=f"journal:///{Path(rest[1:]).resolve()}")
    if "://" not in text:
        if text.endswith((".journal", ".log")):
            return StorageRef("journal", url=f"journal:///{Path(text).resolve()}")
        if text.endswith((".db", ".sqlite", ".sqlite3")):
            return StorageRef("sqlite", url=f"sqlite:///{Path(text).resolve()}")
        raise ConfigError(
            f"storage {text!r} is neither a URL nor a path ending in .journal/.log/.db; use e.g. "
            "'journal:///runs/x.journal', 'sqlite:///runs/x.db' or 'postgresql://user@host/db'"
        )
    scheme = text.split("://", 1)[0].lower()
    if scheme.startswith("sqlite"):
        rest = text.split("://", 1)[1]
        if rest in ("", "/", "/:memory:"):
            if n_jobs > 1:
                raise ConfigError(
                    f"storage {text!r} is an in-memory SQLite database; n_jobs={n_jobs} needs a file"
                )
            # Every connection to an in-memory SQLite URL is a new, empty database, so a study
            # opened through it twice (run, then read back) loses its records: it is the
            # in-memory storage of this process, and nothing else.
            return StorageRef("memory", instance=InMemoryStorage())
        if not rest.startswith("/"):
            raise ConfigError(f"SQLite URL {text!r} must look like 'sqlite:///relative/path.db'")
        return StorageRef("sqlite", url=f"sqlite:///{Path(rest[1:]).resolve()}")
    if scheme.startswith(("redis", "grpc")):
        raise ConfigError(f"storage scheme {scheme!r} is not supported; use a journal file or SQL")
    return StorageRef("rdb", url=text)


def _redact(url: str) -> str:
    """Hide a password in ``scheme://user:password@host``."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"


def _open_url(kind: StorageKind, url: str, create: bool = True) -> BaseStorage:
    if kind == "journal":
        path = Path(url.split(":///", 1)[1])
        if not create and not path.is_file():
            raise StorageNotFoundError(f"storage {path} does not exist")
        return JournalStorage(CheckedJournalBackend(str(path), create=create))
    if kind == "sqlite":
        sqlite_rdb = _open_sqlite(url, create)
        cached = CachedStorage(sqlite_rdb)
        _RDB_BEHIND[cached] = sqlite_rdb
        return cached
    with _schema_lock(url), warnings.catch_warnings():
        # heartbeat_interval is "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=HEARTBEAT_GRACE_S,
        )
    cached = CachedStorage(rdb)
    _RDB_BEHIND[cached] = rdb
    return cached


# The RDBStorage behind each cached storage this module opened (for the SQL queries below).
_RDB_BEHIND: weakref.WeakKeyDictionary[BaseStorage, RDBStorage] = weakref.WeakKeyDictionary()

_TIE_SQL = (
    "SELECT t.trial_id FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
    "WHERE t.study_id = :sid AND t.state = 'COMPLETE' AND v.objective = 0 "
    "AND v.value_type = 'FINITE' AND v.value = :value ORDER BY t.number LIMIT 1"
)


_CLAIMS_SQL = (
    "SELECT COUNT(*) FROM trials t WHERE t.study_id = :sid "
    "AND t.state IN ('COMPLETE', 'PRUNED', 'FAIL', 'RUNNING') AND NOT EXISTS ("
    "SELECT 1 FROM trial_system_attributes a WHERE a.trial_id = t.trial_id "
    "AND a.key IN ('sigtune:uncounted', 'sigtune:warm_start'))"
)


def _rdb_behind(storage: BaseStorage) -> RDBStorage | None:
    """The database behind a storage this module opened (owner-stamping wrapper or not); ``None``
    for the journal and in-memory storages."""
    return _RDB_BEHIND.get(getattr(storage, "inner", storage))


def _first_row(rdb: RDBStorage, sql: str, **params: Any) -> Any:
    """The first row of one SQL query on the database (``None`` if it returns no row)."""
    import sqlalchemy

    with rdb.engine.connect() as con:
        return con.execute(sqlalchemy.text(sql), params).first()


def counted_claims(storage: BaseStorage, study_id: int) -> int | None:
    """Finished and RUNNING trials that count towards ``n_trials`` (:mod:`sigtune._target`), by
    one ``COUNT`` query on a database; ``None`` for the journal and in-memory storages."""
    rdb = _rdb_behind(storage)
    if rdb is None:
        return None
    return int(_first_row(rdb, _CLAIMS_SQL, sid=study_id)[0])


_ONLY_WAITING = (TrialState.WAITING,)
_WAITING_SQL = "SELECT 1 FROM trials WHERE study_id = :sid AND state = 'WAITING' LIMIT 1"


def any_waiting(storage: BaseStorage, study_id: int) -> bool:
    """Whether the study has a WAITING (enqueued) trial: one query on a database; ``True``
    (look at the trials) for the journal and in-memory storages."""
    rdb = _rdb_behind(storage)
    return rdb is None or _first_row(rdb, _WAITING_SQL, sid=study_id) is not None


def indexed_best_trial(storage: BaseStorage, study_id: int) -> FrozenTrial | None:
    """The best COMPLETE trial of a single-objective study by the database's own (indexed)
    query, ties broken by the lowest trial number; ``None`` where there is no such query (journal,
    in-memory), no finite best value, or no COMPLETE trial: then the caller scans the trials.

    Constraints are not looked at: the caller checks that the trial is feasible.
    """
    rdb = _rdb_behind(storage)
    if rdb is None:
        return None
    try:
        best = storage.get_best_trial(study_id)
    except (ValueError, RuntimeError):  # no COMPLETE trial / several objectives
        return None
    if best.values is None or not math.isfinite(best.values[0]):
        return None
    row = _first_row(rdb, _TIE_SQL, sid=study_id, value=float(best.values[0]))
    if row is None:
        return None
    return best if int(row[0]) == trial_id(best) else storage.get_trial(int(row[0]))


# Any fixed 64-bit number: the key of the advisory lock taken while the schema is created.
_PG_SCHEMA_LOCK_KEY = 0x5167_7475_6E65


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """On PostgreSQL, hold a session advisory lock while Optuna creates/checks the schema.

    Processes opening a fresh database at once race to ``CREATE TYPE``/``CREATE TABLE`` (the
    loser crashes with a unique violation); under the lock the first creates the schema and the
    others wait, then find it. Other databases: no lock (SQLite has its own, in a file).
    """
    if not url.startswith(("postgresql", "postgres")):
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as con:
            con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                con.execute(
                    sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_SCHEMA_LOCK_KEY}
                )
    finally:
        engine.dispose()


def _open_sqlite(url: str, create: bool = True) -> RDBStorage:
    rest = url.split("://", 1)[1]
    if rest in ("", "/", "/:memory:"):
        return RDBStorage(url)
    path = Path(rest[1:])
    if not create and not path.is_file():
        raise StorageNotFoundError(f"storage {path} does not exist")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the directory of {path}: {os_error_text(exc)}") from None
    # Two processes opening a fresh database race to create the schema (one crashes with
    # "table already exists"): the first creates it under a file lock, the others wait and join.
    with FlockLock(str(path)):
        return _open_sqlite_locked(url, path)


def _open_sqlite_locked(url: str, path: Path) -> RDBStorage:
    # WAL lets readers and one writer work at the same time; it is a property of the file.
    con = sqlite3.connect(path, timeout=_SQLITE_BUSY_TIMEOUT_S)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()

    def connect() -> sqlite3.Connection:
        # A long busy timeout: writers queue instead of failing with "database is locked".
        # synchronous=NORMAL is crash-safe in WAL mode (a killed process never corrupts the file).
        c = sqlite3.connect(path, timeout=_SQLITE_BUSY_TIMEOUT_S)
        c.execute("PRAGMA synchronous=NORMAL")
        return c

    return RDBStorage(url, engine_kwargs={"creator": connect})


# --------------------------------------------------------------------------- trial ownership

_OWNER_CACHE: dict[int, str] = {}


def _process_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux), ``None`` if absent or dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # a zombie (nobody reaped the killed process) is dead
        return None
    return fields[19].decode()  # field 22 of proc(5)


def current_owner() -> str:
    """``host:pid:start`` of this process (computed per process, so it is right after ``fork``)."""
    pid = os.getpid()
    owner = _OWNER_CACHE.get(pid)
    if owner is None:
        owner = f"{socket.gethostname()}:{pid}:{_process_start(pid) or '0'}"
        _OWNER_CACHE.clear()
        _OWNER_CACHE[pid] = owner
    return owner


def owner_is_alive(owner: str) -> bool | None:
    """Whether the process named by an owner id still runs.

    Returns:
        ``True`` / ``False`` for processes on this host, ``None`` for another host (unknown).
    """
    try:
        host, pid_text, start = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    actual = _process_start(pid)
    if actual is not None:
        return start in ("0", actual)  # a different start time means the pid was reused
    if Path("/proc/self/stat").exists():
        return False  # Linux and no such process
    try:  # pragma: no cover - non-Linux fallback
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_pid(owner: str) -> int | None:
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    return int(parts[1])


def handle_stale_running(
    study: optuna.Study,
    *,
    policy: Literal["fail", "requeue"] = "fail",
    pids: Container[int] | None = None,
) -> list[int]:
    """Finish the RUNNING trials whose owner process is dead.

    A trial is stale when its owner stamp names a dead process of this host, or (server
    databases, ``pids=None``) when its heartbeat is older than :data:`HEARTBEAT_GRACE_S`.

    Args:
        study: The study to clean up.
        policy: ``"fail"`` marks them FAIL; ``"requeue"`` also enqueues their parameters again.
        pids: Only consider trials of these process ids on this host (used after a run for its
            crashed worker processes); ``None`` considers every dead owner on this host.

    Returns:
        Numbers of the trials that were marked FAIL.
    """
    if policy not in ("fail", "requeue"):
        raise ConfigError(f"on_stale_running must be 'fail' or 'requeue', got {policy!r}")
    storage = study_storage(study)
    marked: list[int] = []
    unknown = 0
    stale: list[tuple[FrozenTrial, str]] = []
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in running:
        owner = trial.system_attrs.get(OWNER_KEY)
        if not isinstance(owner, str):
            # An enqueued trial popped by a process killed before it wrote its owner stamp
            # (older sigtune wrote the stamp after the state): no live sigtune process runs it.
            if pids is not None or "fixed_params" not in trial.system_attrs:
                unknown += 1
                continue
        elif pids is not None and owner_pid(owner) not in pids:
            continue
        elif owner == current_owner() or owner_is_alive(owner) is not False:
            continue
        stale.append((trial, STALE_REASON))
    if pids is None:  # on resume: also trials whose heartbeat stopped (any host)
        judged = {trial_id(t) for t, _ in stale}
        no_beat = set(stale_heartbeat_trial_ids(study)) - judged
        stale += [(t, STALE_HEARTBEAT_REASON) for t in running if trial_id(t) in no_beat]
    for trial, reason in stale:
        storage.set_trial_user_attr(trial_id(trial), FAIL_REASON_KEY, reason)
        mark_uncounted(storage, trial_id(trial), "stale")
        try:
            ok = storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile
        if not ok:
            continue
        marked.append(trial.number)
        if policy == "requeue":
            # A trial killed before it suggested anything still has its enqueued point.
            params = dict(trial.params) or dict(trial.system_attrs.get("fixed_params") or {})
            study.enqueue_trial(params, user_attrs={"sigtune:requeued_from": trial.number})
    if marked:
        reasons = {t.number: reason for t, reason in stale}
        log.warning(
            "marked %d stale RUNNING trial(s) FAIL: %s",
            len(marked),
            ", ".join(f"{n} ({reasons[n]})" for n in marked),
        )
    if unknown and pids is None:
        log.info("%d RUNNING trial(s) without a sigtune owner were left alone", unknown)
    return marked


class _OwnedStorage(BaseStorage, DelegatedHeartbeat):
    """A storage that stamps the running process into every trial it starts.

    Delegates everything to the wrapped storage; only trial creation (and popping an enqueued
    trial) adds ``system_attrs["sigtune:owner"]``. New trials are created from a template so the
    owner is written in the same storage operation.
    """

    def __init__(self, inner: BaseStorage) -> None:
        self._inner = inner

    @property
    def inner(self) -> BaseStorage:
        """The wrapped storage."""
        return self._inner

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None:
            template_trial = FrozenTrial(
                number=-1,
                state=TrialState.RUNNING,
                value=None,
                datetime_start=datetime.datetime.now(),
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={},
                system_attrs={OWNER_KEY: current_owner()},
                intermediate_values={},
                trial_id=-1,
            )
        return self._inner.create_new_trial(study_id, template_trial)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state != TrialState.RUNNING:
            return self._inner.set_trial_state_values(trial_id, state, values)
        # Popping an enqueued trial: stamp the owner *before* the state changes, so a kill between
        # the two writes never leaves an ownerless RUNNING trial (a WAITING trial with a stamp is
        # harmless: the next process to pop it stamps it again).
        me = current_owner()
        try:
            self._inner.set_trial_system_attr(trial_id, OWNER_KEY, me)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # another process popped and finished it meanwhile
        ok = self._inner.set_trial_state_values(trial_id, state, values)
        if ok and self._inner.get_trial_system_attrs(trial_id).get(OWNER_KEY) != me:
            self._inner.set_trial_system_attr(trial_id, OWNER_KEY, me)  # lost a race to stamp
        return ok

    # ---- plain delegation
    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        return self._inner.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._inner.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._inner.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._inner.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._inner.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._inner.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._inner.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._inner.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._inner.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._inner.get_all_studies()

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        self._inner.set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._inner.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self._inner.get_trial_number_from_id(trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._inner.get_trial_param(trial_id, param_name)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._inner.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._inner.set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._inner.set_trial_system_attr(trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._inner.get_trial(trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        # Optuna's ask() looks for enqueued trials before every trial. On a database, the cached
        # storage answers that by fetching every trial changed since its last look (a few ms with
        # several workers); one query says whether there is any WAITING trial at all.
        if states == _ONLY_WAITING and not any_waiting(self._inner, study_id):
            return []
        return self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def get_n_trials(
        self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None
    ) -> int:
        return self._inner.get_n_trials(study_id, state)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._inner.get_best_trial(study_id)

    def get_trial_params(self, trial_id: int) -> dict[str, Any]:
        return self._inner.get_trial_params(trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._inner.get_trial_user_attrs(trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._inner.get_trial_system_attrs(trial_id)

    def remove_session(self) -> None:
        self._inner.remove_session()

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        self._inner.check_trial_is_updatable(trial_id, trial_state)
