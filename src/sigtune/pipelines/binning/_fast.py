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
        self.observations = [(obs_pos[c], model.channel_slices[c]) for c in names]

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
        for i, sl in self.observations:
            main[sl] = obs[i]["data"]
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
        a = plan.arrays(spec)
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
