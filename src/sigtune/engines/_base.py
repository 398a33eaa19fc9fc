"""Former home of the engine interface; it now lives in the core, :mod:`sigtune._run`.

Kept so that existing imports keep working. ``RunSettings`` here is the old name of
:class:`~sigtune._run.RunPlan` (what one engine run executes); the run's user-facing settings are
:class:`sigtune._settings.RunSettings`.
"""

from __future__ import annotations

from sigtune._run import (
    ConstraintsFunction,
    Engine,
    ProgressSink,
    RunOutcome,
    RunPlan,
    StopReason,
    StudyRef,
    TrialFunction,
)

RunSettings = RunPlan  # deprecated alias (engine-level plan); use sigtune._run.RunPlan

__all__ = [
    "ConstraintsFunction",
    "Engine",
    "ProgressSink",
    "RunOutcome",
    "RunPlan",
    "RunSettings",
    "StopReason",
    "StudyRef",
    "TrialFunction",
]
