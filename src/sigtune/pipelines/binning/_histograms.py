"""Template histograms: per-sample yields, sums of squared weights and systematic variations.

The fast path of a binning study fills *fine* histograms once and then merges fine bins into each
candidate binning (:meth:`Histograms.rebin`). Merging never touches the events again, so a trial
costs one ``np.add.reduceat`` over a few stacked rows.

Candidate edges must lie on fine-bin boundaries. :meth:`Histograms.snap` moves every requested
edge to the NEAREST fine boundary (ties go to the lower one), clips edges outside the fine range to
that range and drops edges that collapse onto the same boundary, so a candidate can end up with
fewer bins than requested; the snapped edges are the ones reported and written to the workspace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sigtune.pipelines.binning._exceptions import BinningError

__all__ = ["Histograms", "Template"]

FloatArray = NDArray[np.float64]


def _vector(name: str, values: ArrayLike, n: int) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise BinningError(
            f"{name} must have shape ({n},) to match the edges, but got {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise BinningError(f"{name} contains NaN or infinite values.")
    return arr


@dataclass(frozen=True, eq=False)
class Template:
    """Binned yields of one sample.

    Attributes:
        name: Sample name (used as the pyhf sample name).
        counts: Sum of weights per bin, shape ``(n_bins,)``.
        sumw2: Sum of squared weights per bin (MC-statistical variance), shape ``(n_bins,)``.
        variations: Systematic name -> ``(up, down)`` yields per bin (same shape as ``counts``).
    """

    name: str
    counts: FloatArray
    sumw2: FloatArray
    variations: Mapping[str, tuple[FloatArray, FloatArray]] = field(default_factory=dict)

    @classmethod
    def from_arrays(
        cls,
        name: str,
        counts: ArrayLike,
        sumw2: ArrayLike | None = None,
        variations: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
    ) -> Template:
        """Build a template from array-likes, validating shapes.

        Args:
            name: Sample name.
            counts: Yields per bin.
            sumw2: Sum of squared weights per bin; ``None`` means exact templates (zeros).
            variations: Systematic name -> ``(up, down)`` yields per bin.

        Raises:
            BinningError: if shapes differ or values are not finite.
        """
        c = np.asarray(counts, dtype=np.float64)
        if c.ndim != 1:
            raise BinningError(f"counts of sample {name!r} must be 1-d, but got shape {c.shape}.")
        n = c.shape[0]
        c = _vector(f"counts of sample {name!r}", c, n)
        w2 = np.zeros(n) if sumw2 is None else _vector(f"sumw2 of sample {name!r}", sumw2, n)
        if np.any(w2 < 0):
            raise BinningError(f"sumw2 of sample {name!r} must be >= 0.")
        var = {
            sys: (
                _vector(f"up variation {sys!r} of sample {name!r}", up, n),
                _vector(f"down variation {sys!r} of sample {name!r}", down, n),
            )
            for sys, (up, down) in (variations or {}).items()
        }
        return cls(name, c, w2, var)


@dataclass(frozen=True, eq=False)
class Histograms:
    """Templates of every sample in one binning of the discriminant.

    Attributes:
        edges: Bin edges, strictly increasing, shape ``(n_bins + 1,)``.
        templates: One :class:`Template` per sample, in workspace order.
        signal: Names of the signal samples (scaled by the POI); the others are backgrounds.
    """

    edges: FloatArray
    templates: tuple[Template, ...]
    signal: tuple[str, ...]
    _stack: FloatArray | None = field(default=None, repr=False)
    _layout: tuple[tuple[str, int, tuple[str, ...]], ...] = field(default=(), repr=False)

    @classmethod
    def from_templates(
        cls, edges: ArrayLike, templates: Sequence[Template], signal: Sequence[str]
    ) -> Histograms:
        """Validate and assemble templates sharing the same ``edges``.

        Raises:
            BinningError: on non-increasing edges, shape mismatches, duplicate or unknown names.
        """
        e = np.asarray(edges, dtype=np.float64)
        if e.ndim != 1 or e.shape[0] < 2 or not np.all(np.diff(e) > 0):
            raise BinningError(
                f"edges must be strictly increasing with >= 2 entries, but got {e!r}."
            )
        names = [t.name for t in templates]
        if len(set(names)) != len(names):
            raise BinningError(f"sample names must be unique, but got {names}.")
        if not templates:
            raise BinningError("at least one sample template is required.")
        for t in templates:
            if t.counts.shape != (e.shape[0] - 1,):
                raise BinningError(
                    f"sample {t.name!r} has {t.counts.shape[0]} bins but the edges define "
                    f"{e.shape[0] - 1}."
                )
        unknown = [s for s in signal if s not in names]
        if unknown:
            raise BinningError(f"signal samples {unknown} are not among the samples {names}.")
        if not signal:
            raise BinningError("at least one signal sample is required.")
        if len(signal) == len(names):
            raise BinningError("at least one background sample is required.")
        rows: list[FloatArray] = []
        layout: list[tuple[str, int, tuple[str, ...]]] = []
        for t in templates:
            layout.append((t.name, len(rows), tuple(t.variations)))
            rows.append(t.counts)
            rows.append(t.sumw2)
            for up, down in t.variations.values():
                rows.append(up)
                rows.append(down)
        stack = np.vstack(rows)
        return cls(e, tuple(templates), tuple(signal), stack, tuple(layout))

    # -- accessors -------------------------------------------------------------------------
    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return int(self.edges.shape[0] - 1)

    @property
    def sample_names(self) -> tuple[str, ...]:
        """Sample names in workspace order."""
        return tuple(t.name for t in self.templates)

    @property
    def backgrounds(self) -> tuple[str, ...]:
        """Names of the background samples."""
        return tuple(n for n in self.sample_names if n not in self.signal)

    def __getitem__(self, name: str) -> Template:
        for t in self.templates:
            if t.name == name:
                return t
        raise BinningError(f"no sample {name!r}; samples are {list(self.sample_names)}.")

    def total(self, which: str = "background") -> FloatArray:
        """Summed nominal yields of ``"signal"``, ``"background"`` or ``"all"`` samples."""
        return self._sum(which, "counts")

    def total_sumw2(self, which: str = "background") -> FloatArray:
        """Summed sums of squared weights of ``"signal"``, ``"background"`` or ``"all"`` samples."""
        return self._sum(which, "sumw2")

    def _sum(self, which: str, attr: str) -> FloatArray:
        if which not in ("signal", "background", "all"):
            raise BinningError(f"which must be 'signal', 'background' or 'all', but got {which!r}.")
        out = np.zeros(self.n_bins)
        for t in self.templates:
            is_sig = t.name in self.signal
            if which == "all" or (which == "signal") == is_sig:
                out = out + getattr(t, attr)
        return out

    # -- re-binning ------------------------------------------------------------------------
    def snap(self, edges: ArrayLike) -> NDArray[np.intp]:
        """Indices of the fine-bin boundaries nearest to ``edges`` (see module docstring).

        Args:
            edges: Requested edges in discriminant units, in increasing order.

        Returns:
            Strictly increasing boundary indices into :attr:`edges` (at least two).

        Raises:
            BinningError: if fewer than two distinct boundaries remain.
        """
        req = np.asarray(edges, dtype=np.float64)
        if req.ndim != 1 or req.shape[0] < 2 or not np.all(np.isfinite(req)):
            raise BinningError(f"requested edges must be >= 2 finite values, but got {req!r}.")
        fine = self.edges
        req = np.clip(req, fine[0], fine[-1])
        right = np.clip(np.searchsorted(fine, req, side="left"), 1, fine.shape[0] - 1)
        left = right - 1
        idx = np.where(req - fine[left] <= fine[right] - req, left, right)
        idx = np.unique(idx)
        if idx.shape[0] < 2:
            raise BinningError(
                f"edges {req.tolist()} collapse onto one fine-bin boundary; widen the range "
                f"(fine bins are {fine[1] - fine[0]:.4g} wide at the low end)."
            )
        return idx

    def rebin(self, edges: ArrayLike) -> Histograms:
        """Merge fine bins into the binning whose edges are ``edges`` snapped to fine boundaries.

        Yields outside the snapped range are dropped (the range is part of the binning).
        Counts, sums of squared weights and variations are summed over the merged bins, so
        every quantity is conserved within the range.
        """
        return self.rebin_indices(self.snap(edges))

    def rebin_indices(self, idx: ArrayLike) -> Histograms:
        """Merge fine bins between consecutive boundary indices ``idx`` (strictly increasing)."""
        ix = np.asarray(idx, dtype=np.intp)
        if (
            ix.ndim != 1
            or ix.shape[0] < 2
            or ix[0] < 0
            or ix[-1] > self.n_bins
            or not np.all(np.diff(ix) > 0)
        ):
            raise BinningError(
                f"boundary indices must be strictly increasing within [0, {self.n_bins}], "
                f"but got {ix.tolist()}."
            )
        stack = self._stack
        assert stack is not None  # always set by from_templates
        merged = np.add.reduceat(stack[:, ix[0] : ix[-1]], ix[:-1] - ix[0], axis=1)
        templates = []
        for name, row, systs in self._layout:
            var = {
                s: (merged[row + 2 + 2 * k], merged[row + 3 + 2 * k]) for k, s in enumerate(systs)
            }
            templates.append(Template(name, merged[row], merged[row + 1], var))
        layout = self._layout
        return Histograms(self.edges[ix], tuple(templates), self.signal, merged, layout)
