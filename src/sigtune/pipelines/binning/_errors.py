"""Deprecated alias of :mod:`sigtune.pipelines.binning._exceptions` (kept so old imports work)."""

from __future__ import annotations

from sigtune.pipelines.binning._exceptions import BinningError

__all__ = ["BinningError"]
