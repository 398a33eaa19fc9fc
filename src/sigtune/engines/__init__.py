"""Execution engines: how the trials of a run are executed.

The interface lives in the core (:mod:`sigtune._run`: :class:`Engine`, :class:`RunPlan`,
:class:`RunOutcome`, the engine registry); engines depend on the core only. Every engine reuses
the per-trial execution of :mod:`sigtune.engines._trial`.

:class:`LocalEngine` (``engine: local``) runs trials in the calling process (``n_jobs=1``) or in
``n_jobs`` forked worker processes sharing the study's storage.
"""

from sigtune._run import (
    BUILTIN_ENGINES,
    Engine,
    ProgressSink,
    RunOutcome,
    RunPlan,
    StudyRef,
    TrialFunction,
    engine_names,
    get_engine,
    register_engine,
)
from sigtune.engines._local import LocalEngine

RunSettings = RunPlan  # deprecated alias of RunPlan (the engine-level plan of one run)

__all__ = [
    "BUILTIN_ENGINES",
    "Engine",
    "LocalEngine",
    "ProgressSink",
    "RunOutcome",
    "RunPlan",
    "RunSettings",
    "StudyRef",
    "TrialFunction",
    "engine_names",
    "get_engine",
    "register_engine",
]
