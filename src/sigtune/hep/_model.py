"""The HistFactory likelihood: parameters, expected rates, -2 ln L with analytic derivatives.

Layout (as pyhf): main bins of all channels sorted by channel name, then the auxiliary data of
the constrained parameters in parameter order. Parameters are ordered by modifier type
(histosys, lumi, normfactor, normsys, shapefactor, shapesys, staterror), then by first
appearance walking channels, samples (both sorted by name) and modifiers sorted by name.

The expected rate of sample ``s`` in bin ``b`` is::

    nu_sb = prod_{normsys m} kappa_m(alpha_m) * prod_{linear l} theta_l * (nom_sb + sum_h delta_h(alpha_h))

where the "linear" factors are normfactors, lumi and the per-bin gammas (shapefactor, staterror,
shapesys). Everything is precomputed into dense arrays at construction ("combined modifiers"),
so one likelihood evaluation is a fixed sequence of array operations over a leading batch axis.

The likelihood (``twice_nll = -2 ln L``, every constant included)::

    2 sum_b [nu_b - n_b ln nu_b + lgamma(n_b + 1)]
  + sum_gauss [((a - theta) / sigma)^2 + ln(2 pi sigma^2)]
  - 2 sum_poisson [a ln(tau gamma) - tau gamma - lgamma(a + 1)]
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from scipy.special import gammaln

from sigtune.hep import _jit
from sigtune.hep._arrays import Consts, Derivs, ModelArrays
from sigtune.hep._exceptions import HepFitError, HepWorkspaceError
from sigtune.hep._interp import (
    HISTOSYS_CODES,
    NORMSYS_CODES,
    code4_coefficients,
    histosys_interp_fast,
    normsys_log_interp_fast,
)

__all__ = ["Model", "ModelArrays", "ParamSet", "stack_models", "with_yields"]

_LN_2PI = math.log(2.0 * math.pi)
_DENSE_MAX_PARS = 200  # models up to this many parameters (and size) use the dense engine
_DENSE_MAX_SIZE = 20_000  # P * n_samples * n_bins
_JIT_MAX_PARS = 160  # with the compiled kernels (no size limit; above this the arrowhead
# NumPy engine is faster: bench/inference.py, (200 bins, 40 NPs) 7.1 ms vs 5.3 ms per fit)


@dataclass(frozen=True)
class ModifierSpec:
    """Defaults of the parameters a modifier type creates (as pyhf's parameter-set specs).

    Per-bin types create one parameter per bin; the measurement's ``config.parameters``
    override ``init``, ``bounds``, ``fixed``, ``auxdata``, ``sigmas`` and ``factors``.
    """

    scalar: bool  # one parameter (else one per bin of the channel)
    init: float
    bounds: tuple[float, float]
    constraint: str | None  # None, "normal" or "poisson"
    auxdata: float = math.nan  # Gaussian constraints: the auxdata's default
    sigma: float = math.nan  # Gaussian constraints: the width's default
    linear: bool = True  # a multiplicative factor theta (else an interpolated alpha)


# lumi's init, bounds, auxdata and sigma come from the measurement (checked in _apply_config)
MODIFIER_SPECS: dict[str, ModifierSpec] = {
    "histosys": ModifierSpec(True, 0.0, (-5.0, 5.0), "normal", 0.0, 1.0, linear=False),
    "lumi": ModifierSpec(True, math.nan, (math.nan, math.nan), "normal"),
    "normfactor": ModifierSpec(True, 1.0, (0.0, 10.0), None),
    "normsys": ModifierSpec(True, 0.0, (-5.0, 5.0), "normal", 0.0, 1.0, linear=False),
    "shapefactor": ModifierSpec(False, 1.0, (0.0, 10.0), None),
    "shapesys": ModifierSpec(False, 1.0, (1e-10, 10.0), "poisson"),
    "staterror": ModifierSpec(False, 1.0, (1e-10, 10.0), "normal", 1.0),
}
# parameter order: by modifier type (pyhf sorts the types by name), then by first appearance
_TYPE_ORDER = tuple(sorted(MODIFIER_SPECS))


@dataclass
class ParamSet:
    """One named parameter (possibly several components, e.g. one gamma per bin)."""

    name: str
    types: list[str]
    n: int
    inits: list[float]
    bounds: list[tuple[float, float]]
    fixed: list[bool]
    constraint: str | None  # None, "normal", "poisson"
    auxdata: list[float] = field(default_factory=list)
    sigmas: list[float] = field(default_factory=list)
    factors: list[float] = field(default_factory=list)
    start: int = 0

    @property
    def is_scalar(self) -> bool:
        return MODIFIER_SPECS[self.types[0]].scalar


def _fail(msg: str) -> HepWorkspaceError:
    return HepWorkspaceError(msg)


class _Rates(NamedTuple):
    """Expected rates and the intermediate products of the NumPy engine (``Model._nu``)."""

    nu: np.ndarray  # (B, N) expected main-bin rates
    nus: np.ndarray  # (B, S, N) per sample
    F: np.ndarray  # normsys factor x linear factors
    A: np.ndarray  # nominal + histosys shifts
    Kn: np.ndarray  # normsys factor (exp of the summed log-factors)
    L: np.ndarray  # (B, K, S, N) linear factors per slot
    # first / second derivatives of the histosys shifts and of the normsys log-factors
    # (ndarrays; None when the model has no modifier of that type, and then never read)
    hd1: Any
    hd2: Any
    lk1: Any
    lk2: Any


class Model:
    """A HistFactory model built from the channels of a pyhf workspace.

    Usually created with :meth:`sigtune.hep.Workspace.model`.

    Args:
        channels: The workspace's ``channels`` list.
        parameters: The measurement's ``config.parameters`` list (inits, bounds, fixed, auxdata,
            sigmas, factors per parameter name).
        poi_name: Name of the parameter of interest (a scalar parameter); ``None`` for none.
        normsys_interp: ``"code4"`` (default) or ``"code1"``.
        histosys_interp: ``"code4p"`` (default) or ``"code0"``.

    Raises:
        HepWorkspaceError: Inconsistent modifiers (the message names channel, sample, modifier),
            unknown POI, bad parameter settings or interpolation codes.
    """

    def __init__(
        self,
        channels: Sequence[Mapping[str, Any]],
        *,
        parameters: Sequence[Mapping[str, Any]] = (),
        poi_name: str | None = None,
        normsys_interp: str = "code4",
        histosys_interp: str = "code4p",
    ) -> None:
        if normsys_interp not in NORMSYS_CODES:
            raise _fail(f"normsys_interp must be one of {NORMSYS_CODES}, got {normsys_interp!r}")
        if histosys_interp not in HISTOSYS_CODES:
            raise _fail(f"histosys_interp must be one of {HISTOSYS_CODES}, got {histosys_interp!r}")
        self.normsys_interp = normsys_interp
        self.histosys_interp = histosys_interp
        self.batch_size = 1
        self._build(channels, parameters, poi_name)

    # ------------------------------------------------------------------ construction
    def _build(
        self,
        channels: Sequence[Mapping[str, Any]],
        parameters: Sequence[Mapping[str, Any]],
        poi_name: str | None,
    ) -> None:
        self._staterror_components: dict[str, np.ndarray] = {}
        by_name = {c["name"]: c for c in channels}
        if len(by_name) != len(channels):
            raise _fail("duplicate channel names in the workspace")
        cnames = sorted(by_name)
        nbins = [len(by_name[c]["samples"][0]["data"]) for c in cnames]
        offsets = np.concatenate([[0], np.cumsum(nbins)]).astype(int)
        n_main = int(offsets[-1])
        snames = sorted({s["name"] for c in channels for s in c["samples"]})
        s_index = {s: i for i, s in enumerate(snames)}
        S, N, C = len(snames), n_main, len(cnames)
        chan_of_bin = np.repeat(np.arange(C), nbins)
        nom = np.zeros((S, N))

        # walk (channel, sample, modifier) in pyhf order and collect modifiers
        first_seen: dict[str, dict[str, int]] = {t: {} for t in _TYPE_ORDER}
        counter = 0
        mods: dict[tuple[str, str], list[tuple[int, int, Mapping[str, Any], str, str]]] = {}
        for ci, cname in enumerate(cnames):
            samples = sorted(by_name[cname]["samples"], key=lambda s: s["name"])
            for sample in samples:
                si = s_index[sample["name"]]
                lo, hi = offsets[ci], offsets[ci + 1]
                nom[si, lo:hi] = np.asarray(sample["data"], dtype=float)
                for mod in sorted(sample["modifiers"], key=lambda m: (m["name"], m["type"])):
                    mtype, mname = mod["type"], mod["name"]
                    if mtype not in first_seen:
                        raise _fail(
                            f"channel {cname!r}, sample {sample['name']!r}: unknown modifier "
                            f"type {mtype!r} of {mname!r}"
                        )
                    if mname not in first_seen[mtype]:
                        first_seen[mtype][mname] = counter
                        counter += 1
                    mods.setdefault((mtype, mname), []).append((ci, si, mod, cname, sample["name"]))

        # parameter sets
        psets: dict[str, ParamSet] = {}
        for mtype in _TYPE_ORDER:
            for mname in sorted(first_seen[mtype], key=lambda n: first_seen[mtype][n]):
                uses = mods[(mtype, mname)]
                ps = self._paramset(mtype, mname, uses, nbins, offsets, nom)
                if mname in psets:
                    other = psets[mname]
                    shared_ok = {other.types[0], mtype} <= {"normsys", "histosys"}
                    if not shared_ok:
                        raise _fail(
                            f"modifier name {mname!r} is used both as {other.types[0]} and as "
                            f"{mtype} (channel {uses[0][3]!r}, sample {uses[0][4]!r}); only "
                            "normsys and histosys may share a name"
                        )
                    other.types.append(mtype)
                else:
                    psets[mname] = ps

        # measurement overrides
        self._apply_config(psets, parameters)

        start = 0
        par_names: list[str] = []
        for ps in psets.values():
            ps.start = start
            start += ps.n
            if ps.is_scalar:
                par_names.append(ps.name)
            else:
                par_names.extend(f"{ps.name}[{i}]" for i in range(ps.n))
        P = start
        self._psets = psets
        self.par_names = par_names
        self.n_pars = P
        self.channel_names = cnames
        self.channel_nbins = nbins
        self.channel_slices = {
            c: slice(int(offsets[i]), int(offsets[i + 1])) for i, c in enumerate(cnames)
        }
        self.sample_names = snames
        self.n_main = n_main

        if poi_name is not None:
            if poi_name not in psets:
                raise _fail(
                    f"the parameter of interest {poi_name!r} is not a parameter of the model; "
                    f"parameters: {list(psets)}"
                )
            if not psets[poi_name].is_scalar:
                raise _fail(f"the parameter of interest {poi_name!r} must be a scalar parameter")
            self.poi_index: int | None = psets[poi_name].start
        else:
            self.poi_index = None
        self.poi_name = poi_name

        # ---- linear slots
        # one (sample, bin range, parameter per bin) record per linear modifier use, in the
        # order the slots of each entry are filled
        slot_uses: list[tuple[int, int, int, np.ndarray]] = []
        counts = np.zeros((S, N), np.intp)
        normsys_names: list[str] = []
        histosys_names: list[str] = []
        for (mtype, mname), uses in mods.items():
            ps = psets[mname]
            for ci, si, _mod, _cname, _sname in uses:
                lo, hi = int(offsets[ci]), int(offsets[ci + 1])
                if mtype in ("normfactor", "lumi"):
                    pv = np.full(hi - lo, ps.start, np.intp)
                elif mtype in ("shapefactor", "shapesys"):
                    pv = ps.start + np.arange(hi - lo, dtype=np.intp)
                elif mtype == "staterror":
                    pv = ps.start + self._staterror_components[mname][lo:hi]
                else:
                    continue
                slot_uses.append((si, lo, hi, pv))
                counts[si, lo:hi] += 1
            if mtype == "normsys" and mname not in normsys_names:
                normsys_names.append(mname)
            if mtype == "histosys" and mname not in histosys_names:
                histosys_names.append(mname)
        K = max(1, int(counts.max(initial=0)))
        lin_idx = np.full((K, S, N), P, dtype=np.intp)
        filled = np.zeros((S, N), np.intp)
        for si, lo, hi, pv in slot_uses:
            lin_idx[filled[si, lo:hi], si, np.arange(lo, hi)] = pv
            filled[si, lo:hi] += 1

        # ---- normsys instances (parameter, sample) with per-channel hi/lo, and histosys
        # instances (parameter, sample) with per-bin shifts over all main bins
        ns_inst: dict[tuple[str, int], int] = {}
        ns_hi: list[np.ndarray] = []
        ns_lo: list[np.ndarray] = []
        for mname in normsys_names:
            for ci, si, mod, cname, sname in mods[("normsys", mname)]:
                h, lo_ = float(mod["data"]["hi"]), float(mod["data"]["lo"])
                if h <= 0 or lo_ <= 0:
                    raise _fail(
                        f"channel {cname!r}, sample {sname!r}, modifier {mname!r} (normsys): "
                        f"hi and lo must be > 0 for {self.normsys_interp}, got hi={h}, lo={lo_}"
                    )
                key = (mname, si)
                if key not in ns_inst:
                    ns_inst[key] = len(ns_hi)
                    ns_hi.append(np.ones(C))
                    ns_lo.append(np.ones(C))
                ns_hi[ns_inst[key]][ci] = h
                ns_lo[ns_inst[key]][ci] = lo_
        hs_inst: dict[tuple[str, int], int] = {}
        hs_dp: list[np.ndarray] = []
        hs_dm: list[np.ndarray] = []
        for mname in histosys_names:
            for ci, si, mod, _cname, _sname in mods[("histosys", mname)]:
                lo, hi = int(offsets[ci]), int(offsets[ci + 1])
                key = (mname, si)
                if key not in hs_inst:
                    hs_inst[key] = len(hs_dp)
                    hs_dp.append(np.zeros(N))
                    hs_dm.append(np.zeros(N))
                j = hs_inst[key]
                hs_dp[j][lo:hi] = np.asarray(mod["data"]["hi_data"], float) - nom[si, lo:hi]
                hs_dm[j][lo:hi] = nom[si, lo:hi] - np.asarray(mod["data"]["lo_data"], float)
        hi_ns = np.asarray(ns_hi, float).reshape(-1, C)
        lo_ns = np.asarray(ns_lo, float).reshape(-1, C)
        numbers: dict[str, Any] = {
            "nom": nom[None],
            "hs_dp": np.asarray(hs_dp, float).reshape(1, -1, N),
            "hs_dm": np.asarray(hs_dm, float).reshape(1, -1, N),
            "ns_loghi": np.log(hi_ns)[None],
            "ns_loglo": np.log(lo_ns)[None],
            "ns_coef": (
                code4_coefficients(hi_ns, lo_ns)[None] if self.normsys_interp == "code4" else None
            ),
        }
        self._ns_keys = list(ns_inst)
        self._hs_keys = list(hs_inst)

        # ---- constraints, auxdata, init/bounds/fixed
        g_idx: list[int] = []
        g_pos: list[int] = []
        p_idx: list[int] = []
        p_pos: list[int] = []
        g_sig: list[float] = []
        p_tau: list[float] = []
        aux: list[float] = []
        init, bounds, fixed = [], [], []
        for ps in psets.values():
            init.extend(ps.inits)
            bounds.extend(ps.bounds)
            fixed.extend(ps.fixed)
            for i in range(ps.n):
                if ps.constraint == "normal":
                    g_idx.append(ps.start + i)
                    g_sig.append(ps.sigmas[i])
                    g_pos.append(len(aux))
                    aux.append(ps.auxdata[i])
                elif ps.constraint == "poisson":
                    p_idx.append(ps.start + i)
                    p_tau.append(ps.factors[i])
                    p_pos.append(len(aux))
                    aux.append(ps.auxdata[i])
        numbers["gauss_sigma"] = np.asarray(g_sig, float).reshape(1, -1)
        numbers["pois_tau"] = np.asarray(p_tau, float).reshape(1, -1)
        numbers["auxdata"] = np.asarray(aux, float).reshape(1, -1)
        numbers["init"] = np.asarray(init, float).reshape(1, -1)
        numbers["bounds"] = np.asarray(bounds, float).reshape(1, -1, 2)
        self.n_aux = len(aux)

        # ---- structure used by the derivatives
        self._S, self._N, self._C, self._K = S, N, C, K
        self._ones_sn = np.ones((1, S, N))
        self._chan_of_bin = chan_of_bin
        self._lin_idx = lin_idx
        # per instance: parameter index and sample index
        self._ns_par = np.asarray([psets[n].start for n, _ in self._ns_keys], np.intp)
        self._ns_s = np.asarray([si for _, si in self._ns_keys], np.intp)
        self._hs_par = np.asarray([psets[n].start for n, _ in self._hs_keys], np.intp)
        self._hs_s = np.asarray([si for _, si in self._hs_keys], np.intp)
        self._M, self._H = len(self._ns_keys), len(self._hs_keys)
        kink = np.zeros(self.n_pars, bool)
        if self.normsys_interp == "code1":
            kink[self._ns_par] = True
        if self.histosys_interp == "code0":
            kink[self._hs_par] = True
        # one-hot sample maps: (S, I) so that lnK = O @ lk and A = nom + O @ delta
        self._ns_onehot = (np.arange(S)[:, None] == self._ns_s[None, :]).astype(float)
        self._hs_onehot = (np.arange(S)[:, None] == self._hs_s[None, :]).astype(float)
        self._normsys_names, self._histosys_names = normsys_names, histosys_names
        # the arrowhead layout (used for batches and large models) is available as
        # self._arrow (built lazily: single fits of small models only need the dense layout)
        dense_layout = (_jit.ENABLED and P <= _JIT_MAX_PARS) or (
            P <= _DENSE_MAX_PARS and P * S * N <= _DENSE_MAX_SIZE
        )
        self.arrays = ModelArrays(
            n_pars=P,
            n_samples=S,
            n_bins=N,
            n_channels=C,
            n_slots=K,
            n_normsys=self._M,
            n_histosys=self._H,
            normsys_code4=self.normsys_interp == "code4",
            histosys_code4p=self.histosys_interp == "code4p",
            chan_of_bin=chan_of_bin,
            lin_idx=lin_idx,
            ns_par=self._ns_par,
            ns_sample=self._ns_s,
            hs_par=self._hs_par,
            hs_sample=self._hs_s,
            gauss_par=np.asarray(g_idx, np.intp),
            gauss_aux=np.asarray(g_pos, np.intp),
            pois_par=np.asarray(p_idx, np.intp),
            pois_aux=np.asarray(p_pos, np.intp),
            kink=kink,
            fixed=np.asarray(fixed, bool),
            **numbers,
            **self._build_blocks(psets, dense_layout=dense_layout),
        )
        self._arrow_cache: Model | None = None if dense_layout else self

    def _staterror_mask_and_sigmas(
        self,
        mname: str,
        uses: list[tuple[int, int, Mapping[str, Any], str, str]],
        nbins: list[int],
        offsets: np.ndarray,
        nom: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        N = int(offsets[-1])
        chans_by_sample: dict[int, set[int]] = {}
        for ci, si, _mod, _c, _s in uses:
            chans_by_sample.setdefault(si, set()).add(ci)
        chan_sets = list(chans_by_sample.values())
        if any(cs != chan_sets[0] for cs in chan_sets):
            raise _fail(
                f"staterror {mname!r} must be carried by the same channels for every sample that "
                "uses it (pyhf requires a consistent mask); rename it per channel"
            )
        mask = np.zeros(N, bool)
        nomsum = np.zeros(N)
        unc2 = np.zeros(N)
        for ci, si, mod, _c, _s in uses:
            lo, hi = int(offsets[ci]), int(offsets[ci + 1])
            mask[lo:hi] = True
            nomsum[lo:hi] += nom[si, lo:hi]
            unc2[lo:hi] += np.asarray(mod["data"], float) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(nomsum > 0, np.sqrt(unc2) / np.where(nomsum > 0, nomsum, 1.0), 0.0)
        return mask, rel

    def _paramset(
        self,
        mtype: str,
        mname: str,
        uses: list[tuple[int, int, Mapping[str, Any], str, str]],
        nbins: list[int],
        offsets: np.ndarray,
        nom: np.ndarray,
    ) -> ParamSet:
        ci0, _si0, _m0, cname0, sname0 = uses[0]
        spec = MODIFIER_SPECS[mtype]
        # per-type details: the number of components, which are fixed, the constraint's
        # auxdata / widths / factors where they depend on the yields
        n = 1
        fixed: list[bool] | None = None
        auxdata: list[float] | None = None
        sigmas: list[float] | None = None
        factors: list[float] = []
        if mtype == "shapefactor":
            n = nbins[ci0]
            for ci, _si, _m, cname, _sname in uses:
                if nbins[ci] != n:
                    raise _fail(
                        f"shapefactor {mname!r} is shared by channels with different bin counts "
                        f"({cname0!r}: {n}, {cname!r}: {nbins[ci]}); use one name per binning"
                    )
        elif mtype == "shapesys":
            if len(uses) > 1:
                raise _fail(
                    f"shapesys {mname!r} is used by channel {uses[1][3]!r}, sample {uses[1][4]!r} "
                    f"and by channel {cname0!r}, sample {sname0!r}; shapesys names must be unique"
                )
            ci, si, mod, _c, _s = uses[0]
            lo, hi = int(offsets[ci]), int(offsets[ci + 1])
            nominal = nom[si, lo:hi]
            unc = np.asarray(mod["data"], float)
            valid = (nominal > 0) & (unc > 0)
            tau = np.where(valid, nominal**2 / np.where(valid, unc, 1.0) ** 2, 1.0)
            n = hi - lo
            fixed = [bool(not v) for v in valid]
            auxdata = factors = [float(t) for t in tau]
        elif mtype == "staterror":
            mask, rel = self._staterror_mask_and_sigmas(mname, uses, nbins, offsets, nom)
            comp = np.full(int(offsets[-1]), -1, dtype=np.intp)
            comp[mask] = np.arange(int(mask.sum()))
            self._staterror_components[mname] = comp
            sig = rel[mask]
            n = int(mask.sum())
            fixed = [bool(s == 0) for s in sig]
            sigmas = [1.0 if s == 0 else float(s) for s in sig]
        gauss = spec.constraint == "normal"
        return ParamSet(
            mname,
            [mtype],
            n,
            [spec.init] * n,
            [spec.bounds] * n,
            [False] * n if fixed is None else fixed,
            spec.constraint,
            auxdata=auxdata if auxdata is not None else [spec.auxdata] * n if gauss else [],
            sigmas=sigmas if sigmas is not None else [spec.sigma] * n if gauss else [],
            factors=factors,
        )

    @staticmethod
    def _apply_config(psets: dict[str, ParamSet], parameters: Sequence[Mapping[str, Any]]) -> None:
        configs = {p["name"]: p for p in parameters}
        for name, cfg in configs.items():
            if name not in psets:
                continue  # pyhf ignores settings of parameters the model does not have
            ps = psets[name]
            for key in ("inits", "bounds", "auxdata", "sigmas", "factors"):
                if key not in cfg:
                    continue
                values = list(cfg[key])
                if len(values) != ps.n:
                    raise _fail(
                        f"measurement parameter {name!r}: {key} has {len(values)} values, the "
                        f"parameter has {ps.n} component(s)"
                    )
                if (
                    key in ("auxdata", "sigmas")
                    and ps.constraint != "normal"
                    and not (key == "auxdata" and ps.constraint == "poisson")
                ):
                    raise _fail(
                        f"measurement parameter {name!r} ({ps.types[0]}) does not use {key}"
                    )
                if key == "factors" and ps.constraint != "poisson":
                    raise _fail(
                        f"measurement parameter {name!r} ({ps.types[0]}) does not use factors"
                    )
                if key == "bounds":
                    bounds = []
                    for b in values:
                        if len(b) != 2 or not b[0] <= b[1]:
                            raise _fail(
                                f"measurement parameter {name!r}: bounds must be [low, high] "
                                f"with low <= high, got {b}"
                            )
                        bounds.append((float(b[0]), float(b[1])))
                    ps.bounds = bounds
                elif key == "sigmas":
                    if any(not v > 0 for v in values):
                        raise _fail(f"measurement parameter {name!r}: sigmas must be > 0")
                    ps.sigmas = [float(v) for v in values]
                else:
                    setattr(ps, key, [float(v) for v in values])
            if "fixed" in cfg:
                ps.fixed = [bool(cfg["fixed"])] * ps.n
        for ps in psets.values():
            if ps.types[0] == "lumi":
                cfg = configs.get(ps.name, {})
                if "auxdata" not in cfg or "sigmas" not in cfg:
                    raise _fail(
                        f"lumi modifier {ps.name!r} needs a measurement parameter entry "
                        f"{{'name': {ps.name!r}, 'auxdata': [...], 'sigmas': [...]}}"
                    )
                if "inits" not in cfg:
                    ps.inits = list(ps.auxdata)
                if "bounds" not in cfg:
                    ps.bounds = [(0.0, 10.0 * ps.auxdata[0])]
            for i, (lo, hi) in enumerate(ps.bounds):
                if not lo <= ps.inits[i] <= hi:
                    raise _fail(
                        f"parameter {ps.name!r}: init {ps.inits[i]} is outside bounds [{lo}, {hi}]"
                    )

    def _derivatives_dense(self, x: np.ndarray, consts: Consts) -> Derivs:
        if _jit.ENABLED:
            return _jit.derivatives(self.arrays, x, consts)
        return _derivatives_dense_impl(self, x, consts)

    @property
    def _arrow(self) -> Model:
        """This model in the arrowhead layout (itself for large models; built on first use)."""
        if self._arrow_cache is None:
            arrow = copy.copy(self)
            arrow.arrays = self.arrays.replace(
                **arrow._build_blocks(self._psets, dense_layout=False)
            )
            arrow._arrow_cache = arrow
            self._arrow_cache = arrow
        return self._arrow_cache

    @property
    def _dense_engine(self) -> bool:
        """Whether this model uses the dense (small-model) layout (``arrays.dense_layout``)."""
        return self.arrays.dense_layout

    @property
    def _arr(self) -> ModelArrays:
        """Deprecated internal alias of :attr:`arrays` (kept for callers outside the engine)."""
        return self.arrays

    def _with_numbers(self, batch_size: int, **numbers: Any) -> Model:
        """A copy of this model with new per-row numbers (stacking, row selection, yields), in
        both layouts."""
        out = copy.copy(self)
        out.arrays = self.arrays.replace(**numbers)
        out.batch_size = batch_size
        cached = self._arrow_cache
        if not self.arrays.dense_layout:
            out._arrow_cache = out
        elif cached is not None:
            arrow = copy.copy(cached)
            arrow.arrays = cached.arrays.replace(**numbers)
            arrow.batch_size = batch_size
            arrow._arrow_cache = arrow
            out._arrow_cache = arrow
        return out

    def _build_blocks(self, psets: dict[str, ParamSet], *, dense_layout: bool) -> dict[str, Any]:
        """Split parameters into a dense block and per-bin 'local' gammas (arrowhead Hessian).

        Returns the layout fields of :class:`ModelArrays`; sets the NumPy engine's own index
        tables on ``self``."""
        P, K = self.n_pars, self._K
        lin = self._lin_idx
        gamma_par = np.zeros(P + 1, bool)
        for ps in psets.values():
            if not MODIFIER_SPECS[ps.types[0]].scalar:
                gamma_par[ps.start : ps.start + ps.n] = True
        # bins touched by each gamma component
        touched: dict[int, set[int]] = {}
        twice: set[int] = set()
        # small models: one dense Hessian is cheaper than the arrowhead bookkeeping
        if not dense_layout:
            ks, ss, ns = np.nonzero(lin < P)
            for k, s, n in zip(ks.tolist(), ss.tolist(), ns.tolist(), strict=True):
                p = int(lin[k, s, n])
                if gamma_par[p]:
                    touched.setdefault(p, set()).add(n)
            # a gamma appearing twice in one entry is kept dense (second derivative != 0)
            srt = np.sort(lin, axis=0)
            dup = (srt[1:] == srt[:-1]) & (srt[1:] < P)
            twice = {int(v) for v in srt[1:][dup]}
        claimed: set[int] = set()
        local: list[int] = []
        local_bin: list[int] = []
        for p in sorted(touched):
            bins = touched[p]
            if len(bins) == 1 and p not in twice:
                (b,) = bins
                if b not in claimed:
                    claimed.add(b)
                    local.append(p)
                    local_bin.append(b)
        is_local = np.zeros(P, bool)
        is_local[local] = True
        dense = np.flatnonzero(~is_local)
        local_a = np.asarray(local, np.intp)
        nD, nL = len(dense), len(local)
        # position maps: dense position or local position for each parameter, const -> -1
        dpos = np.full(P + 1, -1, np.intp)
        dpos[dense] = np.arange(nD)
        lpos = np.full(P + 1, -1, np.intp)
        lpos[local_a] = np.arange(nL)
        # alpha (normsys/histosys) parameters in the dense block
        alpha_pars = sorted(set(self._ns_par.tolist()) | set(self._hs_par.tolist()))
        self._alpha_par = np.asarray(alpha_pars, np.intp)
        self._alpha_dpos = dpos[self._alpha_par]
        amap = {p: i for i, p in enumerate(alpha_pars)}
        # rows = unique (alpha parameter, sample) pairs carrying normsys and/or histosys
        rows: dict[tuple[int, int], int] = {}
        for p_, s_ in zip(
            self._ns_par.tolist() + self._hs_par.tolist(),
            self._ns_s.tolist() + self._hs_s.tolist(),
            strict=True,
        ):
            rows.setdefault((p_, s_), len(rows))
        R = len(rows)
        self._R = R
        self._row_s = np.asarray([s_ for _, s_ in rows], np.intp)
        self._row_a = np.asarray([amap[p_] for p_, _ in rows], np.intp)
        self._ns_row = np.asarray(
            [rows[(int(p_), int(s_))] for p_, s_ in zip(self._ns_par, self._ns_s, strict=True)],
            np.intp,
        )
        self._hs_row = np.asarray(
            [rows[(int(p_), int(s_))] for p_, s_ in zip(self._hs_par, self._hs_s, strict=True)],
            np.intp,
        )
        nA = len(alpha_pars)
        self._row_onehot = (np.arange(nA)[:, None] == self._row_a[None, :]).astype(float)
        self._row_same = (self._row_s[:, None] == self._row_s[None, :]).astype(float)
        # single-slot selections
        ks, ss, ns = np.nonzero(lin < P)
        tgt = lin[ks, ss, ns]
        isd = dpos[tgt] >= 0
        self._dl = (ks[isd], ss[isd], ns[isd], dpos[tgt[isd]])
        isl = ~isd
        self._ll = (ks[isl], ss[isl], ns[isl], lpos[tgt[isl]])
        # slot pairs (k < k2) in the same entry, both non-constant
        pk: list[np.ndarray] = []
        pk2: list[np.ndarray] = []
        ps_: list[np.ndarray] = []
        pn: list[np.ndarray] = []
        for k_a in range(K):
            for k_b in range(k_a + 1, K):
                s_, n_ = np.nonzero((lin[k_a] < P) & (lin[k_b] < P))
                pk.append(np.full(len(s_), k_a))
                pk2.append(np.full(len(s_), k_b))
                ps_.append(s_)
                pn.append(n_)
        if pk:
            pk_a = np.concatenate(pk).astype(np.intp)
            pk2_a = np.concatenate(pk2).astype(np.intp)
            ps_a = np.concatenate(ps_).astype(np.intp)
            pn_a = np.concatenate(pn).astype(np.intp)
        else:
            pk_a = pk2_a = ps_a = pn_a = np.zeros(0, np.intp)
        p1 = lin[pk_a, ps_a, pn_a]
        p2 = lin[pk2_a, ps_a, pn_a]
        others = np.ones((K, len(pk_a)), bool)
        others[pk_a, np.arange(len(pk_a))] = False
        others[pk2_a, np.arange(len(pk_a))] = False
        self._pairs = (pk_a, pk2_a, ps_a, pn_a, p1, p2, others)

        # (row, slot) couples on the same sample: alpha x linear second derivatives
        def couples(sel_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            r_i, j_i = np.nonzero(self._row_s[:, None] == sel_s[None, :])
            return r_i.astype(np.intp), j_i.astype(np.intp)

        self._cpl_d = couples(self._dl[1])
        self._cpl_l = couples(self._ll[1])
        self._pair_dd = (dpos[p1] >= 0) & (dpos[p2] >= 0)
        self._pair_ll = (lpos[p1] >= 0) & (lpos[p2] >= 0)
        if np.any(self._pair_ll & (p1 != p2)):  # impossible by construction
            raise AssertionError("two different local gammas share a bin")
        # dense-local pairs, oriented (dense, local)
        dl_mask = ~(self._pair_dd | self._pair_ll)
        pd_ = np.where(dpos[p1] >= 0, p1, p2)[dl_mask]
        pl_ = np.where(dpos[p1] >= 0, p2, p1)[dl_mask]
        self._pair_dl = (dl_mask, dpos[pd_], lpos[pl_])
        self._dense_maps_ready = False  # built on first use by the NumPy dense engine
        return {
            "dense_layout": dense_layout,
            "dense": dense,
            "local": local_a,
            "local_bin": np.asarray(local_bin, np.intp),
            "dpos": dpos,
            "lpos": lpos,
        }

    def _build_dense_maps(self) -> None:
        """Gather indices for the per-entry gradient tensors of the dense engine.

        Entries are ``e = s * N + n``. ``_q_gather[p, e]`` points into the flattened
        ``(I_normsys * C)`` array of d ln(kappa)/d alpha (last slot: 0), ``_h_gather[p, e]`` into
        the flattened ``(I_histosys * N)`` shifts; ``_lin_onehot[k, p, e]`` marks slot k of
        entry e holding parameter p.
        """
        P, S, N, C, K = self.n_pars, self._S, self._N, self._C, self._K
        E = S * N
        e_s = np.repeat(np.arange(S), N)
        e_n = np.tile(np.arange(N), S)
        e_c = self._chan_of_bin[e_n]
        qg = np.full((P, E), self._M * C, np.intp)
        for i, (p_, s_) in enumerate(zip(self._ns_par, self._ns_s, strict=True)):
            sel = e_s == s_
            qg[p_, sel] = i * C + e_c[sel]
        hg = np.full((P, E), self._H * N, np.intp)
        for j, (p_, s_) in enumerate(zip(self._hs_par, self._hs_s, strict=True)):
            sel = e_s == s_
            hg[p_, sel] = j * N + e_n[sel]
        self._q_gather, self._h_gather = qg, hg
        # instance -> parameter one-hot maps (for per-instance sums)
        self._hs_to_par = (self._hs_par[:, None] == np.arange(P)[None, :]).astype(float)
        self._ns_to_par = (self._ns_par[:, None] == np.arange(P)[None, :]).astype(float)
        lin = self._lin_idx.reshape(K, E)
        onehot = np.zeros((K, P, E))
        for k in range(K):
            ok = lin[k] < P
            onehot[k, lin[k, ok], np.flatnonzero(ok)] = 1.0
        self._lin_onehot = onehot
        self._lin_any = onehot.sum(axis=0)  # (P, E)
        pk, _pk2, _ps, _pn, p1, p2, _ = self._pairs
        pm = np.zeros((len(pk), P * P))
        pm[np.arange(len(pk)), p1 * P + p2] += 1.0
        pm[np.arange(len(pk)), p2 * P + p1] += 1.0
        self._pair_map = pm

    # ------------------------------------------------------------------ public API
    @property
    def auxdata(self) -> np.ndarray:
        """Auxiliary data (constrained parameters in parameter order); ``(B, n_aux)`` if stacked."""
        return self.arrays.auxdata[0].copy() if self.batch_size == 1 else self.arrays.auxdata.copy()

    @property
    def n_data(self) -> int:
        """Length of the full data vector (main bins + auxdata)."""
        return self.n_main + self.n_aux

    def suggested_init(self) -> np.ndarray:
        """Initial parameter values (measurement settings applied)."""
        return self.arrays.init[0].copy() if self.batch_size == 1 else self.arrays.init.copy()

    def suggested_bounds(self) -> np.ndarray:
        """``(P, 2)`` array of ``[low, high]`` per parameter."""
        return self.arrays.bounds[0].copy() if self.batch_size == 1 else self.arrays.bounds.copy()

    def suggested_fixed(self) -> np.ndarray:
        """Boolean ``(P,)``: parameters fixed by the measurement or by construction."""
        return self.arrays.fixed.copy()

    def par_slice(self, name: str) -> slice:
        """Slice of the parameter vector belonging to parameter ``name``."""
        if name not in self._psets:
            raise HepWorkspaceError(f"unknown parameter {name!r}")
        ps = self._psets[name]
        return slice(ps.start, ps.start + ps.n)

    def par_index(self, name: str) -> int:
        """Index of a scalar parameter or a component name such as ``"gamma_stat[2]"``."""
        try:
            return self.par_names.index(name)
        except ValueError:
            raise HepWorkspaceError(
                f"unknown parameter {name!r}; parameters: {self.par_names}"
            ) from None

    @property
    def parameters(self) -> list[str]:
        """Parameter (set) names in model order."""
        return list(self._psets)

    def param_types(self, name: str) -> list[str]:
        """Modifier types behind parameter ``name`` (normally one; normsys+histosys can share)."""
        return list(self._psets[name].types)

    def constraint_width(self, i: int) -> float | None:
        """Pre-fit width of constrained parameter ``i`` (``None`` if unconstrained).

        Gaussian: its sigma (1 for normsys/histosys, the relative MC uncertainty for
        staterror); Poisson (shapesys): ``1/sqrt(tau)``.
        """
        if not 0 <= i < self.n_pars:
            raise HepWorkspaceError(f"parameter index {i} out of range [0, {self.n_pars})")
        hit = np.flatnonzero(self.arrays.gauss_par == i)
        if hit.size:
            return float(self.arrays.gauss_sigma[0, hit[0]])
        hit = np.flatnonzero(self.arrays.pois_par == i)
        if hit.size:
            return float(1.0 / math.sqrt(self.arrays.pois_tau[0, hit[0]]))
        return None

    def _check_pars(self, pars: Any) -> np.ndarray:
        x = np.asarray(pars, dtype=float)
        if x.shape[-1:] != (self.n_pars,) or x.ndim not in (1, 2):
            raise HepWorkspaceError(
                f"parameter array must have shape ({self.n_pars},) or (B, {self.n_pars}), "
                f"got {x.shape}"
            )
        return x

    def _check_data(self, data: Any) -> np.ndarray:
        d = np.asarray(data, dtype=float)
        if d.shape[-1:] != (self.n_data,) or d.ndim not in (1, 2):
            raise HepFitError(
                f"data must have shape ({self.n_data},) or (B, {self.n_data}) (main bins then "
                f"auxdata), got {d.shape}"
            )
        if not np.all(np.isfinite(d)):
            raise HepFitError("data must be finite")
        # main bins and Poisson auxdata are counts; Gaussian auxdata may be negative
        if np.any(d[..., : self.n_main] < 0) or np.any(
            d[..., self.n_main + self.arrays.pois_aux] < 0
        ):
            raise HepFitError("main-bin counts and Poisson auxdata must be >= 0")
        return d

    def expected_data(self, pars: Any, include_auxdata: bool = True) -> np.ndarray:
        """Expected main-bin rates (and expected auxdata) at ``pars``.

        Args:
            pars: ``(P,)`` or ``(B, P)``.
            include_auxdata: Append the expected auxdata (Gaussian: the parameter value;
                Poisson: ``tau * gamma``), as pyhf does.

        Returns:
            ``(n,)`` or ``(B, n)``.
        """
        x = self._check_pars(pars)
        xb = x.reshape(-1, self.n_pars)
        nu = self._nu(xb).nu
        if include_auxdata:
            nu = np.concatenate([nu, self._expected_aux(xb)], axis=1)
        out: np.ndarray = nu[0] if x.ndim == 1 and self.batch_size == 1 else nu
        return out

    def _expected_aux(self, x: np.ndarray) -> np.ndarray:
        B = max(x.shape[0], self.batch_size)
        out = np.empty((B, self.n_aux))
        out[:, self.arrays.gauss_aux] = x[:, self.arrays.gauss_par]
        out[:, self.arrays.pois_aux] = x[:, self.arrays.pois_par] * self.arrays.pois_tau
        return out

    def main_data(self, data: Any) -> np.ndarray:
        """The main-bin part of a full data vector."""
        return np.asarray(data, float)[..., : self.n_main]

    def logpdf(self, pars: Any, data: Any) -> np.ndarray | float:
        """``ln L`` (every constant included)."""
        out = self.twice_nll(pars, data)
        return -0.5 * out

    def twice_nll(self, pars: Any, data: Any) -> np.ndarray | float:
        """``-2 ln L(pars | data)`` including every constant.

        Args:
            pars: ``(P,)`` or ``(B, P)``.
            data: ``(n,)`` or ``(B, n)``: main bins then auxdata.

        Returns:
            A float, or ``(B,)`` when either argument is batched.
        """
        x = self._check_pars(pars)
        d = self._check_data(data)
        xb = x.reshape(-1, self.n_pars)
        db = d.reshape(-1, self.n_data)
        consts = self._constants(db)
        out = self._f(xb, db, consts)
        if x.ndim == 1 and d.ndim == 1 and self.batch_size == 1:
            return float(out[0])
        return out

    # ------------------------------------------------------------------ internals
    def _constants(self, d: np.ndarray) -> Consts:
        """Data-dependent pieces fixed during a fit: n, aux, and the constant of -2 ln L."""
        n = d[:, : self.n_main]
        aux = d[:, self.n_main :]
        ga = aux[:, self.arrays.gauss_aux]
        pa = aux[:, self.arrays.pois_aux]
        sig = self.arrays.gauss_sigma
        if _jit.ENABLED:
            return Consts(n, ga, pa, _jit.constants(n, pa, sig, self.arrays.pois_tau))
        const = (
            2.0 * gammaln(n + 1.0).sum(axis=1)
            + (np.log(sig * sig) + _LN_2PI).sum(axis=1)
            + 2.0 * _pois_aux_const(pa, self.arrays.pois_tau).sum(axis=1)
        )
        return Consts(n, ga, pa, const)

    def _nu(self, x: np.ndarray) -> _Rates:
        """Rates and the intermediate products needed by the derivatives."""
        arr = self.arrays
        A = arr.nom
        hd1 = hd2 = lk1 = lk2 = None
        if self._H:
            al = x[:, self._hs_par][:, :, None]
            delta, hd1, hd2 = histosys_interp_fast(
                al, arr.hs_dp, arr.hs_dm, arr.hs_sym, arr.hs_asym, self.histosys_interp
            )
            A = A + self._hs_onehot @ delta
        if self._M:
            al = x[:, self._ns_par][:, :, None]
            lk, lk1, lk2 = normsys_log_interp_fast(al, arr.ns_loghi, arr.ns_loglo, arr.ns_pow)
            Kn = np.exp(self._ns_onehot @ lk)[:, :, self._chan_of_bin]
        else:
            Kn = self._ones_sn
        xe = np.empty((x.shape[0], x.shape[1] + 1))
        xe[:, :-1] = x
        xe[:, -1] = 1.0
        if self._K == 1:
            L = xe[:, self._lin_idx[0]][:, None]
            Lf = L[:, 0]
        else:
            L = xe[:, self._lin_idx]  # (B, K, S, N)
            Lf = L.prod(axis=1)
        F = Kn * Lf
        nus = F * A
        nu = nus.sum(axis=1)
        return _Rates(nu, nus, F, A, Kn, L, hd1, hd2, lk1, lk2)

    def _f(self, x: np.ndarray, d: np.ndarray | None, consts: Consts) -> np.ndarray:
        if _jit.ENABLED:
            return _jit.value(self.arrays, x, consts)
        n, ga, pa, const = consts
        nu = self._nu(x).nu
        return self._f_from_nu(x, nu, n, ga, pa, const)

    def _f_from_nu(
        self,
        x: np.ndarray,
        nu: np.ndarray,
        n: np.ndarray,
        ga: np.ndarray,
        pa: np.ndarray,
        const: np.ndarray,
    ) -> np.ndarray:
        if nu.min() > 0.0:  # the usual case: n ln nu is finite (and 0 where n == 0)
            f = 2.0 * (nu - n * np.log(nu)).sum(axis=1)
        else:
            # pyhf's semantics: a bin with 0 observed events contributes nu (finite, even for
            # nu < 0); a bin with events and nu <= 0 makes -2 ln L infinite (pyhf: inf or nan)
            with np.errstate(divide="ignore", invalid="ignore"):
                main = nu - _xlogy(n, nu)
                main = np.where((nu <= 0) & (n > 0), np.inf, main)
                f = 2.0 * main.sum(axis=1)
        z = (ga - x[:, self.arrays.gauss_par]) / self.arrays.gauss_sigma
        f = f + (z * z).sum(axis=1)
        if self.arrays.pois_par.size:
            f = f + 2.0 * _pois_aux_term(x[:, self.arrays.pois_par], pa, self.arrays.pois_tau).sum(
                axis=1
            )
        return np.asarray(f + const)

    def _derivatives(self, x: np.ndarray, consts: Consts) -> Derivs:
        """twice_nll, gradient and the arrowhead Hessian blocks.

        Second derivatives of the expected rates (``T = sum_sb w_b d2 nu_sb``) are assembled
        from the per-(alpha, sample) rows, the linear-factor slots and their pairs; see the
        module docstring for the factorisation ``nu_sb = K_sb(alpha) * L_sb(theta) * A_sb(alpha)``.

        Returns:
            ``(f (B,), g (B, P), H_DD (B, nD, nD), H_DL (B, nD, nL), H_LL (B, nL), nu)``.
        """
        if self._dense_engine:
            return self._derivatives_dense(x, consts)
        if _jit.ENABLED:
            return _jit.derivatives_arrow(self.arrays, x, consts)
        n, ga, pa, const = consts
        nu, nus, F, A, Kn, L, hd1, hd2, lk1, lk2 = self._nu(x)
        f = self._f_from_nu(x, nu, n, ga, pa, const)
        B = x.shape[0]
        P, N, nD, nL, K = self.n_pars, self._N, self.arrays.n_dense, self.arrays.n_local, self._K
        if nu.min() > 0.0:
            ratio = n / nu
            dw = ratio / nu  # second derivative of nu - n ln nu
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(nu > 0, n / nu, 0.0)
                dw = np.where(nu > 0, ratio / nu, 0.0)
        w = 1.0 - ratio  # first derivative
        # exclusion products of the linear factors: d(prod L)/dL_k
        if K == 1:
            excl = np.ones((1, 1, 1, 1))
        else:
            pre = np.cumprod(L, axis=1)
            suf = np.cumprod(L[:, ::-1], axis=1)[:, ::-1]
            excl = np.ones_like(L)
            excl[:, 1:] *= pre[:, :-1]
            excl[:, :-1] *= suf[:, 1:]
        KA = Kn * A
        if KA.shape[0] != B:  # neither factor depends on the parameters: one row for all
            KA = np.broadcast_to(KA, (B, *KA.shape[1:]))
        bidx = np.arange(B)[:, None]

        J = np.zeros((B, nD, N))
        TD = np.zeros((B, nD, nD))
        HDL = np.zeros((B, nD, nL))
        HLL = np.zeros((B, nL))
        R = self._R
        if R:
            nA = len(self._alpha_par)
            ad = self._alpha_dpos
            rs = self._row_s
            Q = np.zeros((B, R, N))
            Pm = np.zeros((B, R, N))
            cob = self._chan_of_bin
            if self._M:
                Q[:, self._ns_row] = lk1[..., cob]
            if self._H:
                Pm[:, self._hs_row] = hd1
            Fr = F[:, rs]
            FP = Fr * Pm
            G = nus[:, rs] * Q + FP  # per-(alpha, sample) gradient rows
            oh = self._row_onehot
            J[:, ad] = oh @ G
            wb = w[:, None, :]
            Tr = (Q * wb) @ G.transpose(0, 2, 1) + (FP * wb) @ Q.transpose(0, 2, 1)
            Taa = oh @ (Tr * self._row_same) @ oh.T
            diag = np.zeros((B, nA))
            if self._M:
                dn = ((w[:, None, :] * nus[:, self._ns_s]) * lk2[..., cob]).sum(axis=2)
                diag += dn @ self._row_onehot[:, self._ns_row].T
            if self._H:
                dh = ((w[:, None, :] * F[:, self._hs_s]) * hd2).sum(axis=2)
                diag += dh @ self._row_onehot[:, self._hs_row].T
            ia = np.arange(nA)
            Taa[:, ia, ia] += diag
            TD[:, ad[:, None], ad[None, :]] += Taa
            # alpha x linear: sum_sb w (A Q + P) K dLf/dtheta
            Z = wb * (A[:, rs] * Q + Pm) * Kn[:, rs]
            dk, ds, dn_, dp = self._dl
            cr, cj = self._cpl_d
            if cr.size:
                V = Z[:, cr, dn_[cj]]
                if K > 1:
                    V = V * excl[:, dk[cj], ds[cj], dn_[cj]]
                idx = bidx * (nA * nD) + self._row_a[cr] * nD + dp[cj]
                T = np.bincount(idx.ravel(), V.ravel(), B * nA * nD).reshape(B, nA, nD)
                TD[:, ad, :] += T
                TD[:, :, ad] += T.transpose(0, 2, 1)
            lk_, ls_, ln_, lp_ = self._ll
            cr, cj = self._cpl_l
            if cr.size:
                V = Z[:, cr, ln_[cj]]
                if K > 1:
                    V = V * excl[:, lk_[cj], ls_[cj], ln_[cj]]
                idx = bidx * (nA * nL) + self._row_a[cr] * nL + lp_[cj]
                T = np.bincount(idx.ravel(), V.ravel(), B * nA * nL).reshape(B, nA, nL)
                HDL[:, ad, :] += T
        # linear single-slot Jacobian entries: d nu_sb / d theta = K A excl
        dk, ds, dn_, dp = self._dl
        if dk.size:
            vals = KA[:, ds, dn_] if K == 1 else KA[:, ds, dn_] * excl[:, dk, ds, dn_]
            idx = bidx * (nD * N) + dp * N + dn_
            J += np.bincount(idx.ravel(), vals.ravel(), B * nD * N).reshape(B, nD, N)
        Jl: np.ndarray = np.zeros((B, nL))
        lk_, ls_, ln_, lp_ = self._ll
        if lk_.size:
            vals = KA[:, ls_, ln_] if K == 1 else KA[:, ls_, ln_] * excl[:, lk_, ls_, ln_]
            Jl = np.bincount((bidx * nL + lp_).ravel(), vals.ravel(), B * nL).reshape(B, nL)
        # pairs of linear factors in one entry (second derivative of their product)
        pk, _pk2, ps_, pn_, p1, p2, others = self._pairs
        if pk.size:
            Lsel = L[:, :, ps_, pn_]  # (B, K, npairs)
            excl2 = np.where(others, Lsel, 1.0).prod(axis=1)
            v = w[:, pn_] * KA[:, ps_, pn_] * excl2
            m = self._pair_dd
            if m.any():
                a, b_ = self.arrays.dpos[p1[m]], self.arrays.dpos[p2[m]]
                T = np.bincount(
                    (bidx * nD * nD + a * nD + b_).ravel(), v[:, m].ravel(), B * nD * nD
                ).reshape(B, nD, nD)
                TD += T + T.transpose(0, 2, 1)
            m = self._pair_ll
            if m.any():
                a = self.arrays.lpos[p1[m]]
                HLL += 2.0 * np.bincount((bidx * nL + a).ravel(), v[:, m].ravel(), B * nL).reshape(
                    B, nL
                )
            m, a, b_ = self._pair_dl
            if m.any():
                HDL += np.bincount(
                    (bidx * nD * nL + a * nL + b_).ravel(), v[:, m].ravel(), B * nD * nL
                ).reshape(B, nD, nL)
        # assemble (twice_nll = 2 * sum(nu - n ln nu) + constraints)
        g = np.zeros((B, P))
        g[:, self.arrays.dense] = 2.0 * (J @ w[:, :, None])[..., 0]
        lb = self.arrays.local_bin
        HDD = 2.0 * ((J * dw[:, None, :]) @ J.transpose(0, 2, 1) + TD)
        if nL:
            g[:, self.arrays.local] = 2.0 * Jl * w[:, lb]
            HDL = 2.0 * (J[:, :, lb] * (dw[:, lb] * Jl)[:, None, :] + HDL)
            HLL = 2.0 * (dw[:, lb] * Jl * Jl + HLL)
        # constraints
        gi = self.arrays.gauss_par
        g[:, gi] += 2.0 * (x[:, gi] - ga) * self.arrays.inv_sig2
        hdiag = self.arrays.hdiag_gauss
        pi = self.arrays.pois_par
        if pi.size:
            gam = x[:, pi]
            g[:, pi] += 2.0 * (self.arrays.pois_tau - pa / gam)
            hdiag = np.broadcast_to(hdiag, (B, P)).copy()
            hdiag[:, pi] += 2.0 * pa / (gam * gam)
        iD = np.arange(nD)
        HDD[:, iD, iD] += hdiag[:, self.arrays.dense]
        if nL:
            HLL = HLL + hdiag[:, self.arrays.local]
        return Derivs(f, g, HDD, HDL, HLL, nu)


def _derivatives_dense_impl(model: Model, x: np.ndarray, consts: Consts) -> Derivs:
    """Dense engine: per-entry gradient tensors ``(B, P, E)`` and a full ``(B, P, P)`` Hessian.

    With ``nu_e = K_e L_e A_e`` (normsys product, linear factors, additive nominal+histosys),
    ``Q = d ln K / d theta``, ``U = K dL/d theta``, ``Pd = dA/d theta``, the per-entry gradient is
    ``G = nu Q + U A + F Pd`` and ``sum_e w_e d2 nu_e = Q (wG)^T + (wR) Q^T + U (wPd)^T
    + (wPd) U^T + diag + linear pairs`` with ``R = U A + F Pd``.
    """
    if not model._dense_maps_ready:
        model._build_dense_maps()
        model._dense_maps_ready = True
    n, ga, pa, const = consts
    nu, nus, F, A, Kn, L, hd1, hd2, lk1, lk2 = model._nu(x)
    f = model._f_from_nu(x, nu, n, ga, pa, const)
    B = x.shape[0]
    P, S, N, K = model.n_pars, model._S, model._N, model._K
    E = S * N
    if nu.min() > 0.0:
        ratio = n / nu
        dw = ratio / nu
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(nu > 0, n / nu, 0.0)
            dw = np.where(nu > 0, ratio / nu, 0.0)
    w = 1.0 - ratio
    if S > 1:
        w3 = np.empty((B, S, N))
        w3[:] = w[:, None, :]
        wE = w3.reshape(B, E)
    else:
        wE = w  # (B, E)
    nusE = nus.reshape(B, E)
    FE = _flat(F, nus.shape, B, E)
    AE = _flat(A, nus.shape, B, E)
    KnE = _flat(Kn, nus.shape, B, E)
    if K == 1:
        U = model._lin_any * KnE[:, None, :]
        excl = None
    else:
        pre = np.cumprod(L, axis=1)
        suf = np.cumprod(L[:, ::-1], axis=1)[:, ::-1]
        excl = np.ones_like(L)
        excl[:, 1:] *= pre[:, :-1]
        excl[:, :-1] *= suf[:, 1:]
        U = np.einsum("kpe,bke->bpe", model._lin_onehot, (Kn[:, None] * excl).reshape(B, K, E))
    R = U * AE[:, None, :]
    T = np.zeros((B, P, P))
    diag = np.zeros((B, P))
    Q = Pd = None
    if model._H:
        d1f = _pad0(hd1, B)
        Pd = np.take(d1f, model._h_gather, axis=1)  # (B, P, E)
        R = R + FE[:, None, :] * Pd
        # second derivative of A per histosys instance, summed over bins, onto its parameter
        diag += ((w[:, None, :] * F[:, model._hs_s]) * hd2).sum(axis=2) @ model._hs_to_par
        wP = Pd * wE[:, None, :]
        UwP = U @ wP.transpose(0, 2, 1)
        T += UwP + UwP.transpose(0, 2, 1)
    if model._M:
        q1 = _pad0(lk1, B)
        Q = np.take(q1, model._q_gather, axis=1)
        G = nusE[:, None, :] * Q + R
        cob = model._chan_of_bin
        diag += ((w[:, None, :] * nus[:, model._ns_s]) * lk2[..., cob]).sum(axis=2) @ (
            model._ns_to_par
        )
        wb = wE[:, None, :]
        T += (Q * wb) @ G.transpose(0, 2, 1) + (R * wb) @ Q.transpose(0, 2, 1)
    else:
        G = R
    pk, _pk2, ps_, pn_, _p1, _p2, others = model._pairs
    if pk.size:
        Lsel = L[:, :, ps_, pn_]
        excl2 = np.where(others, Lsel, 1.0).prod(axis=1)
        v = w[:, pn_] * (Kn * A)[:, ps_, pn_] * excl2
        T += (v @ model._pair_map).reshape(B, P, P)
    J = G.reshape(B, P, S, N).sum(axis=2)
    H = (J * dw[:, None, :]) @ J.transpose(0, 2, 1) + T
    ip = np.arange(P)
    H[:, ip, ip] += diag
    H *= 2.0
    g = 2.0 * (J @ w[:, :, None])[..., 0]
    gi = model.arrays.gauss_par
    g[:, gi] += 2.0 * (x[:, gi] - ga) * model.arrays.inv_sig2
    hdiag = model.arrays.hdiag_gauss
    pi = model.arrays.pois_par
    if pi.size:
        gam = x[:, pi]
        g[:, pi] += 2.0 * (model.arrays.pois_tau - pa / gam)
        hdiag = np.broadcast_to(hdiag, (B, P)).copy()
        hdiag[:, pi] += 2.0 * pa / (gam * gam)
    H[:, ip, ip] += hdiag
    return Derivs(f, g, H, np.zeros((B, P, 0)), np.zeros((B, 0)), nu)


def _pad0(a: np.ndarray, B: int) -> np.ndarray:
    """``a`` broadcast to ``B`` rows, flattened per row, with one trailing 0 column appended."""
    size = a[0].size
    out = np.empty((B, size + 1))
    out[:, :size] = a.reshape(a.shape[0], size)
    out[:, size] = 0.0
    return out


def _flat(a: np.ndarray, shape: tuple[int, ...], B: int, E: int) -> np.ndarray:
    """``a`` broadcast to ``shape`` and flattened to ``(B, E)`` (no copy when it already fits)."""
    if a.shape != shape:
        a = np.broadcast_to(a, shape)
    return a.reshape(B, E)


def _pois_aux_term(gam: np.ndarray, a: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``tau gamma - a ln gamma - tau`` without cancellation for large ``tau`` (shapesys with a
    tiny relative uncertainty has ``tau`` up to ~1e11): with ``u = gamma - 1``,
    ``(tau - a) u + a (u - ln(1 + u))``. The ``- tau`` is moved into :func:`_pois_aux_const`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u = gam - 1.0
        out = (tau - a) * u + np.where(a == 0, 0.0, a * (u - np.log1p(u)))
        return np.where((a != 0) & (gam <= 0), np.inf, out)


def _pois_aux_const(a: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``lgamma(a + 1) - a ln tau + tau`` (the constant of the Poisson constraint terms, per
    component), by Stirling's series for large ``a`` so that the three huge terms do not cancel:
    ``a ln(a / tau) - a + tau + ln(2 pi a) / 2 + 1/(12 a) - 1/(360 a^3) + 1/(1260 a^5)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        big = a >= 100.0
        ab = np.where(big, a, 100.0)
        r = (ab - tau) / tau
        stirling = (
            ab * np.log1p(r)
            - tau * r
            + 0.5 * np.log(2.0 * np.pi * ab)
            + 1.0 / (12.0 * ab)
            - 1.0 / (360.0 * ab**3)
            + 1.0 / (1260.0 * ab**5)
        )
        naive = gammaln(a + 1.0) - _xlogy(a, tau) + tau
        return np.asarray(np.where(big, stirling, naive))


def _xlogy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a == 0, 0.0, a * np.log(b))


def stack_models(models: Sequence[Model]) -> Model:
    """Stack models of identical structure (same parameters, bins, modifiers) along a batch axis.

    The result fits ``B = len(models)`` data sets in one vectorised call of
    :func:`sigtune.hep.fit_batch` (row ``i`` of the data batch belongs to model ``i``); the
    yields, uncertainties and measurement settings may differ between the models.

    Raises:
        HepWorkspaceError: The models differ in structure.
    """
    if not models:
        raise HepWorkspaceError("stack_models needs at least one model")
    ref = models[0]
    for i, m in enumerate(models[1:], start=1):
        same = (
            m.par_names == ref.par_names
            and m.channel_nbins == ref.channel_nbins
            and m.channel_names == ref.channel_names
            and m.sample_names == ref.sample_names
            and np.array_equal(m._lin_idx, ref._lin_idx)
            and m._ns_keys == ref._ns_keys
            and m._hs_keys == ref._hs_keys
            and np.array_equal(m.arrays.fixed, ref.arrays.fixed)
            and np.array_equal(m.arrays.local, ref.arrays.local)
            and m.normsys_interp == ref.normsys_interp
            and m.histosys_interp == ref.histosys_interp
            and m.poi_index == ref.poi_index
            and m.batch_size == 1
        )
        if not same:
            raise HepWorkspaceError(
                f"model {i} differs in structure from model 0 (parameters, bins, modifiers, "
                "fixed parameters or interpolation codes); only identical structures stack"
            )
    numbers = {
        key: None if value is None else np.concatenate([m.arrays.numbers()[key] for m in models])
        for key, value in ref.arrays.numbers().items()
    }
    return ref._with_numbers(len(models), **numbers)


def with_yields(model: Model, channels: Sequence[Mapping[str, Any]]) -> Model:
    """A copy of ``model`` whose yields come from ``channels`` (same structure), not rebuilt.

    For studies that evaluate many candidates of one structure (binning scans): the
    parameters, modifiers, layouts and compiled-kernel index tables of ``model`` are reused;
    only the nominal yields, histosys templates, normsys factors and staterror widths are
    replaced. ``channels`` is a workspace ``channels`` list whose ``data`` entries may be NumPy
    arrays; it is not validated against the schema (its structure must equal the model's).
    It may hold only some of the model's channels: the others keep the model's yields (e.g.
    control regions whose binning does not change).

    Raises:
        HepWorkspaceError: ``channels`` differs in structure (channels, bins, samples,
            modifiers, staterror bins with zero width) or holds a shapesys (whose constraint
            depends on the yields; build a new :class:`Model` instead).
    """
    if model.batch_size != 1:
        raise HepWorkspaceError("with_yields needs an unstacked model (batch size 1)")
    by_name = {c["name"]: c for c in channels}
    unknown = sorted(set(by_name) - set(model.channel_names))
    if unknown or not by_name:
        raise HepWorkspaceError(
            f"with_yields: channels {unknown or '[]'} are not among the model's "
            f"{model.channel_names}"
        )
    plan = model.__dict__.get("_yields_plan")
    if plan is None:
        plan = (
            _linear_signature(model),
            _staterror_slots(model),
            {s: i for i, s in enumerate(model.sample_names)},
            {k: i for i, k in enumerate(model._ns_keys)},
            {k: i for i, k in enumerate(model._hs_keys)},
        )
        model.__dict__["_yields_plan"] = plan
    s_index, ns_index, hs_index = plan[2], plan[3], plan[4]
    N = model._N
    arr0 = model.arrays
    given = [ci for ci, c in enumerate(model.channel_names) if c in by_name]
    mask = np.zeros(N, bool)
    for ci in given:
        mask[model.channel_slices[model.channel_names[ci]]] = True
    nom = np.where(mask, 0.0, arr0.nom[0])
    hs_dp = np.where(mask, 0.0, arr0.hs_dp[0])
    hs_dm = np.where(mask, 0.0, arr0.hs_dm[0])
    ns_hi = np.exp(arr0.ns_loghi[0])
    ns_lo = np.exp(arr0.ns_loglo[0])
    ns_hi[:, given] = 1.0
    ns_lo[:, given] = 1.0
    st_sum: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    linear: dict[tuple[int, int], list[int]] = {}
    for ci in given:
        cname = model.channel_names[ci]
        sl = model.channel_slices[cname]
        width = sl.stop - sl.start
        for sample in by_name[cname]["samples"]:
            si = s_index.get(sample["name"])
            data = np.asarray(sample["data"], dtype=float)
            if si is None or data.shape != (width,):
                raise HepWorkspaceError(
                    f"with_yields: channel {cname!r}, sample {sample['name']!r} does not match "
                    "the model's samples or bins"
                )
            nom[si, sl] = data
            lin = linear.setdefault((si, ci), [])
            for mod in sample["modifiers"]:
                mtype, mname = mod["type"], mod["name"]
                if mtype in ("normfactor", "lumi", "shapefactor", "staterror"):
                    ps = model._psets.get(mname)
                    if ps is None:
                        raise HepWorkspaceError(f"with_yields: unknown {mtype} {mname!r}")
                    comp = model._staterror_components.get(mname) if mtype == "staterror" else None
                    lin.append(ps.start + (0 if comp is None else int(comp[sl.start])))
                if mtype == "histosys":
                    j = hs_index.get((mname, si))
                    if j is None:
                        raise HepWorkspaceError(f"with_yields: unknown histosys {mname!r}")
                    hs_dp[j, sl] = np.asarray(mod["data"]["hi_data"], float) - data
                    hs_dm[j, sl] = data - np.asarray(mod["data"]["lo_data"], float)
                elif mtype == "normsys":
                    j = ns_index.get((mname, si))
                    if j is None:
                        raise HepWorkspaceError(f"with_yields: unknown normsys {mname!r}")
                    ns_hi[j, ci] = float(mod["data"]["hi"])
                    ns_lo[j, ci] = float(mod["data"]["lo"])
                elif mtype == "staterror":
                    tot, unc2 = st_sum.setdefault(mname, (np.zeros(N), np.zeros(N)))
                    tot[sl] += data
                    unc2[sl] += np.asarray(mod["data"], float) ** 2
                elif mtype == "shapesys":
                    raise HepWorkspaceError(
                        "with_yields does not support shapesys (its constraint depends on the "
                        "yields); build a new Model"
                    )
                elif mtype not in ("normfactor", "lumi", "shapefactor"):
                    raise HepWorkspaceError(f"with_yields: unknown modifier type {mtype!r}")
    expected = {k: v for k, v in plan[0].items() if k[1] in given}
    if {k: sorted(v) for k, v in linear.items() if v} != expected:
        raise HepWorkspaceError(
            "with_yields: the normfactor/lumi/shapefactor/staterror modifiers differ from the "
            "model's; build a new Model"
        )
    if np.any(ns_hi <= 0) or np.any(ns_lo <= 0):
        raise HepWorkspaceError("with_yields: normsys hi and lo must be > 0")
    numbers: dict[str, Any] = {
        "nom": nom[None],
        "hs_dp": hs_dp[None],
        "hs_dm": hs_dm[None],
        "ns_loghi": np.log(ns_hi)[None],
        "ns_loglo": np.log(ns_lo)[None],
        "ns_coef": code4_coefficients(ns_hi, ns_lo)[None] if arr0.normsys_code4 else None,
    }
    if st_sum:
        gsig = arr0.gauss_sigma.copy()
        for mname, (st_mask, pos, fixed) in plan[1].items():
            if mname not in st_sum:
                continue
            tot, unc2 = st_sum[mname]
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(tot > 0, np.sqrt(unc2) / np.where(tot > 0, tot, 1.0), 0.0)
            part = mask[st_mask]  # components of this staterror in the given channels
            rel = rel[st_mask][part]
            if not np.array_equal(rel == 0, fixed[part]):
                raise HepWorkspaceError(
                    f"with_yields: staterror {mname!r} has zero-width bins where the model "
                    "has none (or the reverse); build a new Model"
                )
            gsig[0, pos[part]] = np.where(fixed[part], 1.0, rel)
        numbers["gauss_sigma"] = gsig
    out = model._with_numbers(1, **numbers)
    # the compiled kernels' index tables depend on the structure only: reuse them
    _jit.reuse_tables(model.arrays, out.arrays)
    return out


def _linear_signature(model: Model) -> dict[tuple[int, int], list[int]]:
    """Per (sample, channel): the sorted parameters of its linear factors in the channel's first
    bin (the structure check of :func:`with_yields`)."""
    out = {}
    for ci, cname in enumerate(model.channel_names):
        b = model.channel_slices[cname].start
        for si in range(model._S):
            pars = model._lin_idx[:, si, b]
            pars = pars[pars < model.n_pars]
            if pars.size:
                out[(si, ci)] = sorted(int(p) for p in pars)
    return out


def _staterror_slots(model: Model) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per staterror name: its bin mask, the Gaussian-width slots of its components and which
    components are fixed (zero width)."""
    out = {}
    for mname, comp in model._staterror_components.items():
        ps = model._psets[mname]
        mask = comp >= 0
        fixed = np.asarray(ps.fixed, bool)
        pars = ps.start + np.arange(ps.n)
        pos = np.searchsorted(model.arrays.gauss_par, pars)
        out[mname] = (mask, pos, fixed)
    return out
