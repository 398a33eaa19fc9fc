"""A rich progress bar for runs: trials done / total, failures, best value, elapsed and ETA.

The bar writes to stderr so that ``sigtune run --json`` keeps stdout to one JSON document. It
is only shown on a terminal (or when forced). Off a terminal (batch logs) the run prints one
plain progress line at most every ``interval`` seconds (default 30, or
``$SIGTUNE_PROGRESS_INTERVAL``) and a last one at the end: trials done, failures, best so far,
rate and ETA. ``quiet=True`` shows nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sigtune._run import ProgressSink

__all__ = ["RunProgress"]


class RunProgress(ProgressSink):
    """Progress display of one run; a context manager.

    Args:
        total: Trials this run will execute (:meth:`start` may update it).
        description: Text left of the bar (the study name).
        quiet: Show nothing.
        force: Show the bar even if stderr is not a terminal.

    Example::

        with RunProgress(100, "demo") as bar:
            bar.update(done=10, failed=0, best=0.93)
    """

    def __init__(
        self,
        total: int,
        description: str = "trials",
        *,
        quiet: bool = False,
        force: bool = False,
        interval: float | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.enabled = not quiet and (force or sys.stderr.isatty())
        self.lines = not quiet and not self.enabled  # batch mode: periodic plain lines
        if interval is None:
            interval = float(os.environ.get("SIGTUNE_PROGRESS_INTERVAL", "30"))
        self.interval = interval
        self._stream = stream
        self._clock = clock
        self._t0 = clock()
        self._last_line: float | None = None
        self._last: tuple[int, int, float | None] = (0, 0, None)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._description = description
        self._offset = 0

    def start(self, total: int, done: int) -> None:
        """Show the whole study: ``total`` trials wanted, ``done`` already finished before."""
        self.total, self._offset = total, done
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total, completed=done)

    def __enter__(self) -> RunProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("failed {task.fields[failed]}"),
                TextColumn("best {task.fields[best]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(
                self._description, total=self.total, failed=0, best="-"
            )
            self._progress.start()
        return self

    def update(self, done: int, failed: int, best: float | None) -> None:
        """Show ``done`` trials of this run (after :meth:`start`'s offset), ``failed`` failures
        of this run and the best value so far."""
        if self.lines:
            self._last = (done, failed, best)
            now = self._clock()
            if now - (self._last_line if self._last_line is not None else self._t0) >= (
                self.interval
            ):
                self._write_line(now)
        if self._progress is None or self._task is None:
            return
        self._progress.update(
            self._task,
            completed=self._offset + done,
            failed=failed,
            best="-" if best is None else f"{best:.6g}",
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self.lines and exc_type is None and self._last[0] > 0:
            self._write_line(self._clock(), final=True)

    def line(self, now: float, *, final: bool = False) -> str:
        """The batch-log progress line for the last update."""
        done, failed, best = self._last
        elapsed = max(now - self._t0, 1e-9)
        rate = done / elapsed
        todo = max(self.total - self._offset - done, 0)
        eta = f"{todo / rate:.0f}s" if rate > 0 and todo else "-"
        best_text = "-" if best is None else f"{best:.6g}"
        return (
            f"[{self._description}] {self._offset + done}/{self.total} trials "
            f"({failed} failed), best {best_text}, {rate * 60:.3g} trials/min, "
            f"elapsed {elapsed:.0f}s, ETA {eta}{' (done)' if final else ''}"
        )

    def _write_line(self, now: float, final: bool = False) -> None:
        stream = self._stream or sys.stderr
        stream.write(self.line(now, final=final) + "\n")
        stream.flush()
        self._last_line = now
