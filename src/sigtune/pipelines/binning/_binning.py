"""Binning parametrisations searched by a study, and TRExFitter auto-binning baselines.

Every parametrisation is a small frozen value object with ``suggest(trial, hist) -> edges``:
it asks the trial for its parameters and returns requested edges (discriminant units), which the
objective snaps to fine-bin boundaries (:meth:`Histograms.snap`). A parameter given as a number
is fixed; a ``(low, high)`` pair is searched.

- :class:`UniformBinning` — ``n_bins`` equal bins on ``[lo, hi]`` (the tutorial's space).
- :class:`VariableBinning` — edges searched directly: ``n_bins`` positive relative widths
  ``w_i`` (log-uniform) are normalised, ``edges = lo + (hi - lo) * cumsum(w) / sum(w)``, so the
  edges are strictly increasing BY CONSTRUCTION (no rejection of unsorted proposals).
- :class:`QuantileBinning` — equal fractions of the background (or signal) yield in each bin.
- :class:`TransfoBinning` — TRExFitter TransfoD / TransfoF with searched ``z_s``, ``z_b``;
  :func:`transfo_d` / :func:`transfo_f` give the fixed baselines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import optuna
from numpy.typing import NDArray

from sigtune.pipelines.binning._exceptions import BinningError
from sigtune.pipelines.binning._histograms import Histograms

__all__ = [
    "Binning",
    "QuantileBinning",
    "TransfoBinning",
    "UniformBinning",
    "VariableBinning",
    "make_binning",
    "transfo_d",
    "transfo_f",
]

FloatArray = NDArray[np.float64]
IntRange = int | tuple[int, int]
FloatRange = float | tuple[float, float]


class Binning(Protocol):
    """A binning parametrisation: asks a trial for parameters and returns requested edges."""

    def suggest(self, trial: optuna.Trial, hist: Histograms) -> FloatArray:
        """Requested edges (increasing) for this trial, before snapping to fine boundaries."""
        ...


def _check_int(name: str, value: IntRange, minimum: int) -> None:
    lo, hi = (value, value) if isinstance(value, int) else value
    if lo < minimum or hi < lo:
        raise BinningError(f"{name} must satisfy {minimum} <= low <= high, but got {value!r}.")


def _check_float(name: str, value: FloatRange) -> None:
    lo, hi = (value, value) if isinstance(value, int | float) else value
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise BinningError(f"{name} must satisfy low <= high (finite), but got {value!r}.")


def _int(trial: optuna.Trial, name: str, value: IntRange) -> int:
    if isinstance(value, int):
        return value
    return int(trial.suggest_int(name, value[0], value[1]))


def _float(trial: optuna.Trial, name: str, value: FloatRange) -> float:
    if isinstance(value, int | float):
        return float(value)
    return float(trial.suggest_float(name, value[0], value[1]))


def _range(trial: optuna.Trial, lo: FloatRange, hi: FloatRange) -> tuple[float, float]:
    a, b = _float(trial, "lo", lo), _float(trial, "hi", hi)
    if b <= a:
        raise BinningError(f"the searched range needs lo < hi, but got lo={a}, hi={b}.")
    return a, b


def _default(value: FloatRange | None, hist: Histograms, end: int) -> FloatRange:
    return float(hist.edges[end]) if value is None else value


@dataclass(frozen=True)
class UniformBinning:
    """``n_bins`` equal-width bins on ``[lo, hi]`` (parameters ``n_bins``, ``lo``, ``hi``).

    Args:
        n_bins: Number of bins, or a ``(low, high)`` range to search.
        lo: Lower edge, or a range; None means the low end of the fine histograms.
        hi: Upper edge, or a range; None means the high end of the fine histograms.
    """

    n_bins: IntRange = (3, 40)
    lo: FloatRange | None = None
    hi: FloatRange | None = None

    def __post_init__(self) -> None:
        _check_int("n_bins", self.n_bins, 1)
        for name in ("lo", "hi"):
            value = getattr(self, name)
            if value is not None:
                _check_float(name, value)

    @staticmethod
    def edges(n_bins: int, lo: float, hi: float) -> FloatArray:
        """The equal-width edges."""
        return np.linspace(lo, hi, n_bins + 1)

    def suggest(self, trial: optuna.Trial, hist: Histograms) -> FloatArray:
        """Suggest ``n_bins``, ``lo``, ``hi`` and return the edges."""
        n = _int(trial, "n_bins", self.n_bins)
        lo, hi = _range(trial, _default(self.lo, hist, 0), _default(self.hi, hist, -1))
        return self.edges(n, lo, hi)


@dataclass(frozen=True)
class VariableBinning:
    """Variable-width edges searched directly (parameters ``n_bins``, ``lo``, ``hi``, ``w0``...).

    Each bin gets a relative width ``w_i`` in ``[min_ratio, 1]`` (log-uniform); the edges are
    ``lo + (hi - lo) * cumsum(w) / sum(w)``, increasing by construction.

    Args:
        n_bins: Number of bins or a range (``w_i`` for ``i >= n_bins`` are then not suggested).
        lo: Lower edge or range (None: fine-histogram low end).
        hi: Upper edge or range (None: fine-histogram high end).
        min_ratio: Smallest relative width; the widest bin is at most ``1 / min_ratio`` times
            the narrowest.
    """

    n_bins: IntRange = (2, 10)
    lo: FloatRange | None = None
    hi: FloatRange | None = None
    min_ratio: float = 0.02

    def __post_init__(self) -> None:
        _check_int("n_bins", self.n_bins, 1)
        if not 0 < self.min_ratio < 1:
            raise BinningError(f"min_ratio must be in (0, 1), but got {self.min_ratio!r}.")

    @staticmethod
    def edges(widths: FloatArray, lo: float, hi: float) -> FloatArray:
        """Edges from positive relative widths."""
        w = np.asarray(widths, dtype=np.float64)
        if w.ndim != 1 or w.shape[0] < 1 or np.any(w <= 0):
            raise BinningError(f"widths must be a non-empty positive vector, but got {w!r}.")
        frac = np.concatenate([[0.0], np.cumsum(w) / w.sum()])
        frac[-1] = 1.0
        return lo + (hi - lo) * frac

    def suggest(self, trial: optuna.Trial, hist: Histograms) -> FloatArray:
        """Suggest the number of bins, the range and the relative widths."""
        n = _int(trial, "n_bins", self.n_bins)
        lo, hi = _range(trial, _default(self.lo, hist, 0), _default(self.hi, hist, -1))
        w = np.array(
            [trial.suggest_float(f"w{i}", self.min_ratio, 1.0, log=True) for i in range(n)]
        )
        return self.edges(w, lo, hi)


@dataclass(frozen=True)
class QuantileBinning:
    """Bins holding equal fractions of the background (or signal) yield within ``[lo, hi]``.

    Args:
        n_bins: Number of bins or a range.
        reference: ``"background"`` or ``"signal"``: whose yield is split equally.
        lo: Lower edge or range (None: fine-histogram low end).
        hi: Upper edge or range (None: fine-histogram high end).
    """

    n_bins: IntRange = (2, 20)
    reference: Literal["background", "signal"] = "background"
    lo: FloatRange | None = None
    hi: FloatRange | None = None

    def __post_init__(self) -> None:
        _check_int("n_bins", self.n_bins, 1)
        if self.reference not in ("background", "signal"):
            raise BinningError(
                f"reference must be 'background' or 'signal', but got {self.reference!r}."
            )

    def edges(self, hist: Histograms, n_bins: int, lo: float, hi: float) -> FloatArray:
        """Equal-fraction edges from the cumulative fine-histogram yield (linear within bins)."""
        e = hist.edges
        y = np.clip(hist.total(self.reference), 0.0, None)
        cum = np.concatenate([[0.0], np.cumsum(y)])
        c_lo, c_hi = np.interp([lo, hi], e, cum)
        if c_hi <= c_lo:
            raise BinningError(
                f"the {self.reference} yield in [{lo}, {hi}] is zero; quantile binning needs yield."
            )
        targets = np.linspace(c_lo, c_hi, n_bins + 1)
        # The cumulative yield is non-decreasing; interpolate its inverse on the strictly
        # increasing part (flat stretches map to their low end).
        keep = np.concatenate([[True], np.diff(cum) > 0])
        out = np.interp(targets, cum[keep], e[keep])
        out[0], out[-1] = lo, hi
        return np.maximum.accumulate(out)

    def suggest(self, trial: optuna.Trial, hist: Histograms) -> FloatArray:
        """Suggest ``n_bins`` (and the range) and return the equal-fraction edges."""
        n = _int(trial, "n_bins", self.n_bins)
        lo, hi = _range(trial, _default(self.lo, hist, 0), _default(self.hi, hist, -1))
        return self.edges(hist, n, lo, hi)


def _merge_from_top(hist: Histograms, close: Any) -> NDArray[np.intp]:
    """Merge fine bins from the high end; ``close(s_slice, b_slice, w2_slice)`` ends a bin.

    A left-over group at the low end that never met the condition is merged into the lowest
    closed bin, so every bin satisfies the condition (unless no bin ever closes: one bin).
    """
    s, b, w2 = hist.total("signal"), hist.total("background"), hist.total_sumw2("background")
    n = hist.n_bins
    bounds = [n]
    top = n
    for i in range(n - 1, -1, -1):
        if close(s[i:top], b[i:top], w2[i:top]):
            bounds.append(i)
            top = i
    if bounds[-1] != 0:
        if len(bounds) > 1:
            bounds[-1] = 0
        else:
            bounds.append(0)
    return np.array(bounds[::-1], dtype=np.intp)


def transfo_d(hist: Histograms, z_s: float, z_b: float) -> FloatArray:
    """TRExFitter TransfoD edges: close a bin when ``z_b b / N_b + z_s s / N_s > 1``.

    Gives about ``z_s + z_b`` bins; ``z_s = 0`` gives a flat background distribution.

    Args:
        hist: Fine histograms to merge.
        z_s: Signal weight (>= 0).
        z_b: Background weight (>= 0).

    Returns:
        Edges on fine-bin boundaries.
    """
    if z_s < 0 or z_b < 0 or z_s + z_b <= 0:
        raise BinningError(f"TransfoD needs z_s, z_b >= 0 and not both 0, got ({z_s}, {z_b}).")
    n_s, n_b = hist.total("signal").sum(), hist.total("background").sum()
    if n_s <= 0 or n_b <= 0:
        raise BinningError("TransfoD needs positive total signal and background yields.")

    def close(s: FloatArray, b: FloatArray, _w2: FloatArray) -> bool:
        return bool(z_b * b.sum() / n_b + z_s * s.sum() / n_s > 1.0)

    return hist.edges[_merge_from_top(hist, close)]


def transfo_f(hist: Histograms, z_s: float, z_b: float, max_rel_stat: float = 0.1) -> FloatArray:
    """TRExFitter TransfoF edges.

    Close a bin when ``sqrt(z_b b / N_b) + sqrt(z_s sum_i s_i ln(1 + s_i / b_i)) > 1`` (sum over
    the fine bins of the bin being built, bins with ``b_i <= 0`` left out) and the relative
    MC-statistical uncertainty of the background, ``sqrt(sum w^2) / b``, is below
    ``max_rel_stat``.

    Args:
        hist: Fine histograms to merge.
        z_s: Signal weight (>= 0).
        z_b: Background weight (>= 0).
        max_rel_stat: Maximum relative background MC-stat uncertainty per bin.

    Returns:
        Edges on fine-bin boundaries.
    """
    if z_s < 0 or z_b < 0 or z_s + z_b <= 0:
        raise BinningError(f"TransfoF needs z_s, z_b >= 0 and not both 0, got ({z_s}, {z_b}).")
    n_b = hist.total("background").sum()
    if n_b <= 0:
        raise BinningError("TransfoF needs a positive total background yield.")

    def close(s: FloatArray, b: FloatArray, w2: FloatArray) -> bool:
        bsum = b.sum()
        if bsum <= 0 or np.sqrt(w2.sum()) / bsum >= max_rel_stat:
            return False
        pos = b > 0
        sig = float(np.sum(s[pos] * np.log1p(np.clip(s[pos], 0, None) / b[pos])))
        return bool(np.sqrt(z_b * bsum / n_b) + np.sqrt(max(z_s * sig, 0.0)) > 1.0)

    return hist.edges[_merge_from_top(hist, close)]


@dataclass(frozen=True)
class TransfoBinning:
    """TRExFitter TransfoD / TransfoF with searched ``z_s`` and ``z_b``.

    Args:
        transform: ``"D"`` (TransfoD) or ``"F"`` (TransfoF).
        z_s: Signal weight or range.
        z_b: Background weight or range.
        max_rel_stat: TransfoF's maximum relative background MC-stat uncertainty.
    """

    transform: Literal["D", "F"] = "D"
    z_s: FloatRange = (0.0, 10.0)
    z_b: FloatRange = (1.0, 10.0)
    max_rel_stat: float = 0.1

    def __post_init__(self) -> None:
        if self.transform not in ("D", "F"):
            raise BinningError(f"transform must be 'D' or 'F', but got {self.transform!r}.")
        _check_float("z_s", self.z_s)
        _check_float("z_b", self.z_b)

    def suggest(self, trial: optuna.Trial, hist: Histograms) -> FloatArray:
        """Suggest ``z_s`` and ``z_b`` and return the merged edges."""
        z_s, z_b = _float(trial, "z_s", self.z_s), _float(trial, "z_b", self.z_b)
        if self.transform == "D":
            return transfo_d(hist, z_s, z_b)
        return transfo_f(hist, z_s, z_b, self.max_rel_stat)


_KINDS: dict[str, type[Any]] = {
    "uniform": UniformBinning,
    "variable": VariableBinning,
    "quantile": QuantileBinning,
    "transfo": TransfoBinning,
}


def make_binning(spec: Mapping[str, Any] | Binning) -> Binning:
    """Build a parametrisation from ``{"kind": "uniform"|"variable"|"quantile"|"transfo", ...}``.

    Lists of two numbers become searched ``(low, high)`` ranges.

    Raises:
        BinningError: on an unknown kind or option.
    """
    if not isinstance(spec, Mapping):
        return spec
    options = dict(spec)
    kind = options.pop("kind", "uniform")
    cls = _KINDS.get(kind)
    if cls is None:
        raise BinningError(f"unknown binning kind {kind!r}; use one of {sorted(_KINDS)}.")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    try:
        return cls(**options)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise BinningError(f"binning kind {kind!r}: {exc}") from exc
