"""pyhf JSON workspace of one candidate binning.

One channel (the signal region, binned by the candidate) plus optional control regions with a
fixed binning (``control``); every signal sample carries the POI (``normfactor``); samples named
in ``normfactors`` carry a free normalisation (fitted mostly in the control regions); every
sample carries the
MC-statistical uncertainty (one ``staterror`` modifier per channel, data ``sqrt(sumw2)``);
systematic variations become ``histosys`` (full up/down templates) or, with ``split=True``,
a ``normsys`` (ratio of totals) plus a normalisation-free ``histosys`` (the TRExFitter split);
explicit normalisation uncertainties become ``normsys``; an optional ``lumi`` acts on all
samples. Negligible variations can be pruned per channel (``prune``: largest relative effect
below the threshold). Systematics and normalisations with the same name are one parameter across
channels. The result validates against the pyhf schema and is usable as is in pyhf/cabinetry.

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from sigtune.pipelines.binning._exceptions import BinningError
from sigtune.pipelines.binning._histograms import Histograms

__all__ = ["NormFactor", "NormSys", "WorkspaceOptions", "build_workspace"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class NormSys:
    """An explicit normalisation uncertainty ``normsys`` on some samples.

    Args:
        name: Modifier (nuisance parameter) name.
        samples: Samples it acts on.
        lo: Down factor (e.g. 0.95).
        hi: Up factor (e.g. 1.05).
    """

    name: str
    samples: tuple[str, ...]
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (self.lo > 0 and self.hi > 0):
            raise BinningError(
                f"normsys {self.name!r}: lo and hi must be > 0, got {self.lo}, {self.hi}."
            )
        if not self.samples:
            raise BinningError(f"normsys {self.name!r}: give at least one sample.")


@dataclass(frozen=True)
class NormFactor:
    """A free normalisation ``normfactor`` (e.g. a background normalised in a control region).

    Args:
        name: Parameter name.
        samples: Samples it scales.
        bounds: ``(low, high)`` of the parameter.
    """

    name: str
    samples: tuple[str, ...]
    bounds: tuple[float, float] = (0.0, 10.0)

    def __post_init__(self) -> None:
        if not self.samples:
            raise BinningError(f"normfactor {self.name!r}: give at least one sample.")
        lo, hi = self.bounds
        if not lo < 1.0 < hi:
            raise BinningError(
                f"normfactor {self.name!r}: bounds must contain the nominal 1, got {self.bounds}."
            )


@dataclass(frozen=True)
class WorkspaceOptions:
    """How a candidate's histograms become a HistFactory workspace.

    Args:
        channel: Channel name.
        poi: Name of the signal-strength parameter.
        staterror: Add the MC-statistical uncertainty (``staterror``) from ``sumw2``.
        normsys: Explicit normalisation uncertainties.
        normfactors: Free normalisations of some samples (backgrounds fitted in control regions).
        split: Split each variation into ``normsys`` + shape-only ``histosys``.
        prune: Drop a variation whose largest relative effect per bin (histosys) or on the
            total (normsys) is below this threshold; None keeps everything.
        lumi: ``(value, relative uncertainty)``, e.g. ``(1.0, 0.017)``, or None.
        observations: ``"asimov"`` (signal + background nominal, mu = 1) or ``"background"``.
        measurement: Measurement name.
    """

    channel: str = "SR"
    poi: str = "mu"
    staterror: bool = True
    normsys: tuple[NormSys, ...] = field(default_factory=tuple)
    normfactors: tuple[NormFactor, ...] = field(default_factory=tuple)
    split: bool = False
    prune: float | None = None
    lumi: tuple[float, float] | None = None
    observations: Literal["asimov", "background"] = "asimov"
    measurement: str = "meas"

    def __post_init__(self) -> None:
        if self.observations not in ("asimov", "background"):
            raise BinningError(
                f"observations must be 'asimov' or 'background', got {self.observations!r}."
            )
        if self.prune is not None and self.prune < 0:
            raise BinningError(f"prune must be >= 0 or None, got {self.prune!r}.")
        if self.lumi is not None and not (self.lumi[0] > 0 and self.lumi[1] > 0):
            raise BinningError(f"lumi must be (value > 0, sigma > 0), got {self.lumi!r}.")


def _list(a: FloatArray) -> list[float]:
    return [float(x) for x in a]


def _effects(nom: FloatArray, var: FloatArray) -> FloatArray:
    """Largest relative effect ``max_b |var - nom| / nom`` (bins with ``nom > 0``) per row."""
    pos = nom > 0
    if not np.any(pos):
        return np.zeros(var.shape[0])
    rel = np.abs(var[:, pos] - nom[pos]) / nom[pos]
    return np.asarray(rel.max(axis=1), dtype=np.float64)


def _channel_samples(
    hist: Histograms,
    opt: WorkspaceOptions,
    channel: str,
    as_list: Any,
    skip_empty: bool,
    keep_pruned: bool = False,
) -> list[dict[str, Any]]:
    thr = opt.prune
    samples = []
    for t in hist.templates:
        is_signal = t.name in hist.signal
        if skip_empty and not is_signal and not np.any(t.counts):
            continue
        mods: list[dict[str, Any]] = []
        if is_signal:
            mods.append({"name": opt.poi, "type": "normfactor", "data": None})
        for nf in opt.normfactors:
            if t.name in nf.samples:
                mods.append({"name": nf.name, "type": "normfactor", "data": None})
        for ns in opt.normsys:
            if t.name in ns.samples:
                mods.append(
                    {"name": ns.name, "type": "normsys", "data": {"hi": ns.hi, "lo": ns.lo}}
                )
        if t.variations:
            mods.extend(
                _variation_modifiers(t.counts, t.variations, opt, thr, as_list, keep_pruned)
            )
        if opt.staterror and np.any(t.sumw2 > 0):
            mods.append(
                {
                    "name": f"staterror_{channel}",
                    "type": "staterror",
                    "data": as_list(np.sqrt(t.sumw2)),
                }
            )
        if opt.lumi is not None:
            mods.append({"name": "lumi", "type": "lumi", "data": None})
        samples.append({"name": t.name, "data": as_list(t.counts), "modifiers": mods})
    return samples


def _variation_modifiers(
    nom: FloatArray,
    variations: Mapping[str, tuple[FloatArray, FloatArray]],
    opt: WorkspaceOptions,
    thr: float | None,
    as_list: Any,
    keep_pruned: bool = False,
) -> list[dict[str, Any]]:
    """The normsys/histosys modifiers of one sample's variations (all variations at once).

    ``keep_pruned``: a pruned (or effect-free) variation stays, with no effect (normsys
    ``hi = lo = 1``, histosys ``hi_data = lo_data = nominal``): the likelihood is the same as
    without it, and every candidate of a binning keeps the same model structure.
    """
    names = list(variations)
    up = np.array([variations[n][0] for n in names])
    down = np.array([variations[n][1] for n in names])
    total = float(nom.sum())
    mods: list[dict[str, Any]] = []
    norm_ok = np.zeros(len(names), bool)
    norm_valid = np.zeros(len(names), bool)
    if opt.split and total > 0:
        tu, td = up.sum(axis=1), down.sum(axis=1)
        hi, lo = tu / total, td / total
        norm_ok = (hi > 0) & (lo > 0)
        norm_valid = norm_ok.copy()
        if thr is not None:
            norm_ok &= np.maximum(np.abs(hi - 1), np.abs(1 - lo)) >= thr
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.where((tu > 0)[:, None], up * (total / np.where(tu > 0, tu, 1.0))[:, None], up)
            down = np.where(
                (td > 0)[:, None], down * (total / np.where(td > 0, td, 1.0))[:, None], down
            )
    effect = np.maximum(_effects(nom, up), _effects(nom, down))
    keep = effect > 0.0 if thr is None else (effect > 0.0) & (effect >= thr)
    for k, sys in enumerate(names):
        if norm_ok[k]:
            mods.append(
                {"name": sys, "type": "normsys", "data": {"hi": float(hi[k]), "lo": float(lo[k])}}
            )
        elif keep_pruned and norm_valid[k]:
            mods.append({"name": sys, "type": "normsys", "data": {"hi": 1.0, "lo": 1.0}})
        if keep[k] or keep_pruned:
            up_k, down_k = (up[k], down[k]) if keep[k] else (nom, nom)
            mods.append(
                {
                    "name": sys if not opt.split else f"{sys}_shape",
                    "type": "histosys",
                    "data": {"hi_data": as_list(up_k), "lo_data": as_list(down_k)},
                }
            )
    return mods


def _check_names(hist: Histograms, opt: WorkspaceOptions) -> None:
    names = set(hist.sample_names)
    for kind, entries in (("normsys", opt.normsys), ("normfactor", opt.normfactors)):
        for entry in entries:
            unknown = [s for s in entry.samples if s not in names]
            if unknown:
                raise BinningError(
                    f"{kind} {entry.name!r} names unknown samples {unknown}; samples: "
                    f"{sorted(names)}."
                )


def build_workspace(
    hist: Histograms,
    options: WorkspaceOptions | None = None,
    *,
    control: Sequence[tuple[str, Histograms]] = (),
    lists: bool = True,
) -> dict[str, Any]:
    """Build the pyhf JSON workspace (a dict) of ``hist``.

    Args:
        hist: The candidate's histograms (already re-binned): the signal region.
        options: Workspace options (defaults: staterror on, Asimov observations).
        control: Control regions ``(channel name, histograms)`` with their fixed binning;
            samples without yield in a control region are left out of it.
        lists: Plain lists of floats (JSON); ``False`` keeps NumPy arrays (the objective's
            per-candidate models are built from those without conversion).

    Returns:
        A pyhf-schema workspace dictionary.

    Raises:
        BinningError: if a normsys or normfactor names an unknown sample, or a channel name
            repeats.
    """
    opt = options or WorkspaceOptions()
    _check_names(hist, opt)
    parts = [region_channel(opt.channel, hist, opt, control=False, lists=lists)]
    parts.extend(region_channel(n, h, opt, control=True, lists=lists) for n, h in control)
    return assemble_workspace(parts, opt)


def region_channel(
    name: str,
    hist: Histograms,
    options: WorkspaceOptions,
    *,
    control: bool,
    lists: bool = True,
    keep_pruned: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(channel, observation)`` entries of one region (see :func:`build_workspace`;
    ``keep_pruned``: pruned variations stay without effect, see ``_variation_modifiers``)."""
    as_list: Any = _list if lists else (lambda a: a)
    samples = _channel_samples(hist, options, name, as_list, control, keep_pruned)
    channel = {"name": name, "samples": samples}
    obs = hist.total("all") if options.observations == "asimov" else hist.total("background")
    return channel, {"name": name, "data": as_list(obs)}


