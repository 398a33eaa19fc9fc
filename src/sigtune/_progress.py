"""A rich progress bar for runs: trials done / total, failures, best value, elapsed and ETA.

The bar writes to stderr so that ``sigtune run --json`` keeps stdout to one JSON document. It
is only shown on a terminal (or when forced); ``quiet=True`` shows nothing.
"""

from __future__ import annotations

import sys
from types import TracebackType

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
        self, total: int, description: str = "trials", *, quiet: bool = False, force: bool = False
    ) -> None:
        self.total = total
        self.enabled = not quiet and (force or sys.stderr.isatty())
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
