"""What one trial left behind: its fail reason, traceback and captured output (``sigtune status
--trial N``).

Engines keep the traceback of a failed trial in ``system_attrs["sigtune:traceback"]`` and the last
:data:`LOG_CHARS` characters of what the objective wrote to ``sys.stdout`` / ``sys.stderr`` (still
printed as well: :func:`captured_output`) in ``system_attrs["sigtune:log"]``, when it wrote anything.
Output written by C code straight to the file descriptors is not captured.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import Any

from sigtune._exceptions import ConfigError

__all__ = [
    "LOG_CHARS",
    "LOG_KEY",
    "TRACEBACK_KEY",
    "OutputCapture",
    "captured_output",
    "format_trial_log",
    "has_logs",
    "trial_log",
]

LOG_KEY = "sigtune:log"
TRACEBACK_KEY = "sigtune:traceback"
LOG_CHARS = 4000  # the end of a trial's output is kept: where the error usually is


class _Tee(io.TextIOBase):
    """Writes to the original stream and keeps a copy."""

    def __init__(self, stream: Any, copy: io.StringIO) -> None:
        self._stream, self._copy = stream, copy

    def write(self, text: str) -> int:
        self._copy.write(text)
        with contextlib.suppress(Exception):
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.flush()

    def fileno(self) -> int:  # libraries that write to the descriptor still find it
        return int(self._stream.fileno())

    def isatty(self) -> bool:
        with contextlib.suppress(Exception):
            return bool(self._stream.isatty())
        return False


@contextlib.contextmanager
def captured_output(buf: io.StringIO) -> Iterator[None]:
    """Copy what is written to ``sys.stdout`` / ``sys.stderr`` in the block into ``buf``.

    Example:
        >>> buf = io.StringIO()
        >>> with captured_output(buf):
        ...     print("epoch 1: loss 0.5")
        epoch 1: loss 0.5
        >>> buf.getvalue()
        'epoch 1: loss 0.5\\n'
    """
    with (
        contextlib.redirect_stdout(_Tee(sys.stdout, buf)),
        contextlib.redirect_stderr(_Tee(sys.stderr, buf)),
    ):
        yield


class OutputCapture:
    """:func:`captured_output` for one trial at a time, reused across the trials of a run.

    ``with capture: ...`` copies what the block writes to ``sys.stdout`` / ``sys.stderr`` into
    :attr:`buf` (emptied at the start of each block) and restores both streams at its end. The
    two tee streams are made once and kept while ``sys.stdout`` / ``sys.stderr`` stay the same
    objects, so the per-trial cost is a few attribute swaps.

    Example:
        >>> capture = OutputCapture()
        >>> with capture:
        ...     print("epoch 1")
        epoch 1
        >>> capture.text()
        'epoch 1\\n'
    """

    def __init__(self) -> None:
        self.buf = io.StringIO()
        self._tees: tuple[Any, Any, _Tee, _Tee] | None = None
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> None:
        buf = self.buf
        buf.seek(0)
        buf.truncate()
        out, err = sys.stdout, sys.stderr
        tees = self._tees
        if tees is None or tees[0] is not out or tees[1] is not err:
            tees = self._tees = (out, err, _Tee(out, buf), _Tee(err, buf))
        self._saved = (out, err)
        sys.stdout, sys.stderr = tees[2], tees[3]

    def __exit__(self, *exc: object) -> None:
        assert self._saved is not None
        sys.stdout, sys.stderr = self._saved
        self._saved = None

    def text(self) -> str:
        """What the last block wrote."""
        return self.buf.getvalue()


def trial_log(study: Any, number: int) -> dict[str, Any]:
    """State, params, fail reason, traceback and captured output of trial ``number``.

    Raises:
        ConfigError: The study has no such trial.
    """
    trials = study.optuna.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise ConfigError(f"no trial {number}: the study has trials 0..{len(trials) - 1}")
    t = trials[number]
    return {
        "number": t.number,
        "state": t.state.name,
        "params": dict(t.params),
        "values": t.values,
        "fail_reason": t.user_attrs.get("fail_reason"),
        "traceback": t.system_attrs.get(TRACEBACK_KEY),
        "output": t.system_attrs.get(LOG_KEY),
    }


def has_logs(study: Any) -> list[int]:
    """Numbers of the trials that kept a traceback or captured output."""
    return [
        t.number
        for t in study.optuna.get_trials(deepcopy=False)
        if TRACEBACK_KEY in t.system_attrs or LOG_KEY in t.system_attrs
    ]


def format_trial_log(doc: dict[str, Any]) -> str:
    """The text of :func:`trial_log` for the terminal."""
    lines = [f"Trial {doc['number']}: {doc['state']}", f"Params: {doc['params']}"]
    if doc["values"] is not None:
        lines.append(f"Values: {doc['values']}")
    if doc["fail_reason"]:
        lines.append(f"Fail reason: {doc['fail_reason']}")
    if doc["traceback"]:
        lines += ["Traceback:", doc["traceback"].rstrip()]
    lines += ["Output:", (doc["output"] or "(none kept)").rstrip()]
    return "\n".join(lines)
