"""Exceptions raised by sigtune.

Every error sigtune raises derives from :class:`SigtuneError`. Where a built-in
exception type fits, the sigtune error also subclasses it, so ``except ValueError``
keeps working::

    SigtuneError
    ├── ConfigError(SigtuneError, ValueError)        bad run-config / CLI input (exit code 2)
    │   └── SearchSpaceError(ConfigError)            invalid search-space definition
    ├── ObjectiveError(SigtuneError, RuntimeError)   objective could not be loaded or called
    ├── StorageError(SigtuneError, RuntimeError)     storage URL / study lookup problems
    ├── RunFailedError(SigtuneError, RuntimeError)   run stopped (e.g. ``max_failures`` reached)
    └── TrialTimeoutError(SigtuneError, TimeoutError)

The HistFactory engine (:mod:`sigtune.hep`) is standalone and defines its own
root, :class:`sigtune.hep.HepError`, which also subclasses ``SigtuneError`` via
``sigtune._exceptions`` (this module has no dependencies, so ``hep`` may import it).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ObjectiveError",
    "RunFailedError",
    "SearchSpaceError",
    "SigtuneError",
    "StorageError",
    "TrialTimeoutError",
]


class SigtuneError(Exception):
    """Root of every exception raised by sigtune."""


class ConfigError(SigtuneError, ValueError):
    """A run-config, search space or CLI argument is invalid. The message says what to fix."""


class SearchSpaceError(ConfigError):
    """A declarative search space is invalid; the message names the parameter."""


class ObjectiveError(SigtuneError, RuntimeError):
    """The objective could not be imported or does not have a usable signature."""


class StorageError(SigtuneError, RuntimeError):
    """The storage URL is unusable or a study could not be found / created."""


class RunFailedError(SigtuneError, RuntimeError):
    """A run stopped before reaching its target (for example ``max_failures`` was reached)."""


class TrialTimeoutError(SigtuneError, TimeoutError):
    """A trial exceeded its per-trial ``timeout``."""
