"""A checked journal file backend, its ``flock`` lock, and ``sigtune repair``.

Optuna's :class:`~optuna.storages.journal.JournalFileBackend` silently skips a torn last record
(a write cut short by a full disk or a kill) when it reads, then appends the next record right
after the torn bytes: the file now has a garbage line in the middle and neither sigtune nor Optuna
can open it again. :class:`CheckedJournalBackend` reads and writes the same file format, but:

* reading a complete line that is not JSON raises :class:`JournalCorruptError`, naming the byte
  offset and the repair command;
* before appending (under the lock) it checks that the file ends with a newline, and refuses to
  append to a torn file (:class:`JournalCorruptError`, with the offset of the torn record);
* a failed write (``ENOSPC``, ``EIO``...) is cut back to the old end of the file, so a full disk
  never leaves a torn record behind (:class:`JournalWriteError`, one line);
* it never creates the file unless asked (read-only commands do not create storage).

A torn *tail* is still skipped when only reading (a reader does not take the lock, so it may see a
record being written right now), so ``sigtune status`` keeps working on a damaged file.

:func:`repair_journal` keeps every complete record that parses (in order), drops the rest and
writes a backup copy of the original first.

The lock (:class:`FlockLock`) takes ``flock(2)`` on ``<journal>.flock`` for one operation and
closes the descriptor again (no handle is kept between operations, so nothing leaks per study).
A holder that never lets go (a process stopped with ``SIGSTOP``) makes waiting processes fail
after ``SIGTUNE_LOCK_TIMEOUT`` seconds (default 120) with a message naming its PID.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend

from sigtune._exceptions import StorageError
from sigtune._optuna_compat import BaseJournalFileLock

__all__ = [
    "CheckedJournalBackend",
    "FlockLock",
    "JournalCorruptError",
    "JournalWriteError",
    "LockTimeoutError",
    "RepairResult",
    "lock_timeout",
    "repair_journal",
    "scan_journal",
]

LOCK_TIMEOUT_ENV = "SIGTUNE_LOCK_TIMEOUT"
_DEFAULT_LOCK_TIMEOUT_S = 120.0


class JournalCorruptError(StorageError):
    """The journal file has a record that does not parse (run ``sigtune repair``)."""


class JournalWriteError(StorageError):
    """Writing to the journal failed (disk full, permission denied, file gone)."""


class LockTimeoutError(StorageError):
    """Another process held the storage lock for longer than ``SIGTUNE_LOCK_TIMEOUT``."""


def lock_timeout() -> float:
    """Seconds to wait for a storage lock (``SIGTUNE_LOCK_TIMEOUT``, default 120)."""
    text = os.environ.get(LOCK_TIMEOUT_ENV)
    if not text:
        return _DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise StorageError(f"{LOCK_TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if not value > 0:
        raise StorageError(f"{LOCK_TIMEOUT_ENV} must be > 0 seconds, got {text!r}")
    return value


def os_error_text(exc: OSError) -> str:
    """``strerror`` of an OS error, with the file name when there is one."""
    what = exc.strerror or type(exc).__name__
    if exc.filename is not None:
        return f"{what}: {exc.filename}"
    return what


def _lock_holders(path: str) -> list[int]:
    """PIDs holding a ``flock`` on ``path`` (Linux ``/proc/locks``), empty if unknown."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a "->" marks a blocked waiter)
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        if parts[5] == want and parts[4].isdigit():
            pids.append(int(parts[4]))
    return pids


class FlockLock(BaseJournalFileLock):
    """Journal file lock with ``flock(2)`` on ``<journal>.flock``, one descriptor per operation.

    Uncontended it costs one ``open`` + ``flock`` + ``close``. Contended it polls with a short
    back-off (at most 2 ms between tries, far below Optuna's 1 s), so a waiter gives up after
    :func:`lock_timeout` seconds with :class:`LockTimeoutError` naming the holder. A holder that
    dies releases the lock at once (the kernel closes its descriptor).
    """

    def __init__(self, filepath: str) -> None:
        self._path = filepath + ".flock"
        self._fd: int | None = None

    @property
    def path(self) -> str:
        """The lock file."""
        return self._path

    def acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._wait(fd)
        except BaseException:
            os.close(fd)  # closing also drops a lock taken just before an interrupt
            raise
        self._fd = fd
        return True

    def _wait(self, fd: int) -> None:
        limit = lock_timeout()
        deadline = time.monotonic() + limit
        pause = 5e-5
        while True:
            time.sleep(pause)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                holders = _lock_holders(self._path)
                who = "process " + ", ".join(map(str, holders)) if holders else "another process"
                raise LockTimeoutError(
                    f"waited {limit:g} s for the lock {self._path}, held by {who} (stopped or "
                    f"hung? resume it with `kill -CONT` or end it); set {LOCK_TIMEOUT_ENV} to "
                    "wait longer"
                )
            pause = min(pause * 2, 2e-3)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> FlockLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class _Problem:
    offset: int
    line: int
    torn: bool
    detail: str


def _problem_text(path: str, problem: _Problem) -> str:
    kind = "a torn (incomplete) last record" if problem.torn else "a record that is not JSON"
    return (
        f"journal {path} has {kind} at byte {problem.offset} (line {problem.line}); "
        f"`sigtune repair {path}` keeps every complete record (after a backup copy)"
    )


