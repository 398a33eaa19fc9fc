"""Exceptions of the binning / cut pipeline.

::

    SigtuneError
    └── BinningError(SigtuneError, ValueError)   bad samples, edges, cuts or workspace options
"""

from __future__ import annotations

from sigtune._exceptions import SigtuneError

__all__ = ["BinningError"]


class BinningError(SigtuneError, ValueError):
    """Invalid input to the binning pipeline; the message names the sample, column or edge to fix."""
