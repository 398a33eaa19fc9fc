"""Event-level samples: discriminant, weight, extra columns for cuts, systematic variations.

A systematic variation is either an alternative *weight* column (e.g. a scale-factor variation)
or an alternative *discriminant* column (e.g. an energy-scale variation that moves events between
bins). Samples are read from Parquet, CSV, NumPy (``.npz``, or a structured ``.npy``), ROOT TTrees
(through uproot, imported only when needed), a pandas DataFrame or a mapping of arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sigtune.pipelines.binning._exceptions import BinningError
from sigtune.pipelines.binning._histograms import Histograms, Template

__all__ = ["EventSample", "Variation", "fill_histograms", "load_events"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Variation:
    """One systematic variation of a sample.

    Attributes:
        kind: ``"weight"`` (alternative weights) or ``"discriminant"`` (alternative values).
        up: Per-event up-variation array.
        down: Per-event down-variation array.
    """

    kind: Literal["weight", "discriminant"]
    up: FloatArray
    down: FloatArray


@dataclass(frozen=True, eq=False)
class EventSample:
    """Events of one sample.

    Attributes:
        name: Sample name.
        discriminant: Per-event discriminant value, shape ``(n,)``.
        weight: Per-event weight, shape ``(n,)``.
        columns: Extra per-event columns (for cuts), name -> array ``(n,)``.
        variations: Systematic name -> :class:`Variation`.
    """

    name: str
    discriminant: FloatArray
    weight: FloatArray
    columns: Mapping[str, FloatArray] = field(default_factory=dict)
    variations: Mapping[str, Variation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.discriminant.shape
        if self.discriminant.ndim != 1:
            raise BinningError(f"discriminant of sample {self.name!r} must be 1-d, got shape {n}.")
        if self.weight.shape != n:
            raise BinningError(
                f"weight of sample {self.name!r} has shape {self.weight.shape}, discriminant {n}."
            )
        for col, arr in self.columns.items():
            if arr.shape != n:
                raise BinningError(
                    f"column {col!r} of sample {self.name!r} has shape {arr.shape}, expected {n}."
                )
        for sys, var in self.variations.items():
            if var.kind not in ("weight", "discriminant"):
                raise BinningError(
                    f"variation {sys!r} of sample {self.name!r}: kind must be 'weight' or "
                    f"'discriminant', got {var.kind!r}."
                )
            if var.up.shape != n or var.down.shape != n:
                raise BinningError(
                    f"variation {sys!r} of sample {self.name!r} must have shape {n} for up and down."
                )

    @property
    def n_events(self) -> int:
        """Number of events."""
        return int(self.discriminant.shape[0])

    @classmethod
    def from_arrays(
        cls,
        name: str,
        discriminant: ArrayLike,
        weight: ArrayLike | None = None,
        *,
        columns: Mapping[str, ArrayLike] | None = None,
        weight_variations: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
        discriminant_variations: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
    ) -> EventSample:
        """Build a sample from arrays (weights default to 1).

        Raises:
            BinningError: on shape mismatches, non-finite values or a systematic given twice.
        """
        x = _finite(name, "discriminant", discriminant)
        w = np.ones_like(x) if weight is None else _finite(name, "weight", weight)
        cols = {k: _finite(name, k, v) for k, v in (columns or {}).items()}
        var: dict[str, Variation] = {}
        for sys, (up, down) in (weight_variations or {}).items():
            var[sys] = Variation("weight", _finite(name, sys, up), _finite(name, sys, down))
        for sys, (up, down) in (discriminant_variations or {}).items():
            if sys in var:
                raise BinningError(
                    f"systematic {sys!r} of sample {name!r} is given both as weight and as "
                    "discriminant variation; give it once."
                )
            var[sys] = Variation("discriminant", _finite(name, sys, up), _finite(name, sys, down))
        return cls(name, x, w, cols, var)

    def subset(self, mask: NDArray[np.bool_]) -> EventSample:
        """The events where ``mask`` is true."""
        return EventSample(
            self.name,
            self.discriminant[mask],
            self.weight[mask],
            {k: v[mask] for k, v in self.columns.items()},
            {k: Variation(v.kind, v.up[mask], v.down[mask]) for k, v in self.variations.items()},
        )


def _finite(sample: str, what: str, values: ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise BinningError(f"column {what!r} of sample {sample!r} must be 1-d, got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise BinningError(
            f"column {what!r} of sample {sample!r} has {bad} NaN/infinite values; "
            "clean or drop those events first."
        )
    return arr


def _read_table(source: Any, needed: Sequence[str], tree: str | None) -> Mapping[str, Any]:
    """Read ``needed`` columns from a file, DataFrame or mapping into a name -> array mapping."""
    if isinstance(source, Mapping):
        return source
    if hasattr(source, "columns") and hasattr(source, "__getitem__"):  # pandas DataFrame
        return {c: np.asarray(source[c]) for c in needed if c in source.columns}
    path = Path(source)
    if not path.exists():
        raise BinningError(f"event file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pandas as pd

        return {c: np.asarray(v) for c, v in pd.read_parquet(path).items()}
    if suffix == ".csv":
        import pandas as pd

        return {c: np.asarray(v) for c, v in pd.read_csv(path).items()}
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.dtype.names is None:
            raise BinningError(f"{str(path)!r}: a .npy file must hold a structured array.")
        return {n: arr[n] for n in arr.dtype.names}
    if suffix == ".root":
        if tree is None:
            raise BinningError(f"{str(path)!r} is a ROOT file: give the TTree name with tree=.")
        try:
            import uproot
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise BinningError(
                "reading ROOT files needs uproot: pip install 'sigtune[hep]'."
            ) from exc
        with uproot.open(path) as f:
            if tree not in f:
                raise BinningError(f"{str(path)!r} has no tree {tree!r}; keys: {f.keys()}.")
            arrays = f[tree].arrays(list(needed), library="np")
        return dict(arrays)
    raise BinningError(
        f"unsupported event file {str(path)!r}: use .parquet, .csv, .npz, .npy or .root."
    )


def load_events(
    source: Any,
    *,
    name: str,
    discriminant: str,
    weight: str | None = None,
    columns: Sequence[str] = (),
    weight_variations: Mapping[str, tuple[str, str]] | None = None,
    discriminant_variations: Mapping[str, tuple[str, str]] | None = None,
    tree: str | None = None,
    scale: float = 1.0,
) -> EventSample:
    """Read one sample's events.

    Args:
        source: Path to a Parquet/CSV/NumPy/ROOT file, a pandas DataFrame or a mapping of arrays.
        name: Sample name.
        discriminant: Column with the discriminant.
        weight: Column with the event weight (None: unit weights).
        columns: Extra columns to keep (for cuts).
        weight_variations: Systematic -> (up column, down column) of alternative weights.
        discriminant_variations: Systematic -> (up column, down column) of alternative
            discriminant values.
        tree: TTree name for ROOT files.
        scale: Factor applied to every weight (e.g. luminosity x cross-section).

    Returns:
        The :class:`EventSample`.

    Raises:
        BinningError: if the file is unreadable or a column is missing (the message lists the
            available columns).
    """
    wv = dict(weight_variations or {})
    dv = dict(discriminant_variations or {})
    needed = [discriminant, *([weight] if weight else []), *columns]
    for up, down in (*wv.values(), *dv.values()):
        needed += [up, down]
    table = _read_table(source, needed, tree)
    missing = [c for c in needed if c not in table]
    if missing:
        raise BinningError(
            f"sample {name!r}: columns {missing} not found; available: {sorted(table)}."
        )
    w = None if weight is None else np.asarray(table[weight], dtype=np.float64) * scale
    if w is None and scale != 1.0:
        w = np.full(len(table[discriminant]), float(scale))
    return EventSample.from_arrays(
        name,
        table[discriminant],
        w,
        columns={c: table[c] for c in columns},
        weight_variations={
            s: (np.asarray(table[u], np.float64) * scale, np.asarray(table[d], np.float64) * scale)
            for s, (u, d) in wv.items()
        },
        discriminant_variations={s: (table[u], table[d]) for s, (u, d) in dv.items()},
    )


def _bin_index(x: FloatArray, edges: FloatArray) -> NDArray[np.intp]:
    """Fine-bin index of each value; -1 outside ``[edges[0], edges[-1]]`` (last bin closed)."""
    n = edges.shape[0] - 1
    idx = np.searchsorted(edges, x, side="right") - 1
    idx[x == edges[-1]] = n - 1
    idx[(x < edges[0]) | (x > edges[-1])] = -1
    return idx


class EventBinner:
    """Pre-computed fine-bin indices of a sample, so that re-filling after a cut is one bincount.

    Args:
        sample: The events.
        edges: Fine-bin edges.
    """

    def __init__(self, sample: EventSample, edges: FloatArray) -> None:
        self.sample = sample
        self.edges = edges
        self._n = edges.shape[0] - 1
        self._idx = _bin_index(sample.discriminant, edges)
        self._var_idx = {
            s: (_bin_index(v.up, edges), _bin_index(v.down, edges))
            for s, v in sample.variations.items()
            if v.kind == "discriminant"
        }

    def _fill(
        self, idx: NDArray[np.intp], w: FloatArray, mask: NDArray[np.bool_] | None
    ) -> FloatArray:
        keep = idx >= 0 if mask is None else (idx >= 0) & mask
        return np.bincount(idx[keep], weights=w[keep], minlength=self._n).astype(
            np.float64, copy=False
        )

    def template(self, mask: NDArray[np.bool_] | None = None) -> Template:
        """Fine template of the events where ``mask`` is true (all events if None)."""
        s = self.sample
        w = s.weight
        var: dict[str, tuple[FloatArray, FloatArray]] = {}
        for sys, v in s.variations.items():
            if v.kind == "weight":
                var[sys] = (self._fill(self._idx, v.up, mask), self._fill(self._idx, v.down, mask))
            else:
                iu, idn = self._var_idx[sys]
                var[sys] = (self._fill(iu, w, mask), self._fill(idn, w, mask))
        return Template(
            s.name,
            self._fill(self._idx, w, mask),
            self._fill(self._idx, w * w, mask),
            var,
        )


def fill_histograms(
    samples: Sequence[EventSample],
    edges: ArrayLike,
    *,
    signal: Sequence[str],
    masks: Mapping[str, NDArray[np.bool_]] | None = None,
) -> Histograms:
    """Fill (fine) template histograms from events.

    Events outside ``[edges[0], edges[-1]]`` are not counted (the last bin is closed, as in
    ``numpy.histogram``). A weight variation fills the
    nominal discriminant with the alternative weights; a discriminant variation fills the
    alternative values with the nominal weights.

    Args:
        samples: The samples, in workspace order.
        edges: Bin edges (typically a fine uniform grid, e.g. ``np.linspace(0, 1, 1001)``).
        signal: Names of the signal samples.
        masks: Optional per-sample boolean event masks (a selection).

    Returns:
        The :class:`Histograms`.
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.shape[0] < 2 or not np.all(np.diff(e) > 0):
        raise BinningError("fine edges must be strictly increasing with >= 2 entries.")
    masks = masks or {}
    templates = [EventBinner(s, e).template(masks.get(s.name)) for s in samples]
    return Histograms.from_templates(e, templates, signal)
