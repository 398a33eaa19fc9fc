"""Exceptions raised by :mod:`sigtune.hep`.

The HistFactory engine has its own root, which is itself a :class:`sigtune.SigtuneError`::

    HepError(SigtuneError)
    ├── HepWorkspaceError(HepError, ValueError)   malformed workspace / patch / model settings
    └── HepFitError(HepError, RuntimeError)       a fit could not be carried out
"""

from __future__ import annotations

from sigtune._exceptions import SigtuneError

__all__ = ["HepError", "HepFitError", "HepWorkspaceError"]


class HepError(SigtuneError):
    """Root of every exception raised by :mod:`sigtune.hep`."""


class HepWorkspaceError(HepError, ValueError):
    """A workspace, patch or model setting is invalid.

    The message names the channel, sample, modifier or JSON path at fault.
    """


class HepFitError(HepError, RuntimeError):
    """A fit could not be carried out (bad data vector, non-finite likelihood at the start...)."""
