"""Cheap candidates: a candidate's yields straight into the model arrays of its structure.

:class:`DictPlan` reads a workspace dictionary whose structure (channels, bins, samples,
modifiers, in order) equals the one it was made from: its entries go by position into the arrays
of :class:`sigtune.hep._lean.AsimovQ0`, without validation or lookups by name (the structure
was validated once, when the template model was built from the first dictionary).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["DictPlan"]

_HISTOSYS, _NORMSYS, _STATERROR = 0, 1, 2
_STRUCTURAL = ("normfactor", "lumi", "shapefactor")


class DictPlan:
    """Where each yield entry of a workspace dictionary goes (one structure).

    Args:
        lean: The :class:`sigtune.hep._lean.AsimovQ0` of the structure's template model.
        spec: A workspace dictionary with that structure.
        fixed: Channels whose content never changes (not read per candidate).

    Attributes:
        usable: False when the structure holds something the plan cannot place (a shapesys,
            an unknown modifier): every candidate then takes the public path.
    """

    def __init__(self, lean: Any, spec: Mapping[str, Any], fixed: frozenset[str]) -> None:
        self.lean = lean
        model = lean.model
        names = list(model.channel_names)
        self.usable = bool(lean.usable)
        # per changed channel: (position in spec, slice, [(sample row, [(modifier pos, kind,
        # row, channel index or staterror name)])])
        self.channels: list[tuple[int, slice, list[tuple[int, list[tuple[Any, ...]]]]]] = []
        given = np.zeros(model.n_main, bool)
        st_names: set[str] = set()
        for k, ch in enumerate(spec["channels"]):
            cname = ch["name"]
            if cname in fixed:
                continue
            ci = names.index(cname)
            sl = model.channel_slices[cname]
            given[sl] = True
            samples = []
            for smp in ch["samples"]:
                si = lean.sample_index[smp["name"]]
                ops: list[tuple[Any, ...]] = []
                for m, mod in enumerate(smp["modifiers"]):
                    mtype, mname = mod["type"], mod["name"]
                    if mtype == "histosys":
                        ops.append((m, _HISTOSYS, lean.histosys_index[(mname, si)], ci))
                    elif mtype == "normsys":
                        ops.append((m, _NORMSYS, lean.normsys_index[(mname, si)], ci))
                    elif mtype == "staterror":
                        ops.append((m, _STATERROR, mname, ci))
                        st_names.add(mname)
                    elif mtype not in _STRUCTURAL:
                        self.usable = False  # shapesys (yield-dependent constraint) etc.
                samples.append((si, ops))
            self.channels.append((k, sl, samples))
        self.given = given
        self.staterrors = sorted(st_names)
        obs_pos = {o["name"]: i for i, o in enumerate(spec["observations"])}
        self.observations = [(obs_pos[c], c, model.channel_slices[c]) for c in names]

    def arrays(self, spec: Mapping[str, Any]) -> tuple[np.ndarray, ...] | None:
        """``(nom, hs_dp, hs_dm, ns_hi, ns_lo, gsig, main)`` of ``spec`` (see
        :meth:`sigtune.hep._lean.AsimovQ0.q0`), or None where its staterror widths change the
        structure."""
        lean = self.lean
        nom = lean.nom.copy()
        hs_dp = lean.hs_dp.copy()
        hs_dm = lean.hs_dm.copy()
        ns_hi = lean.ns_hi.copy()
        ns_lo = lean.ns_lo.copy()
        st: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        channels = spec["channels"]
        for k, sl, samples in self.channels:
            entries = channels[k]["samples"]
            for (si, ops), smp in zip(samples, entries, strict=True):
                data = np.asarray(smp["data"], dtype=np.float64)
                nom[si, sl] = data
                if not ops:
                    continue
                mods = smp["modifiers"]
                for m, kind, j, ci in ops:
                    d = mods[m]["data"]
                    if kind == _HISTOSYS:
                        hs_dp[j, sl] = np.asarray(d["hi_data"], dtype=np.float64) - data
                        hs_dm[j, sl] = data - np.asarray(d["lo_data"], dtype=np.float64)
                    elif kind == _NORMSYS:
                        ns_hi[j, ci] = d["hi"]
                        ns_lo[j, ci] = d["lo"]
                    else:
                        pair = st.get(j)
                        if pair is None:
                            n = nom.shape[1]
                            pair = st[j] = (np.zeros(n), np.zeros(n))
                        pair[0][sl] += data
                        pair[1][sl] += np.square(np.asarray(d, dtype=np.float64))
        gsig = lean.gsig
        if st:
            gsig = gsig.copy()
            for name, (tot, unc2) in st.items():
                if not lean.staterror_sigma(gsig, name, tot, unc2, self.given):
                    return None
        obs = spec["observations"]
        main = np.empty(lean.n_main)
        for i, name, sl in self.observations:
            entry = obs[i]
            if entry["name"] != name:  # observations in another order than the first time
                entry = next(o for o in obs if o["name"] == name)
            main[sl] = entry["data"]
        return nom, hs_dp, hs_dm, ns_hi, ns_lo, gsig, main


def q0_of_specs(
    plans: Sequence[tuple[DictPlan, Mapping[str, Any]]],
) -> list[float | None]:
    """:math:`q_0` of candidates that share one plan, in one batched call (None: undecided)."""
    if not plans:
        return []
    plan = plans[0][0]
    rows: list[tuple[np.ndarray, ...]] = []
    where: list[int] = []
    for i, (_, spec) in enumerate(plans):
        try:
            a = plan.arrays(spec)
        except (ValueError, TypeError, KeyError, IndexError):
            a = None  # malformed entries: evaluated alone by the public path
        if a is not None:
            rows.append(a)
            where.append(i)
    out: list[float | None] = [None] * len(plans)
    if not rows:
        return out
    q, ok = plan.lean.q0_many(rows)
    for i, qi, oki in zip(where, q, ok, strict=True):
        if oki:
            out[i] = float(qi)
    return out


class HistPlan:
    """A candidate's signal-region histograms straight into the model arrays (one structure).

    Reproduces what :func:`sigtune.pipelines.binning._workspace.region_channel` writes for the
    signal region with ``keep_pruned=True`` (pruned variations kept without effect), in a few
    array operations on the re-binned stack instead of a dictionary per candidate.

    Args:
        plan: The :class:`DictPlan` of the structure (made from one candidate's dictionary).
        spec: That dictionary.
        hist: That candidate's signal-region histograms.
        options: The workspace options (:class:`WorkspaceOptions`).

    Raises:
        KeyError: when the structure holds an entry this plan does not know (the caller then
            keeps the dictionary path).
    """

    def __init__(self, plan: DictPlan, spec: Mapping[str, Any], hist: Any, options: Any) -> None:
        lean = plan.lean
        model = lean.model
        self.lean = lean
        self.options = options
        channel = options.channel
        self.sl = model.channel_slices[channel]
        self.ci = list(model.channel_names).index(channel)
        layout = hist._layout
        self.count_rows = np.array([row for _, row, _ in layout], np.intp)
        self.si = np.array([lean.sample_index[name] for name, _, _ in layout], np.intp)
        self.signal = np.array([name in hist.signal for name, _, _ in layout], bool)
        split = bool(options.split)
        up_rows, owner, hs_j, ns_j = [], [], [], []
        for t, (_name, row, systs) in enumerate(layout):
            si = int(self.si[t])
            for k, sys in enumerate(systs):
                up_rows.append(row + 2 + 2 * k)
                owner.append(t)
                hs_j.append(lean.histosys_index[(f"{sys}_shape" if split else sys, si)])
                ns_j.append(lean.normsys_index.get((sys, si), -1) if split else -1)
        self.up_rows = np.array(up_rows, np.intp)
        self.owner = np.array(owner, np.intp)
        self.hs_j = np.array(hs_j, np.intp)
        self.ns_j = np.array(ns_j, np.intp)
        self.staterror = f"staterror_{channel}" if options.staterror else None
        if self.staterror is not None and self.staterror not in lean.staterror:
            self.staterror = None  # no sample had MC statistics in this structure
        self.given = np.zeros(lean.n_main, bool)
        self.given[self.sl] = True
        # the observations of the control regions (fixed) come from the template's dictionary
        first = plan.arrays(spec)
        if first is None:
            raise KeyError("staterror widths of the template")
        self.main0 = first[-1]

    @staticmethod
    def signature(hist: Any, options: Any) -> tuple[Any, ...]:
        """What the signal region's model structure depends on besides the yields: the number
        of bins, which samples carry MC statistics and (``split``) which variations have a
        normalisation part."""
        merged = hist._stack
        layout = hist._layout
        stat: Any = ()
        if options.staterror:
            rows = np.array([row + 1 for _, row, _ in layout], np.intp)
            stat = np.any(merged[rows] > 0, axis=1).tobytes()
        norm: Any = ()
        if options.split:
            sums = merged.sum(axis=1) > 0  # totals and variation totals, row by row
            parts = []
            for _, row, systs in layout:
                parts.append(sums[row : row + 2 + 2 * len(systs)].tobytes() if sums[row] else b"")
            norm = tuple(parts)
        return (hist.n_bins, stat, norm)

    def arrays(self, hist: Any) -> tuple[np.ndarray, ...] | None:
        """``(nom, hs_dp, hs_dm, ns_hi, ns_lo, gsig, main)`` of a candidate with this plan's
        signature, or None where its staterror widths change the structure."""
        lean, opt, sl = self.lean, self.options, self.sl
        merged = hist._stack
        counts = merged[self.count_rows]
        nom = lean.nom.copy()
        nom[self.si, sl] = counts
        hs_dp = lean.hs_dp.copy()
        hs_dm = lean.hs_dm.copy()
        ns_hi = lean.ns_hi.copy()
        ns_lo = lean.ns_lo.copy()
        if self.up_rows.size:
            up = merged[self.up_rows]
            down = merged[self.up_rows + 1]
            nomv = counts[self.owner]
            if opt.split:
                total = counts.sum(axis=1)[self.owner]
                has = total > 0
                safe = np.where(has, total, 1.0)
                tu, td = up.sum(axis=1), down.sum(axis=1)
                hi, lo = tu / safe, td / safe
                valid = has & (hi > 0) & (lo > 0)
                ok = valid
                if opt.prune is not None:
                    ok = valid & (np.maximum(np.abs(hi - 1), np.abs(1 - lo)) >= opt.prune)
                j = self.ns_j[valid]
                if np.any(j < 0):
                    return None  # a normalisation part the structure does not have
                ns_hi[j, self.ci] = np.where(ok, hi, 1.0)[valid]
                ns_lo[j, self.ci] = np.where(ok, lo, 1.0)[valid]
                with np.errstate(divide="ignore", invalid="ignore"):
                    su = np.where(has & (tu > 0), total / np.where(tu > 0, tu, 1.0), 1.0)
                    sd = np.where(has & (td > 0), total / np.where(td > 0, td, 1.0), 1.0)
                up = up * su[:, None]
                down = down * sd[:, None]
            pos = nomv > 0
            inv = np.where(pos, 1.0 / np.where(pos, nomv, 1.0), 0.0)
            effect = np.maximum(
                (np.abs(up - nomv) * inv).max(axis=1), (np.abs(down - nomv) * inv).max(axis=1)
            )
            keep = effect > 0.0
            if opt.prune is not None:
                keep &= effect >= opt.prune
            hs_dp[self.hs_j, sl] = np.where(keep[:, None], up - nomv, 0.0)
            hs_dm[self.hs_j, sl] = np.where(keep[:, None], nomv - down, 0.0)
        gsig = lean.gsig
        if self.staterror is not None:
            sumw2 = merged[self.count_rows + 1]
            stat = np.any(sumw2 > 0, axis=1)
            n = lean.n_main
            tot, unc2 = np.zeros(n), np.zeros(n)
            tot[sl] = counts[stat].sum(axis=0)
            unc2[sl] = np.square(np.sqrt(sumw2[stat])).sum(axis=0)
            gsig = gsig.copy()
            if not lean.staterror_sigma(gsig, self.staterror, tot, unc2, self.given):
                return None
        main = self.main0.copy()
        obs = counts if opt.observations == "asimov" else counts[~self.signal]
        main[sl] = obs.sum(axis=0)
        return nom, hs_dp, hs_dm, ns_hi, ns_lo, gsig, main