def assemble_workspace(
    parts: Sequence[tuple[dict[str, Any], dict[str, Any]]], options: WorkspaceOptions
) -> dict[str, Any]:
    """A workspace from ``(channel, observation)`` entries and the measurement of ``options``.

    Raises:
        BinningError: if a channel name repeats.
    """
    opt = options
    names = [c["name"] for c, _ in parts]
    if len(set(names)) != len(names):
        raise BinningError(f"channel names must be unique, got {names}.")
    parameters: list[dict[str, Any]] = []
    for nf in opt.normfactors:
        parameters.append({"name": nf.name, "bounds": [list(nf.bounds)], "inits": [1.0]})
    if opt.lumi is not None:
        value, sigma = opt.lumi
        parameters.append(
            {
                "name": "lumi",
                "auxdata": [value],
                "sigmas": [sigma * value],
                "bounds": [[max(value * (1 - 5 * sigma), 1e-6), value * (1 + 5 * sigma)]],
                "inits": [value],
            }
        )
    return {
        "channels": [c for c, _ in parts],
        "observations": [o for _, o in parts],
        "measurements": [
            {"name": opt.measurement, "config": {"poi": opt.poi, "parameters": parameters}}
        ],
        "version": "1.0.0",
    }


def workspace_options_from_mapping(spec: Mapping[str, Any]) -> WorkspaceOptions:
    """Build :class:`WorkspaceOptions` from plain config values (lists become tuples)."""
    options = dict(spec)
    options["normsys"] = tuple(
        NormSys(
            name=n["name"],
            samples=tuple([n["samples"]] if isinstance(n["samples"], str) else n["samples"]),
            lo=float(n["lo"]),
            hi=float(n["hi"]),
        )
        for n in options.get("normsys", ())
    )
    options["normfactors"] = tuple(
        NormFactor(
            name=n["name"],
            samples=tuple([n["samples"]] if isinstance(n["samples"], str) else n["samples"]),
            bounds=tuple(n.get("bounds", (0.0, 10.0))),
        )
        for n in options.get("normfactors", ())
    )
    if options.get("lumi") is not None:
        options["lumi"] = tuple(options["lumi"])
    return WorkspaceOptions(**options)
