"""Storage helpers of the command line: ``sigtune repair``, journal health and error documents.

Kept out of :mod:`sigtune.cli` so the command module only registers the commands.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

from sigtune._exceptions import ConfigError
from sigtune._journal import os_error_text, repair_journal

__all__ = [
    "check_pipeline_config",
    "check_writable_output",
    "error_document",
    "journal_warning",
    "os_error_message",
    "repair",
    "stale_owner",
]


def repair(storage: str) -> str:
    """Body of ``sigtune repair STORAGE``: returns the text to print.

    Raises:
        ConfigError: ``STORAGE`` is not a journal file (exit code 2).
        StorageError: The file cannot be read or rewritten.
    """
    text = storage
    if text.startswith("journal://"):
        rest = text[len("journal://") :]
        text = rest[1:] if rest.startswith("/") else rest
    path = Path(text)
    if "://" in text or not path.name:
        raise ConfigError(
            f"sigtune repair works on journal files (a path or journal:///path), got {storage!r}; "
            "SQLite and PostgreSQL keep their own transaction logs"
        )
    if not path.is_file():
        raise ConfigError(f"journal {path} does not exist")
    result = repair_journal(path)
    if result.backup is None:
        return f"{path}: {result.kept} records, all complete: nothing to repair"
    return (
        f"{path}: kept {result.kept} complete records, dropped {result.dropped} "
        f"(the first at byte {result.first_bad_offset}); backup of the original: {result.backup}"
    )


def journal_warning(ref: Any) -> str | None:
    """A one-line warning when a journal file ends in a torn record (it stays readable)."""
    if getattr(ref, "kind", None) != "journal" or ref.path is None:
        return None
    path: Path = ref.path
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None
            f.seek(max(0, size - (1 << 20)))
            tail = f.read()
    except OSError:
        return None
    if tail.endswith(b"\n"):
        return None
    cut = tail.rfind(b"\n")
    offset = size - len(tail) + cut + 1
    return (
        f"journal {path} ends in a torn (incomplete) record at byte {offset}; the study can be "
        f"read but not continued: `sigtune repair {path}` keeps every complete record"
    )


def stale_owner(owner: Any) -> bool:
    """Whether a RUNNING trial's owner process is known to be dead."""
    from sigtune._storage import owner_is_alive

    return isinstance(owner, str) and owner_is_alive(owner) is False


def os_error_message(exc: OSError) -> str:
    """One line for a file-system error (with a hint for the common ones)."""
    hints = {
        errno.ENOSPC: "free some space and run again",
        errno.EACCES: "check the permissions",
        errno.EROFS: "the file system is read-only: choose another run_dir / storage",
        errno.EISDIR: "give a file name, not a directory",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
    }
    hint = hints.get(exc.errno or 0)
    return os_error_text(exc) + (f" ({hint})" if hint else "")


def error_document(message: str, code: int) -> None:
    """Print the ``--json`` error document on stdout."""
    sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
    sys.stdout.flush()


def check_writable_output(path: Path | None) -> None:
    """``export -o``: refuse a directory up front."""
    if path is not None and path.is_dir():
        raise ConfigError(f"--output {path} is a directory; give a file name")


_PIPELINE_KEYS = {"trainable", "search", "split", "varsel", "selection", "evaluation", "pbt"}


def check_pipeline_config(path: Path) -> None:
    """``sigtune run`` on an ML pipeline config: name the command that runs it (exit code 2).

    A pipeline config has a ``data`` section and stage sections but no ``objective``; without
    this check the user gets a dozen unknown-field errors.
    """
    try:
        import yaml

        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:
        return  # the run-config loader reports unreadable files with its own message
    if isinstance(raw, dict) and "objective" not in raw and "data" in raw:
        if _PIPELINE_KEYS & set(raw):
            raise ConfigError(
                f"{path} is an ML pipeline config (data + stages, no objective): run it with "
                f"`python -m sigtune.pipelines.ml {path}`; `sigtune run` takes a run-config "
                "with an `objective:` (e.g. `objective: {type: ml, ...}`)"
            )
