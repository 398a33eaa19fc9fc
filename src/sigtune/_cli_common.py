"""Helpers shared by the ``sigtune`` commands (:mod:`sigtune.cli`, :mod:`sigtune.reports._commands`):
exit codes, one-line errors, JSON output, opening the study of a config or a storage."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import typer

from sigtune._exceptions import (
    ConfigError,
    ObjectiveError,
    RunFailedError,
    SigtuneError,
    StorageError,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
]

log = logging.getLogger("sigtune")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors_to_exit_codes(
    config: Path | None = None, as_json: bool = False, resume_hint: str | None = None
) -> Iterator[None]:
    """Map sigtune errors to exit codes with a one-line message (and a JSON one with --json)."""
    from sigtune._cli_storage import error_document, os_error_message
    from sigtune._storage import StudyNotFoundError

    def fail(code: int, message: str) -> NoReturn:
        if as_json:
            error_document(message, code)
        _fail(code, message)

    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        # `sigtune run CONFIG` continues a study and also works when the interrupt came before
        # the study existed (e.g. during an ML pre-search stage), where `resume` would fail.
        resume = resume_hint or (
            f"sigtune run {config}" if config is not None else "the same command"
        )
        typer.echo(f"\nInterrupted. Resume with: {resume}", err=True)
        if as_json:
            error_document("interrupted", EXIT_INTERRUPTED)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (ConfigError, ObjectiveError, StudyNotFoundError) as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    except (RunFailedError, StorageError) as exc:
        fail(EXIT_FAILED, str(exc))
    except SigtuneError as exc:
        fail(EXIT_FAILED, f"{type(exc).__name__}: {exc}")
    except OSError as exc:  # a path that cannot be created, read or written
        fail(EXIT_BAD_INPUT, os_error_message(exc))


def _quiet_libraries() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if hasattr(value, "item"):  # NumPy scalars
        return _jsonable(value.item())
    return str(value)


def _print_json(doc: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def _load(config: Path, overrides: Mapping[str, Any] | None = None) -> Any:
    from sigtune._config import load_config

    return load_config(config, overrides)


def _open_study(config: Path | None, storage: str | None, study_name: str | None) -> Any:
    """The :class:`~sigtune.Study` named by a config or by --storage/--study-name."""
    from sigtune._storage import StorageNotFoundError, StudyNotFoundError, resolve_storage
    from sigtune._study import load_study

    space = None
    if config is not None:
        cfg = _load(config, {"storage": storage, "study_name": study_name})
        storage_ref: Any = resolve_storage(cfg.storage, run_dir=cfg.run_dir)
        if cfg.storage is None and not Path(cfg.run_dir).exists():
            raise StudyNotFoundError(
                f"run directory {cfg.run_dir} does not exist: run `sigtune run {config}` first"
            )
        name, space = cfg.study_name, cfg.space
    else:
        if storage is None:
            raise ConfigError("give a CONFIG, or --storage (and --study-name)")
        storage_ref = resolve_storage(storage)
        name = study_name
    from sigtune._cli_storage import journal_warning

    warning = journal_warning(storage_ref)
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)
    # Read-only: never creates a storage file, and reads it once.
    try:
        opened = storage_ref.open(track_owner=False, create=False)
    except StorageNotFoundError as exc:
        first = f"`sigtune run {config}`" if config is not None else "`sigtune run`"
        raise StorageNotFoundError(f"{exc}: start the study with {first} first") from None
    if name is None:
        names = [s.study_name for s in opened.get_all_studies()]
        if len(names) != 1:
            raise StudyNotFoundError(
                f"storage {storage_ref.describe()} holds {len(names)} studies "
                f"({', '.join(names) or 'none'}); choose one with --study-name"
            )
        name = names[0]
    return load_study(name, storage_ref, space=space, opened=opened)
