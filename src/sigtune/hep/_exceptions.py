"""Exceptions raised by :mod:`sigtune.hep`.

The HistFactory engine has its own root, which is itself a :class:`sigtune.SigtuneError`::

    HepError(SigtuneError)
    ├── HepWorkspaceError(HepError, ValueError)   malformed workspace / patch / model settings
    ├── HepInputError(HepError, ValueError)       an argument of an inference function is invalid
    └── HepFitError(HepError, RuntimeError)       a fit could not be carried out

    HepFitWarning(UserWarning)                    a fit needed restarts, or did not converge

Set ``SIGTUNE_HEP_STRICT=1`` (or pass ``strict=True`` to :func:`sigtune.hep.fit`) to turn a
fit that does not converge into a :class:`HepFitError` instead of a warning.
"""

from __future__ import annotations

from sigtune._exceptions import SigtuneError

__all__ = ["HepError", "HepFitError", "HepFitWarning", "HepInputError", "HepWorkspaceError"]


class HepError(SigtuneError):
    """Root of every exception raised by :mod:`sigtune.hep`."""


class HepWorkspaceError(HepError, ValueError):
    """A workspace, patch or model setting is invalid.

    The message names the channel, sample, modifier or JSON path at fault.
    """


class HepFitError(HepError, RuntimeError):
    """A fit could not be carried out (bad data vector, non-finite likelihood at the start...)."""


class HepInputError(HepError, ValueError):
    """An argument of an inference function is invalid; the message says which and why."""


class HepFitWarning(UserWarning):
    """A fit needed restarts to reach a minimum, or did not reach one (the message says which;
    ``SIGTUNE_HEP_STRICT=1`` raises :class:`HepFitError` for the latter instead)."""
