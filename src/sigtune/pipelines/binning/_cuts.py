"""Cut thresholds on event columns, searched together with the binning.

A :class:`Cut` is ``column OP threshold`` (``>``, ``>=``, ``<``, ``<=``), optionally on
``|column|`` (``|eta| < x``). The threshold is a study parameter (``cut_<column>`` unless named).

Cuts on event columns re-fill the fine histograms of the selected events; the fine-bin index of
every event is computed once (:class:`~sigtune.pipelines.binning._events.EventBinner`), so a
re-fill is one ``np.bincount`` per quantity. A cut on the discriminant itself (column
``"discriminant"``) needs no re-fill: it restricts the range of the candidate binning, i.e. it is
read off the cumulative fine histograms by moving the lower (``>``) or upper (``<``) edge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import optuna
from numpy.typing import NDArray

from sigtune.pipelines.binning._events import EventBinner, EventSample
from sigtune.pipelines.binning._exceptions import BinningError
from sigtune.pipelines.binning._histograms import Histograms

__all__ = ["DISCRIMINANT", "Cut", "CutSelector", "apply_discriminant_cuts", "make_cut"]

DISCRIMINANT = "discriminant"
"""Column name that refers to the discriminant itself in a :class:`Cut`."""

FloatArray = NDArray[np.float64]
_OPS = (">", ">=", "<", "<=")


@dataclass(frozen=True)
class Cut:
    """One cut ``[|]column[|] OP threshold`` with the threshold searched in ``[low, high]``.

    Args:
        column: Event column (or ``"discriminant"``).
        op: ``">"``, ``">="``, ``"<"`` or ``"<="`` (events passing are kept).
        low: Lowest threshold searched.
        high: Highest threshold searched (``low == high``: a fixed cut).
        abs: Apply the comparison to ``|column|``.
        name: Study parameter name (default ``cut_<column>``).
    """

    column: str
    op: Literal[">", ">=", "<", "<="]
    low: float
    high: float
    abs: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise BinningError(
                f"cut on {self.column!r}: op must be one of {_OPS}, got {self.op!r}."
            )
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.high < self.low:
            raise BinningError(
                f"cut on {self.column!r}: need finite low <= high, got ({self.low}, {self.high})."
            )
        if self.abs and self.column == DISCRIMINANT:
            raise BinningError("a cut on the discriminant cannot use abs=True.")

    @property
    def param_name(self) -> str:
        """The study parameter name of the threshold."""
        return self.name or f"cut_{self.column}"

    def suggest(self, trial: optuna.Trial) -> float:
        """The threshold for this trial (fixed cuts are not suggested)."""
        if self.low == self.high:
            return float(self.low)
        return float(trial.suggest_float(self.param_name, self.low, self.high))

    def passes(self, values: FloatArray, threshold: float) -> NDArray[np.bool_]:
        """Boolean mask of the values passing the cut at ``threshold``."""
        v = np.abs(values) if self.abs else values
        if self.op == ">":
            return v > threshold
        if self.op == ">=":
            return v >= threshold
        if self.op == "<":
            return v < threshold
        return v <= threshold

    def describe(self, threshold: float) -> str:
        """Human-readable form, e.g. ``|eta| < 2.1``."""
        col = f"|{self.column}|" if self.abs else self.column
        return f"{col} {self.op} {threshold:.6g}"


def make_cut(spec: Mapping[str, Any] | Cut) -> Cut:
    """Build a :class:`Cut` from ``{"column", "op", "range": [low, high] | "value": x, "abs"}``."""
    if isinstance(spec, Cut):
        return spec
    options = dict(spec)
    if "range" in options:
        low, high = options.pop("range")
        options["low"], options["high"] = float(low), float(high)
    elif "value" in options:
        options["low"] = options["high"] = float(options.pop("value"))
    try:
        return Cut(**options)
    except TypeError as exc:
        raise BinningError(f"cut {spec!r}: {exc}") from exc


class CutSelector:
    """Re-fills fine histograms for given thresholds of cuts on event columns.

    Args:
        samples: The event samples (workspace order).
        fine_edges: Fine-bin edges of the discriminant.
        signal: Names of the signal samples.
        cuts: Cuts on event columns (not on the discriminant).

    Raises:
        BinningError: if a cut column is missing from a sample.
    """

    def __init__(
        self,
        samples: Sequence[EventSample],
        fine_edges: FloatArray,
        signal: Sequence[str],
        cuts: Sequence[Cut],
    ) -> None:
        self.cuts = tuple(c for c in cuts if c.column != DISCRIMINANT)
        for c in self.cuts:
            for s in samples:
                if c.column not in s.columns:
                    raise BinningError(
                        f"cut column {c.column!r} is missing from sample {s.name!r}; "
                        f"its columns are {sorted(s.columns)} (load it with columns=[...])."
                    )
        self.samples = tuple(samples)
        self.signal = tuple(signal)
        self.fine_edges = np.asarray(fine_edges, dtype=np.float64)
        self._binners = [EventBinner(s, self.fine_edges) for s in self.samples]

    def histograms(self, thresholds: Sequence[float]) -> Histograms:
        """Fine histograms of the events passing every cut at ``thresholds`` (cut order)."""
        if len(thresholds) != len(self.cuts):
            raise BinningError(f"expected {len(self.cuts)} thresholds, got {len(thresholds)}.")
        templates = []
        for s, binner in zip(self.samples, self._binners, strict=True):
            mask: NDArray[np.bool_] | None = None
            for cut, thr in zip(self.cuts, thresholds, strict=True):
                m = cut.passes(s.columns[cut.column], thr)
                mask = m if mask is None else mask & m
            templates.append(binner.template(mask))
        return Histograms.from_templates(self.fine_edges, templates, self.signal)


def apply_discriminant_cuts(
    edges: FloatArray, cuts: Sequence[Cut], thresholds: Sequence[float]
) -> FloatArray:
    """Restrict requested edges to the range kept by cuts on the discriminant.

    ``> c`` / ``>= c`` raise the lower edge to ``c``; ``< c`` / ``<= c`` lower the upper edge.
    Interior edges outside the new range are dropped.
    """
    lo, hi = float(edges[0]), float(edges[-1])
    for cut, thr in zip(cuts, thresholds, strict=True):
        if cut.column != DISCRIMINANT:
            continue
        if cut.op in (">", ">="):
            lo = max(lo, thr)
        else:
            hi = min(hi, thr)
    if hi <= lo:
        raise BinningError(f"cuts on the discriminant leave an empty range [{lo}, {hi}].")
    inner = edges[(edges > lo) & (edges < hi)]
    return np.concatenate([[lo], inner, [hi]])
