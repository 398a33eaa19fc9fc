"""Lean Asimov discovery statistic for studies that evaluate many candidates of one structure.

A binning scan evaluates thousands of candidates whose models differ only in their yields. The
public path (:func:`sigtune.hep._model.with_yields`, :func:`sigtune.hep.fit`) copies a model and
checks every argument per candidate, which costs several times the compiled fit of a small
model. :class:`AsimovQ0` keeps, per structure, the compiled-kernel tables of a template model and
puts each candidate's yields straight into them; one kernel call gives ``-2 ln L`` and the rates
at the suggested initial values (the Asimov check), one more the conditional fit at ``mu = 0``.

It decides a candidate only where the public path takes the same steps and gives the same
number: the data are the Asimov data of the suggested initial values (so those are the exact
unconditional minimum), and the first conditional fit (from the suggested values with ``mu = 0``,
the start :func:`sigtune.hep.fit` uses first) converges cleanly with no free parameter at a bound.
Everything else (other data, restarts, fallbacks) is reported as undecided (``ok`` False) and
left to the public path.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from sigtune.hep import _jit
from sigtune.hep._interp import code4_coefficients
from sigtune.hep._model import Model, _staterror_slots

__all__ = ["AsimovQ0"]

_YIELD_FIELDS = ("nom", "hs_dp", "hs_dm", "ns_loghi", "ns_loglo", "ns_coef", "gsig", "ptau")
_SCRATCH_FIELDS = ("dl", "dl1", "dl2", "lk", "lk1", "lk2", "Es", "Ls", "As", "J")
_RTOL = 1e-12  # the Asimov check of the public path (np.allclose(expected, data, 1e-12, 1e-12))


class _Bundle:
    """The template model's arrays and sizes, read from either layout of
    :class:`sigtune.hep.Model`: the ``arrays`` bundle (``ModelArrays``) or the older ``_arr``
    record with per-model sizes."""

    def __init__(self, model: Any) -> None:
        a = getattr(model, "arrays", None)
        if a is not None and hasattr(a, "nom"):
            src: Any = a
            self.dense_layout = bool(a.dense_layout)
            self.kink = np.asarray(a.kink)
            self.H, self.N, self.M, self.C = a.n_histosys, a.n_bins, a.n_normsys, a.n_channels
            self.g_pos, self.p_pos = a.gauss_aux, a.pois_aux
            self.tables_of: Any = a
        else:
            src = model._arr
            self.dense_layout = bool(model._dense_engine)
            self.kink = np.asarray(model._kink_mask)
            self.H, self.N, self.M, self.C = model._H, model._N, model._M, model._C
            self.g_pos, self.p_pos = model._g_pos, model._p_pos
            self.tables_of = model
        self.nom, self.hs_dp, self.hs_dm = src.nom, src.hs_dp, src.hs_dm
        self.ns_loghi, self.ns_loglo = src.ns_loghi, src.ns_loglo
        self.gauss_sigma, self.pois_tau = src.gauss_sigma, src.pois_tau
        self.fixed, self.bounds = src.fixed, src.bounds


# tolerances of the compiled Newton row (named once in _jit, or per module in older versions)
_EDM_CLEAN = float(getattr(_jit, "EDM_CLEAN", getattr(_jit, "_EDM_CLEAN", 1e-7)))
_MAX_ITER = int(getattr(_jit, "MAX_ITER", 200))


class AsimovQ0:
    """:math:`q_0` on Asimov data for candidates with the structure of ``model``.

    Attributes:
        usable: Whether this model can take the lean path at all (compiled engine, dense
            layout, no interpolation kinks, a POI whose suggested value is 1, structural
            auxdata equal to their expectation); when False every candidate is undecided.
        nom, hs_dp, hs_dm, ns_hi, ns_lo, gsig: The template's yields (``(S, N)``, ``(H, N)``,
            ``(H, N)``, ``(M, C)``, ``(M, C)``, ``(G,)``), to copy and fill per candidate.
        sample_index, normsys_index, histosys_index: Sample name -> row of ``nom``;
            ``(modifier, sample row)`` -> row of ``ns_*`` / ``hs_*``.
        staterror: Modifier name -> ``(bin mask (N,), gsig slots, fixed components)``.
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        arr = _Bundle(model)
        poi = model.poi_index
        init = model.suggested_init()
        self.usable = bool(
            _jit.ENABLED
            and model.batch_size == 1
            and arr.dense_layout
            and not arr.kink.any()
            and poi is not None
            and init[poi] == 1.0
        )
        if self.usable:
            aux = model.expected_data(init)[model.n_main :]
            self.usable = bool(np.allclose(aux, model.auxdata, rtol=_RTOL, atol=_RTOL))
        self.n_main = model.n_main
        self.sample_index = {s: i for i, s in enumerate(model.sample_names)}
        self.normsys_index = {k: i for i, k in enumerate(model._ns_keys)}
        self.histosys_index = {k: i for i, k in enumerate(model._hs_keys)}
        self.staterror = _staterror_slots(model)
        self.nom = np.array(arr.nom[0], np.float64)
        self.hs_dp = np.array(arr.hs_dp[0], np.float64).reshape(arr.H, arr.N)
        self.hs_dm = np.array(arr.hs_dm[0], np.float64).reshape(arr.H, arr.N)
        self.ns_hi = np.exp(arr.ns_loghi[0]).reshape(arr.M, arr.C)
        self.ns_lo = np.exp(arr.ns_loglo[0]).reshape(arr.M, arr.C)
        self.gsig = np.array(arr.gauss_sigma[0], np.float64).reshape(-1)
        self._code4 = model.normsys_interp == "code4"
        self._ns_cache: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        if not self.usable:
            return
        jt = _jit.tables(arr.tables_of)
        t = jt.tables
        if not set(_YIELD_FIELDS + _SCRATCH_FIELDS).issubset(getattr(t, "_fields", ())):
            self.usable = False  # a table layout this helper does not know
            return
        self._t = t
        self._scratch = [
            (f, getattr(t, f).shape, math.prod(getattr(t, f).shape)) for f in _SCRATCH_FIELDS
        ]
        self._scratch_size = sum(size for _, _, size in self._scratch)
        self._poi = int(poi)  # type: ignore[arg-type]
        auxd = model.auxdata
        self._ga = np.ascontiguousarray(auxd[arr.g_pos][None], np.float64)
        self._pa = np.ascontiguousarray(auxd[arr.p_pos][None], np.float64)
        self._ptau = np.ascontiguousarray(arr.pois_tau.reshape(1, -1), np.float64)
        free = ~arr.fixed.copy()
        free[poi] = False
        self._free = np.ascontiguousarray(free, np.bool_)
        self._free.flags.writeable = False  # see _q0_rows
        self._lo = np.ascontiguousarray(arr.bounds[0][:, 0][None], np.float64)
        self._hi = np.ascontiguousarray(arr.bounds[0][:, 1][None], np.float64)
        start = init.copy()
        start[poi] = 0.0
        # the start of hep.fit: free parameters clipped into their bounds
        start = np.where(free, np.clip(start, self._lo[0], self._hi[0]), start)
        self._init = np.ascontiguousarray(init[None], np.float64)
        self._start = np.ascontiguousarray(start[None], np.float64)
        self._rep: dict[int, tuple[np.ndarray, ...]] = {}
        self._entry: Any = None
        self._bases: dict[tuple[int, int], Any] = {}
        self._shapes = (
            self.nom.shape,
            self.hs_dp.shape,
            self.hs_dm.shape,
            self.gsig.shape,
            (self.n_main,),
        )

    # ------------------------------------------------------------------ helpers
    def _base(self, B: int, ptau: np.ndarray) -> Any:
        """The template's tables with ``B`` rows of ``ptau`` and scratch arrays of this thread
        (a thread runs one kernel call at a time; the kernels need no zeroed scratch)."""
        key = (B, threading.get_ident())
        base = self._bases.get(key)
        if base is None:
            buf = np.zeros(self._scratch_size)
            scratch = {}
            pos = 0
            for f, sh, size in self._scratch:
                scratch[f] = buf[pos : pos + size].reshape(sh)
                pos += size
            base = self._t._replace(ptau=ptau, **scratch)
            if len(self._bases) > 64:
                self._bases.clear()
            self._bases[key] = base
        return base

    def _rows(self, B: int) -> tuple[np.ndarray, ...]:
        """Per-row copies (C-contiguous: the compiled dispatcher's fast path) of ``ptau, ga,
        pa``, the suggested values, the start and the bounds; ``ga, pa`` and the bounds are
        read-only (see :func:`_q0_rows`), the start is a new array (the minimiser works in
        place)."""
        rep = self._rep.get(B)
        if rep is None:
            rep = (
                *(
                    np.ascontiguousarray(np.repeat(a, B, axis=0))
                    for a in (self._ptau, self._ga, self._pa, self._init, self._lo, self._hi)
                ),
                np.arange(B, dtype=np.int64),
            )
            for a in rep[1:3] + rep[4:6]:  # ga, pa, lo, hi: read only, see _q0_rows
                a.flags.writeable = False
            if len(self._rep) > 64:
                self._rep.clear()
            self._rep[B] = rep
        ptau, ga, pa, x0, lo, hi, rows = rep
        xs = np.repeat(self._start, B, axis=0) if B > 1 else self._start.copy()
        return ptau, ga, pa, x0, xs, lo, hi, rows

    def staterror_sigma(
        self,
        gsig: np.ndarray,
        name: str,
        total: np.ndarray,
        unc2: np.ndarray,
        bins: np.ndarray | None = None,
    ) -> bool:
        """Put the relative widths ``sqrt(unc2) / total`` of staterror ``name`` into ``gsig``
        (as the model builder does: components with zero width are fixed at width 1).

        ``total`` and ``unc2`` hold the sums over the samples carrying the modifier, over all
        main bins ``(N,)``; ``bins`` (``(N,)`` mask, default all) the bins whose widths are
        replaced (the others keep theirs). Returns False when the zero-width components differ
        from the template's (a different structure).
        """
        mask, pos, fixed = self.staterror[name]
        part = mask[mask] if bins is None else bins[mask]
        tot = total[mask][part]
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(tot > 0, np.sqrt(unc2[mask][part]) / np.where(tot > 0, tot, 1.0), 0.0)
        fx = fixed[part]
        if not np.array_equal(rel == 0, fx):
            return False
        gsig[pos[part]] = np.where(fx, 1.0, rel)
        return True

    def _normsys(self, ns_hi: np.ndarray, ns_lo: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """``(log hi, log lo, code4 coefficients)`` with a leading axis of 1 (cached: most
        studies repeat the same factors), or None where a factor is not > 0."""
        if ns_hi.shape != self.ns_hi.shape or ns_lo.shape != self.ns_hi.shape:
            raise ValueError(f"normsys factors must have shape {self.ns_hi.shape}")
        key = ns_hi.tobytes() + ns_lo.tobytes()
        got = self._ns_cache.get(key, _NONE)
        if got is _NONE:
            got = None
            if not ns_hi.size or (ns_hi.min() > 0 and ns_lo.min() > 0):
                hi = np.ascontiguousarray(ns_hi, np.float64)
                lo = np.ascontiguousarray(ns_lo, np.float64)
                coef = code4_coefficients(hi, lo) if self._code4 else np.zeros((*hi.shape, 6))
                got = (
                    np.log(hi)[None],
                    np.log(lo)[None],
                    np.ascontiguousarray(coef, np.float64)[None],
                )
            if len(self._ns_cache) > 256:
                self._ns_cache.clear()
            self._ns_cache[key] = got
        return got  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ evaluation
    def q0(
        self,
        nom: np.ndarray,
        hs_dp: np.ndarray,
        hs_dm: np.ndarray,
        ns_hi: np.ndarray,
        ns_lo: np.ndarray,
        gsig: np.ndarray,
        main: np.ndarray,
    ) -> float | None:
        """:math:`q_0` of one candidate (arrays as the template's attributes; ``main``: the
        observed main-bin counts ``(N,)``), or None where the public path must decide."""
        q, ok = self.q0_many([(nom, hs_dp, hs_dm, ns_hi, ns_lo, gsig, main)])
        return float(q[0]) if ok[0] else None

    def q0_many(
        self, candidates: Sequence[tuple[np.ndarray, ...]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """:math:`q_0` of several candidates in one kernel call.

        Args:
            candidates: ``(nom, hs_dp, hs_dm, ns_hi, ns_lo, gsig, main)`` per candidate.

        Returns:
            ``(q0 (B,), ok (B,))``; ``ok`` False: undecided (use the public path).
        """
        B = len(candidates)
        q = np.zeros(B)
        ok = np.zeros(B, bool)
        if not self.usable or B == 0:
            return q, ok
        valid = np.ones(B, bool)
        shapes = self._shapes
        if B == 1:  # views, no copies
            c_nom, c_dp, c_dm, c_hi, c_lo, c_gsig, c_main = candidates[0]
            nom = _rows1(c_nom, shapes[0])
            hs_dp = _rows1(c_dp, shapes[1])
            hs_dm = _rows1(c_dm, shapes[2])
            gsig = _rows1(c_gsig, shapes[3])
            n = _rows1(c_main, shapes[4])
            ns = self._normsys(c_hi, c_lo)
            if ns is None:
                return q, ok
            ns_loghi, ns_loglo, ns_coef = ns
        else:
            nom = _stack([c[0] for c in candidates], shapes[0])
            hs_dp = _stack([c[1] for c in candidates], shapes[1])
            hs_dm = _stack([c[2] for c in candidates], shapes[2])
            gsig = _stack([c[5] for c in candidates], shapes[3])
            n = _stack([c[6] for c in candidates], shapes[4])
            ns_loghi = np.empty((B, *self.ns_hi.shape))
            ns_loglo = np.empty((B, *self.ns_hi.shape))
            ns_coef = np.empty((B, *self.ns_hi.shape, 6))
            for b, c in enumerate(candidates):
                ns = self._normsys(c[3], c[4])
                if ns is None:
                    valid[b] = False
                    ns_loghi[b] = ns_loglo[b] = ns_coef[b] = 0.0
                else:
                    ns_loghi[b], ns_loglo[b], ns_coef[b] = ns[0][0], ns[1][0], ns[2][0]
        n.flags.writeable = False  # see _q0_rows
        ptau, ga, pa, x0, xs, lo, hi, rows = self._rows(B)
        t = self._base(B, ptau)._replace(
            nom=nom,
            hs_dp=hs_dp,
            hs_dm=hs_dm,
            ns_loghi=ns_loghi,
            ns_loglo=ns_loglo,
            ns_coef=ns_coef,
            gsig=gsig,
        )
        args = (x0, xs, rows, t, n, ga, pa, self._free, lo, hi, _MAX_ITER, _RTOL,
                _EDM_CLEAN, valid, q, ok)  # fmt: skip
        entry = self._entry
        if entry is None:
            _q0_rows(*args)
            self._entry = _entry_point(_q0_rows, args)
        else:
            entry(*args)
        return q, ok


_NONE: Any = object()


def _rows1(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` as a writeable C-contiguous float64 array of ``shape`` with a leading axis of 1
    (the compiled entry point takes exactly these types; the counts are then made read-only)."""
    out = np.ascontiguousarray(a, np.float64)
    if out.shape != shape:
        raise ValueError(f"expected an array of shape {shape}, got {out.shape}")
    if not out.flags.writeable:
        out = out.copy()
    return out[None]


def _stack(arrays: Sequence[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    out = np.ascontiguousarray(np.stack(arrays), np.float64)
    if out.shape[1:] != shape:
        raise ValueError(f"expected arrays of shape {shape}, got {out.shape[1:]}")
    return out


def _entry_point(dispatcher: Any, args: tuple[Any, ...]) -> Any:
    """The compiled entry point of ``dispatcher`` for the types of ``args``.

    Calling it skips the dispatcher's type resolution, which for the kernels' table of ~30
    arrays costs more than the fit of a small model. The types of an evaluator's arguments
    never change (same dtypes, dimensions and layouts), so the lookup is done once. Falls
    back to the dispatcher itself where numba's layout differs from the one expected.
    """
    try:
        key = tuple(dispatcher.typeof_pyval(a) for a in args)
        return dispatcher.overloads[key].entry_point
    except Exception:  # any numba layout change: keep the dispatcher
        return dispatcher


def _q0_rows(
    x0: np.ndarray,
    xs: np.ndarray,
    rows: np.ndarray,
    t: Any,
    n: np.ndarray,
    ga: np.ndarray,
    pa: np.ndarray,
    free: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    max_iter: int,
    rtol: float,
    edm_clean: float,
    valid: np.ndarray,
    q: np.ndarray,
    ok: np.ndarray,
) -> None:
    """Per row: the Asimov check at ``x0`` (rates equal the counts), then the conditional fit
    from ``xs`` (in place); ``q = f(fit) - f(x0)`` where the fit ends cleanly inside the bounds.

    The data-dependent constant of ``-2 ln L`` cancels in the difference and is left out.

    ``n, ga, pa, free, lo, hi`` come read-only, as the fits pass them to ``_minimize_rows``:
    numba compiles a kernel once per argument type and a writeable array is another type than a
    read-only one, so with the same types this path and the fits share the compiled versions of
    ``_minimize_row`` and ``_derivs``. The kernel runs as fast with either (the compiled entry
    point, alternating in one process: 18.0 us per call both ways). With the literal orders of
    ``_jit._derivs_rows`` and the int64 count in ``_jit._minimize_row``, tests/_warm_numba.py
    (both paths) compiles 20 instead of 26 versions: 50-53 instead of 83 CPU-s here.
    """
    B, P = xs.shape
    N = n.shape[1]
    g = np.empty(P)
    H = np.empty((P, P))
    nu = np.empty(N)
    out = np.zeros(4)
    g0 = np.empty(0)
    H0 = np.empty((0, 0))
    for b in range(B):
        ok[b] = False
        q[b] = 0.0
        if not valid[b]:
            continue
        good = True
        for i in range(N):
            if not (n[b, i] >= 0.0 and math.isfinite(n[b, i])):
                good = False
        if not good:
            continue
        f0 = _jit._derivs(x0[b], rows[b], t, n[b], ga[b], pa[b], 0.0, 0, g0, H0, nu)
        if not math.isfinite(f0):
            continue
        for i in range(N):
            if not abs(nu[i] - n[b, i]) <= rtol + rtol * abs(n[b, i]):
                good = False
        if not good:
            continue
        _jit._minimize_row(
            xs[b], rows[b], t, n[b], ga[b], pa[b], 0.0, free, lo[b], hi[b], max_iter, g, H,
            nu, out,
        )  # fmt: skip
        if out[3] != 0.0 or not out[1] < edm_clean or not math.isfinite(out[0]):
            continue
        for i in range(P):
            if free[i] and (xs[b, i] <= lo[b, i] or xs[b, i] >= hi[b, i]):
                good = False
        if good:
            q[b] = max(out[0] - f0, 0.0)
            ok[b] = True


if _jit.ENABLED:  # pragma: no branch
    _q0_rows = _jit._compiler(_q0_rows)