class CheckedJournalBackend(BaseJournalBackend):
    """Optuna's journal file format, checked (see the module docstring).

    Args:
        file_path: The journal file.
        create: Create the file (and its directory) if missing; otherwise a missing file is a
            :class:`~sigtune.StorageError`.
    """

    def __init__(self, file_path: str, *, create: bool = True) -> None:
        self._file_path = file_path
        self._lock = FlockLock(file_path)
        # log number -> byte offset of its line; 0 -> 0
        self._offsets: dict[int, int] = {0: 0}
        if not os.path.exists(file_path):
            if not create:
                raise StorageError(f"storage {file_path} does not exist")
            try:
                Path(file_path).parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(file_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            except OSError as exc:
                raise JournalWriteError(
                    f"cannot create journal {file_path}: {os_error_text(exc)}"
                ) from None

    @property
    def file_path(self) -> str:
        """The journal file."""
        return self._file_path

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        try:
            f = open(self._file_path, "rb")
        except FileNotFoundError:
            raise JournalWriteError(
                f"journal {self._file_path} was deleted while the study was open"
            ) from None
        except OSError as exc:
            raise JournalWriteError(
                f"cannot read journal {self._file_path}: {os_error_text(exc)}"
            ) from None
        with f:
            start = 0
            if log_number_from in self._offsets:
                start = log_number_from
                f.seek(self._offsets[log_number_from])
            offset = self._offsets.get(start, 0)
            size = os.fstat(f.fileno()).st_size
            for number, line in enumerate(f, start=start):
                end = offset + len(line)
                if end > size:  # grown since we looked: read that next time
                    break
                if not line.endswith(b"\n"):
                    break  # torn tail: skipped when reading, refused when writing
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise JournalCorruptError(
                        _problem_text(
                            self._file_path, _Problem(offset, number + 1, False, str(exc))
                        )
                    ) from None
                self._offsets[number + 1] = end
                offset = end
                if number >= log_number_from:
                    yield record

    def _check_tail(self, fd: int) -> int:
        """Size of the file; raises if its last record is torn (called under the lock)."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        if os.pread(fd, 1, size - 1) == b"\n":
            return size
        # find where the torn record starts
        chunk = min(size, 1 << 20)
        tail = os.pread(fd, chunk, size - chunk)
        cut = tail.rfind(b"\n")
        offset = size - chunk + cut + 1 if cut >= 0 else (0 if chunk == size else size - chunk)
        line = self._line_number(fd, offset)
        raise JournalCorruptError(
            _problem_text(self._file_path, _Problem(offset, line, True, "torn"))
        )

    def _line_number(self, fd: int, offset: int) -> int:
        count, pos = 0, 0
        while pos < offset:
            block = os.pread(fd, min(1 << 20, offset - pos), pos)
            if not block:
                break
            count += block.count(b"\n")
            pos += len(block)
        return count + 1

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(r, separators=(",", ":")) for r in logs) + "\n").encode()
        path = self._file_path
        with self._lock:
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            except FileNotFoundError:
                raise JournalWriteError(
                    f"journal {path} was deleted while the study was open; every finished trial "
                    "written before is lost with it"
                ) from None
            except OSError as exc:
                raise JournalWriteError(
                    f"cannot write journal {path}: {os_error_text(exc)}"
                ) from None
            try:
                size = self._check_tail(fd)
                try:
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    os.fsync(fd)
                except OSError as exc:
                    self._cut_back(fd, size)
                    raise JournalWriteError(
                        f"cannot write journal {path}: {os_error_text(exc)}; the trials finished "
                        "before are kept"
                        + (" (free some space, then resume)" if exc.errno == errno.ENOSPC else "")
                    ) from None
            finally:
                os.close(fd)

    @staticmethod
    def _cut_back(fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError:  # pragma: no cover - nothing more we can do; the tail check catches it
            pass


# --------------------------------------------------------------------------- scan / repair


@dataclass(frozen=True)
class RepairResult:
    """What :func:`repair_journal` did.

    Attributes:
        kept: Complete records kept.
        dropped: Lines dropped (torn tail, garbage lines).
        first_bad_offset: Byte offset of the first dropped line, ``None`` if the file was sound.
        backup: The backup copy of the original (``None`` if nothing was changed).
    """

    kept: int
    dropped: int
    first_bad_offset: int | None
    backup: Path | None


def scan_journal(path: str | os.PathLike[str]) -> tuple[list[bytes], list[int]]:
    """Split a journal into its good lines and the byte offsets of the bad ones."""
    good: list[bytes] = []
    bad: list[int] = []
    offset = 0
    with open(path, "rb") as f:
        for line in f:
            ok = line.endswith(b"\n")
            if ok:
                try:
                    record = json.loads(line)
                    ok = isinstance(record, dict) and "op_code" in record
                except ValueError:
                    ok = False
            if ok:
                good.append(line)
            else:
                bad.append(offset)
            offset += len(line)
    return good, bad


def repair_journal(path: str | os.PathLike[str]) -> RepairResult:
    """Keep every complete, parseable record of a journal file; back up the original first.

    Runs under the journal's lock, so it waits for a writer in progress. The backup is
    ``<journal>.bak`` (``.bak1``, ``.bak2``... if that exists).

    Raises:
        StorageError: The file is missing or cannot be rewritten.
    """
    p = Path(path)
    if not p.is_file():
        raise StorageError(f"journal {p} does not exist")
    with FlockLock(str(p)):
        try:
            good, bad = scan_journal(p)
        except OSError as exc:
            raise StorageError(f"cannot read journal {p}: {os_error_text(exc)}") from None
        if not bad:
            return RepairResult(len(good), 0, None, None)
        backup = p.with_name(p.name + ".bak")
        n = 0
        while backup.exists():
            n += 1
            backup = p.with_name(f"{p.name}.bak{n}")
        tmp = p.with_name(p.name + ".repair-tmp")
        try:
            shutil.copy2(p, backup)
            with open(tmp, "wb") as f:
                f.writelines(good)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot repair journal {p}: {os_error_text(exc)}") from None
    return RepairResult(len(good), len(bad), bad[0], backup)
