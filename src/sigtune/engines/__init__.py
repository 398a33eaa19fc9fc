"""Execution engines: how the trials of a run are executed.

:class:`LocalEngine` runs trials in the calling process (``n_jobs=1``) or in ``n_jobs`` forked
worker processes sharing the study's storage. Engines implement :class:`Engine`.
"""

from sigtune.engines._base import (
    Engine,
    ProgressSink,
    RunOutcome,
    RunSettings,
    StudyRef,
    TrialFunction,
)
from sigtune.engines._local import LocalEngine

__all__ = [
    "Engine",
    "LocalEngine",
    "ProgressSink",
    "RunOutcome",
    "RunSettings",
    "StudyRef",
    "TrialFunction",
]
