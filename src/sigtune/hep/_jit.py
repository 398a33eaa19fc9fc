"""Compiled likelihood kernels (numba), used when numba is installed.

The NumPy engine in :mod:`sigtune.hep._model` spends most of a small fit in the overhead of
NumPy calls (~1 us each, ~100 per derivative evaluation). Here the same quantities -- ``-2 ln L``,
its gradient and its full Hessian -- are computed in one compiled pass over the (sample, bin)
entries, and the projected Newton iteration of the dense layout runs compiled too
(:func:`_minimize_row`), one row at a time (a batch of toys or of stacked models is a loop over rows).

Large models (the arrowhead layout of :mod:`sigtune.hep._fit`) get a compiled gradient and
Hessian blocks (:func:`_derivs_arrow`); their Newton iteration stays in NumPy, whose BLAS does the
dense products.

Per entry ``nu_sb = E * L * A`` with ``E = exp(sum_i lk_i(alpha_i))`` (normsys),
``L = prod_k theta_k`` (normfactor, lumi, per-bin gammas) and ``A = nom + sum_h delta_h(alpha_h)``
(histosys); first and second derivatives follow from the product rule over the three factors.

Everything here is optional: without numba (or with ``SIGTUNE_HEP_JIT=0``) :data:`ENABLED` is
False and the fit uses the NumPy engine. The Python bodies below are the compiled ones, so they
can also be run uncompiled (slowly) to test the logic.
"""

from __future__ import annotations

import collections
import copy
import math
import os
import threading
import time
import warnings
from typing import Any, NamedTuple

import numpy as np

from sigtune.hep._arrays import Consts, Derivs, ModelArrays

__all__ = ["ENABLED", "JitTables", "RowFits", "derivatives", "minimize"]

try:  # pragma: no cover - depends on the environment
    import numba

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    numba = None  # type: ignore[assignment]
    _HAVE_NUMBA = False

try:  # pragma: no cover - depends on the platform
    import fcntl
except ImportError:  # pragma: no cover - Windows: no compile lock
    fcntl = None  # type: ignore[assignment]

ENABLED = _HAVE_NUMBA and os.environ.get("SIGTUNE_HEP_JIT", "1") not in ("0", "false", "no")


def _lapack_symbols() -> tuple[Any, ...] | None:
    """SciPy's LAPACK routines for the partial eigendecomposition of :func:`_low_eigenpairs`
    (tridiagonal reduction, its eigenvalues, selected eigenvectors, back-transformation) and
    for the symmetric indefinite factorisation of :func:`_abs_newton_ldl` (Bunch-Kaufman and
    its solve), as numba external functions. They are registered with LLVM under fixed names,
    so that the on-disk cache of the functions calling them stays valid across processes. None
    without numba or SciPy's Cython LAPACK."""
    if not _HAVE_NUMBA:  # pragma: no cover
        return None
    try:
        import llvmlite.binding as llb  # type: ignore[import-untyped]
        from numba.core import types
        from numba.extending import get_cython_function_address
    except ImportError:  # pragma: no cover
        return None
    vp = types.voidptr
    out = []
    for name, n_args in (
        ("dsytrd", 10),
        ("dstebz", 18),
        ("dstemr", 21),
        ("dormtr", 13),
        ("dsytrf", 8),
        ("dsytrs", 9),
    ):
        try:
            addr = get_cython_function_address("scipy.linalg.cython_lapack", name)
        except Exception:  # pragma: no cover - SciPy without cython_lapack
            return None
        llb.add_symbol("sigtune_hep_" + name, addr)
        out.append(types.ExternalFunction("sigtune_hep_" + name, types.void(*([vp] * n_args))))
    return tuple(out)


_LAPACK = _lapack_symbols()
_HAVE_LOW_EIG = _LAPACK is not None
if _LAPACK is not None:  # pragma: no branch
    _dsytrd, _dstebz, _dstemr, _dormtr, _dsytrf, _dsytrs = _LAPACK

# The model's arrays as the kernels take them (a namedtuple: numba passes it as one argument
# and resolves the attribute accesses at compile time); built by JitTables.
_Tables = collections.namedtuple(
    "_Tables",
    "nom hs_par hs_dp hs_dm hs_code4p hs_ptr hs_list ns_par ns_loghi ns_loglo ns_coef ns_code4 "
    "ns_ptr ns_list chan_of_bin lin_idx bin_ptr bin_pars g_idx gsig p_idx ptau "
    "dl dl1 dl2 lk lk1 lk2 Es Ls As J is_local",
)

# ---------------------------------------------------------------- projected Newton settings
# The two projected-Newton implementations -- the compiled row below (dense layout) and the
# batched NumPy iteration sigtune.hep._fit._minimize_general (arrowhead layout, batches, and
# every model without numba) -- take their tolerances from here, and only from here. (They
# live in this module because numba freezes globals into its on-disk cache, which is keyed
# on this file: a constant defined elsewhere could change without a recompile.)
EDM_TOL = 1e-9  # stop: estimated distance to the minimum, in nll units, before the last step
EDM_CLEAN = 1e-7  # a row that ends above this (stalled line search) is refitted with L-BFGS-B
MAX_ITER = 200  # Newton iterations per fit
EIG_FLOOR = 1e-10  # relative floor of |eigenvalue| in a damped Newton step (|H|-Newton)
NEG_CURV_REL = 1e-8  # lowest eigenvalue below -this x largest: negative curvature (saddle)
GEMM_HESS = 25.0  # Hessian by one GEMM when this x sum_s n_normsys(s)^2 > samples x params^2
CHOL_LAPACK = 64  # dense Schur complements at least this wide are factorised by LAPACK
# ... and, where not positive definite, damped from their eigenpairs below the floor only
# (_abs_newton_low); False: from a full eigh
LOW_EIG = True
# ... and, between those exact |H| steps, by the modified LDL^T factorisation (_abs_newton_ldl:
# one Bunch-Kaufman factorisation, 5-8x cheaper than the eigenpairs at ~200 rows); the exact
# eigenpairs are still taken where the step says the fit has converged (saddle test, escape)
LDL_STEP = True
LOCAL_FLOOR = 1e-8  # per-bin Hessian entries below this x (1 + |h|) are floored
ARMIJO = 1e-4  # sufficient decrease of the line search
LS_SLACK = 1e-10  # relative slack of the sufficient-decrease test (rounding of f)
LS_MAX = 50  # backtracking steps before the line search counts as stalled
LS_T_MIN, LS_T_MAX = 0.1, 0.5  # clamp of the first (quadratic) backtracking step
LS_T_DEFAULT = 0.25  # first backtracking step where the quadratic model has no minimum
MAX_SADDLE = 5  # escapes along negative curvature per fit
# a rejected full step that crosses bounds the gradient points out of is next tried up to the
# first of them, unbent, before backtracking (both iterations)
BOUND_STEP = True
# convergence criterion of a returned point (sigtune.hep._fit.check_minimum)
EDM_CONV = 1e-6  # nll units, at the returned point
PGRAD_CONV = 2e-3  # change of -2 ln L over one standard deviation of any moving parameter
NEG_CURV_CONV = -1e-8  # lowest / largest eigenvalue below this: negative curvature


def local_floor(h: Any) -> Any:
    """A per-bin Hessian entry made positive: ``h`` if above ``LOCAL_FLOOR (1 + |h|)``, else
    ``2 |h| + floor`` (scalars or arrays; the compiled and NumPy iterations share it)."""
    floor = LOCAL_FLOOR * (1.0 + np.abs(h))
    return np.where(h > floor, h, 2.0 * np.abs(h) + floor)


def _interp(
    x: np.ndarray,
    r: int,
    hs_par: np.ndarray,
    hs_dp: np.ndarray,
    hs_dm: np.ndarray,
    hs_code4p: bool,
    ns_par: np.ndarray,
    ns_loghi: np.ndarray,
    ns_loglo: np.ndarray,
    ns_coef: np.ndarray,
    ns_code4: bool,
    dl: np.ndarray,
    dl1: np.ndarray,
    dl2: np.ndarray,
    lk: np.ndarray,
    lk1: np.ndarray,
    lk2: np.ndarray,
) -> None:
    """Histosys shifts (per instance and bin) and normsys log-factors (per instance and channel)."""
    n_bins = hs_dp.shape[2]
    for h in range(hs_par.shape[0]):
        a = x[hs_par[h]]
        inside = hs_code4p and abs(a) <= 1.0
        if inside:
            a2 = a * a
            c0 = a2 * (15.0 + a2 * (-10.0 + 3.0 * a2))
            c1 = a * (30.0 + a2 * (-40.0 + 18.0 * a2))
            c2 = 30.0 + a2 * (-120.0 + 90.0 * a2)
            for b in range(n_bins):
                up, dn = hs_dp[r, h, b], hs_dm[r, h, b]
                sym = 0.5 * (up + dn)
                asym = 0.0625 * (up - dn)
                dl[h, b] = a * sym + c0 * asym
                dl1[h, b] = sym + c1 * asym
                dl2[h, b] = c2 * asym
        else:
            for b in range(n_bins):
                slope = hs_dp[r, h, b] if a >= 0.0 else hs_dm[r, h, b]
                dl[h, b] = a * slope
                dl1[h, b] = slope
                dl2[h, b] = 0.0
    n_chan = ns_loghi.shape[2]
    for i in range(ns_par.shape[0]):
        a = x[ns_par[i]]
        inside = ns_code4 and abs(a) < 1.0
        for c in range(n_chan):
            if inside:
                k0 = ns_coef[r, i, c, 0]
                k1 = ns_coef[r, i, c, 1]
                k2 = ns_coef[r, i, c, 2]
                k3 = ns_coef[r, i, c, 3]
                k4 = ns_coef[r, i, c, 4]
                k5 = ns_coef[r, i, c, 5]
                p = 1.0 + a * (k0 + a * (k1 + a * (k2 + a * (k3 + a * (k4 + a * k5)))))
                dp = k0 + a * (
                    2.0 * k1 + a * (3.0 * k2 + a * (4.0 * k3 + a * (5.0 * k4 + a * 6.0 * k5)))
                )
                d2p = 2.0 * k1 + a * (6.0 * k2 + a * (12.0 * k3 + a * (20.0 * k4 + a * 30.0 * k5)))
                gq = dp / p
                lk[i, c] = math.log(p)
                lk1[i, c] = gq
                lk2[i, c] = d2p / p - gq * gq
            else:
                slope = ns_loghi[r, i, c] if a >= 0.0 else -ns_loglo[r, i, c]
                lk[i, c] = a * slope
                lk1[i, c] = slope
                lk2[i, c] = 0.0


def _derivs(
    x: np.ndarray,
    r: int,
    t: _Tables,
    n: np.ndarray,
    ga: np.ndarray,
    pa: np.ndarray,
    const: float,
    order: int,
    g: np.ndarray,
    H: np.ndarray,
    nu: np.ndarray,
) -> float:
    """``-2 ln L`` at ``x`` for model row ``r``; with ``order >= 1`` the gradient into ``g``,
    with ``order == 2`` the full Hessian into ``H``; the expected main-bin rates into ``nu``.

    ``t`` is :attr:`JitTables.tables`. Returns ``inf`` where an expected rate is negative, or
    zero with observed events.
    """
    (
        nom,
        hs_par,
        hs_dp,
        hs_dm,
        hs_code4p,
        hs_ptr,
        hs_list,
        ns_par,
        ns_loghi,
        ns_loglo,
        ns_coef,
        ns_code4,
        ns_ptr,
        ns_list,
        chan_of_bin,
        lin_idx,
        bin_ptr,
        bin_pars,
        g_idx,
        gsig,
        p_idx,
        ptau,
        dl,
        dl1,
        dl2,
        lk,
        lk1,
        lk2,
        Es,
        Ls,
        As,
        J,
        _is_local,
    ) = t
    P = x.shape[0]
    S = nom.shape[1]
    N = nom.shape[2]
    K = lin_idx.shape[0]
    _interp(
        x, r, hs_par, hs_dp, hs_dm, hs_code4p, ns_par, ns_loghi, ns_loglo, ns_coef, ns_code4,
        dl, dl1, dl2, lk, lk1, lk2,
    )  # fmt: skip
    # pass 1: rates
    for b in range(N):
        nu[b] = 0.0
    for s in range(S):
        for b in range(N):
            c = chan_of_bin[b]
            A = nom[r, s, b]
            for j in range(hs_ptr[s], hs_ptr[s + 1]):
                A += dl[hs_list[j], b]
            le = 0.0
            for j in range(ns_ptr[s], ns_ptr[s + 1]):
                le += lk[ns_list[j], c]
            E = math.exp(le)
            L = 1.0
            for k in range(K):
                p = lin_idx[k, s, b]
                if p < P:
                    L *= x[p]
            Es[s, b] = E
            Ls[s, b] = L
            As[s, b] = A
            nu[b] += E * L * A
    f = 0.0
    for b in range(N):
        v = nu[b]
        if v > 0.0:
            f += v - (n[b] * math.log(v) if n[b] != 0.0 else 0.0)
        elif n[b] > 0.0:
            return math.inf
        else:  # pyhf's semantics: no observed events, the term is nu (even for nu < 0)
            f += v
    f *= 2.0
    for j in range(g_idx.shape[0]):
        z = (ga[j] - x[g_idx[j]]) / gsig[r, j]
        f += z * z
    for j in range(p_idx.shape[0]):
        # tau gamma - a ln gamma - tau, written without cancellation for large tau
        # (see Model._pois_aux_term; the - tau is in the constant)
        gam = x[p_idx[j]]
        u = gam - 1.0
        f += 2.0 * (ptau[r, j] - pa[j]) * u
        if pa[j] != 0.0:
            if gam <= 0.0:
                return math.inf
            f += 2.0 * pa[j] * (u - math.log1p(u))
    f += const
    if order == 0:
        return f
    # pass 2: per-bin Jacobian J[b, p] and the w-weighted second derivatives of the rates
    for b in range(N):
        for j in range(bin_ptr[b], bin_ptr[b + 1]):
            J[b, bin_pars[j]] = 0.0
    # With many normsys per sample (ttZ: ~100 on 197 parameters, 3 bins) the pairwise loops of
    # the second derivatives cost O(bins x sum_s n_s^2) scattered updates; their rank-one terms
    # are then gathered as rows u_sb (sum over sample s's normsys of lk1 e_par) with weights
    # w2 nu_sb, and the data term's rows J_b with weights dw2, into one GEMM U^T diag(w) U.
    gemm = False
    if order == 2:
        for i in range(P):
            for j in range(P):
                H[i, j] = 0.0
        q = 0
        for s in range(S):
            q += (ns_ptr[s + 1] - ns_ptr[s]) ** 2
        gemm = GEMM_HESS * q > S * P * P
    U = np.zeros((S * N + N if gemm else 0, P))
    wr = np.zeros(U.shape[0])
    for s in range(S):
        n_ns = ns_ptr[s + 1] - ns_ptr[s]
        n_hs = hs_ptr[s + 1] - hs_ptr[s]
        for b in range(N):
            c = chan_of_bin[b]
            E = Es[s, b]
            L = Ls[s, b]
            A = As[s, b]
            nusb = E * L * A
            if nu[b] > 0.0:
                w2 = 2.0 * (1.0 - n[b] / nu[b])
            else:
                w2 = 2.0
            # normsys: d nu / d alpha_i = nu_sb * lk1_i
            for j in range(ns_ptr[s], ns_ptr[s + 1]):
                i = ns_list[j]
                J[b, ns_par[i]] += nusb * lk1[i, c]
            for j in range(hs_ptr[s], hs_ptr[s + 1]):
                h = hs_list[j]
                J[b, hs_par[h]] += E * L * dl1[h, b]
            for k in range(K):
                p = lin_idx[k, s, b]
                if p < P:
                    ex = 1.0
                    for k2 in range(K):
                        if k2 != k:
                            q = lin_idx[k2, s, b]
                            if q < P:
                                ex *= x[q]
                    J[b, p] += E * A * ex
            if order < 2:
                continue
            # E-E
            if n_ns and gemm:
                row = s * N + b
                wr[row] = w2 * nusb
                for j1 in range(ns_ptr[s], ns_ptr[s + 1]):
                    i1 = ns_list[j1]
                    H[ns_par[i1], ns_par[i1]] += w2 * nusb * lk2[i1, c]
                    U[row, ns_par[i1]] += lk1[i1, c]
            elif n_ns:
                for j1 in range(ns_ptr[s], ns_ptr[s + 1]):
                    i1 = ns_list[j1]
                    p1 = ns_par[i1]
                    v1 = w2 * nusb * lk1[i1, c]
                    H[p1, p1] += w2 * nusb * lk2[i1, c]
                    for j2 in range(ns_ptr[s], ns_ptr[s + 1]):
                        i2 = ns_list[j2]
                        H[p1, ns_par[i2]] += v1 * lk1[i2, c]
            # A-A (diagonal) and E-A
            for j1 in range(hs_ptr[s], hs_ptr[s + 1]):
                h = hs_list[j1]
                ph = hs_par[h]
                H[ph, ph] += w2 * E * L * dl2[h, b]
                if n_ns:
                    vh = w2 * E * L * dl1[h, b]
                    for j2 in range(ns_ptr[s], ns_ptr[s + 1]):
                        i2 = ns_list[j2]
                        v = vh * lk1[i2, c]
                        H[ph, ns_par[i2]] += v
                        H[ns_par[i2], ph] += v
            # linear slots: L-L, E-L, A-L
            for k in range(K):
                p = lin_idx[k, s, b]
                if p >= P:
                    continue
                ex = 1.0
                for k2 in range(K):
                    if k2 != k:
                        q = lin_idx[k2, s, b]
                        if q < P:
                            ex *= x[q]
                for k2 in range(K):
                    if k2 == k:
                        continue
                    q = lin_idx[k2, s, b]
                    if q >= P:
                        continue
                    ex2 = 1.0
                    for k3 in range(K):
                        if k3 != k and k3 != k2:
                            q3 = lin_idx[k3, s, b]
                            if q3 < P:
                                ex2 *= x[q3]
                    H[p, q] += w2 * E * A * ex2
                if n_ns:
                    vl = w2 * E * A * ex
                    for j2 in range(ns_ptr[s], ns_ptr[s + 1]):
                        i2 = ns_list[j2]
                        v = vl * lk1[i2, c]
                        H[p, ns_par[i2]] += v
                        H[ns_par[i2], p] += v
                if n_hs:
                    vl = w2 * E * ex
                    for j2 in range(hs_ptr[s], hs_ptr[s + 1]):
                        h = hs_list[j2]
                        v = vl * dl1[h, b]
                        H[p, hs_par[h]] += v
                        H[hs_par[h], p] += v
    for i in range(P):
        g[i] = 0.0
    for b in range(N):
        v = nu[b]
        w2 = 2.0 * (1.0 - n[b] / v) if v > 0.0 else 2.0
        dw2 = 2.0 * n[b] / (v * v) if v > 0.0 else 0.0
        for j in range(bin_ptr[b], bin_ptr[b + 1]):
            p = bin_pars[j]
            g[p] += w2 * J[b, p]
        if gemm:
            wr[S * N + b] = dw2
            for j in range(bin_ptr[b], bin_ptr[b + 1]):
                p = bin_pars[j]
                U[S * N + b, p] = J[b, p]
        elif order == 2 and dw2 != 0.0:
            for j in range(bin_ptr[b], bin_ptr[b + 1]):
                p = bin_pars[j]
                vp = dw2 * J[b, p]
                for j2 in range(bin_ptr[b], bin_ptr[b + 1]):
                    q = bin_pars[j2]
                    H[p, q] += vp * J[b, q]
    if gemm:
        W = np.empty_like(U)
        for i in range(U.shape[0]):
            for j in range(P):
                W[i, j] = wr[i] * U[i, j]
        G = np.dot(np.ascontiguousarray(U.T), W)
        for i in range(P):
            for j in range(P):
                H[i, j] += G[i, j]
    for j in range(g_idx.shape[0]):
        p = g_idx[j]
        inv = 1.0 / (gsig[r, j] * gsig[r, j])
        g[p] += 2.0 * (x[p] - ga[j]) * inv
        if order == 2:
            H[p, p] += 2.0 * inv
    for j in range(p_idx.shape[0]):
        p = p_idx[j]
        gam = x[p]
        g[p] += 2.0 * (ptau[r, j] - pa[j] / gam)
        if order == 2:
            H[p, p] += 2.0 * pa[j] / (gam * gam)
    return f


def _substitute(Lc: np.ndarray, gs: np.ndarray, d: np.ndarray, m: int) -> None:
    """Forward and backward substitution with the lower Cholesky factor ``Lc``: ``d`` solves
    ``Lc Lc^T d = gs`` (the first ``m`` rows)."""
    for i in range(m):  # forward
        s = gs[i]
        for k in range(i):
            s -= Lc[i, k] * d[k]
        d[i] = s / Lc[i, i]
    for i in range(m - 1, -1, -1):  # backward
        s = d[i]
        for k in range(i + 1, m):
            s -= Lc[k, i] * d[k]
        d[i] = s / Lc[i, i]


def _cholesky_solve(Hs: np.ndarray, gs: np.ndarray, Lc: np.ndarray, d: np.ndarray) -> bool:
    """Solve ``Hs d = gs`` by Cholesky; False (and ``d`` undefined) if not positive definite."""
    m = Hs.shape[0]
    for j in range(m):
        s = Hs[j, j]
        for k in range(j):
            s -= Lc[j, k] * Lc[j, k]
        if not s > 0.0:
            return False
        ljj = math.sqrt(s)
        Lc[j, j] = ljj
        for i in range(j + 1, m):
            s2 = Hs[i, j]
            for k in range(j):
                s2 -= Lc[i, k] * Lc[j, k]
            Lc[i, j] = s2 / ljj
    _substitute(Lc, gs, d, m)
    return True


def _lapack_cholesky_solve(Hs: np.ndarray, gs: np.ndarray, d: np.ndarray) -> bool:
    """:func:`_cholesky_solve` with LAPACK's factorisation (3x faster at ~200 rows); False (and
    ``d`` undefined) if ``Hs`` is not positive definite or the factor not finite."""
    m = Hs.shape[0]
    try:
        Lc = np.linalg.cholesky(Hs)
    except Exception:  # numpy.linalg.LinAlgError: not positive definite
        return False
    for i in range(m):
        if not (Lc[i, i] > 0.0 and math.isfinite(Lc[i, i])):
            return False
    _substitute(Lc, gs, d, m)
    for i in range(m):
        if not math.isfinite(d[i]):
            return False
    return True


def _low_eigenpairs(S: np.ndarray, ev: np.ndarray, Z: np.ndarray) -> int:
    """The eigenpairs of the symmetric ``S`` whose eigenvalues lie below ``EIG_FLOOR`` x the
    largest magnitude (ascending: values into ``ev[:k]``, vectors into the rows of ``Z``), and
    the largest magnitude into ``ev[k]``, by LAPACK: tridiagonal reduction (dsytrd), its lowest
    and highest eigenvalues by bisection (dstebz), the eigenpairs below the floor of the
    tridiagonal (dstemr) and their back-transformation (dormtr). The reduction is the cost; the
    eigenvectors of the rest are never formed (``eigh`` forms all of them, 2-3x the time at
    ~200 rows).

    Returns the number ``k``, or -1 where LAPACK fails (the caller then takes ``eigh``). ``S``
    is overwritten.
    """
    n = S.shape[0]
    ch = np.empty(5, np.uint8)
    ch[0] = 76  # 'L'
    ch[1] = 86  # 'V'
    ch[2] = 78  # 'N'
    ch[3] = 73  # 'I'
    ch[4] = 69  # 'E'
    ib = np.empty(16, np.int32)
    db = np.empty(4)
    d = np.empty(n)
    e = np.empty(n)
    tau = np.empty(max(n - 1, 1))
    lwork = 64 * n + 64
    work = np.empty(lwork)
    iwork = np.empty(10 * n + 10, np.int32)
    wk = np.empty(n)
    iblock = np.empty(n, np.int32)
    isplit = np.empty(n, np.int32)
    ib[0] = n
    ib[1] = lwork
    ib[2] = 0
    # S is symmetric, so its C layout is its Fortran layout: 'L' reads the lower triangle
    _dsytrd(ch[0:].ctypes, ib[0:].ctypes, S.ctypes, ib[0:].ctypes, d.ctypes, e.ctypes,
            tau.ctypes, work.ctypes, ib[1:].ctypes, ib[2:].ctypes)  # fmt: skip
    if ib[2] != 0:
        return -1
    # the lowest and the highest eigenvalue (bisection, to full accuracy): the scale
    db[2] = 0.0  # abstol: LAPACK's default
    ext = np.empty(2)
    for j in range(2):
        ib[11] = 1 if j == 0 else n  # il = iu
        _dstebz(ch[3:].ctypes, ch[4:].ctypes, ib[0:].ctypes, db[0:].ctypes, db[1:].ctypes,
                ib[11:].ctypes, ib[11:].ctypes, db[2:].ctypes, d.ctypes, e.ctypes,
                ib[12:].ctypes, ib[13:].ctypes, wk.ctypes, iblock.ctypes, isplit.ctypes,
                work.ctypes, iwork.ctypes, ib[2:].ctypes)  # fmt: skip
        if ib[2] != 0 or ib[12] != 1:
            return -1
        ext[j] = wk[0]
    scale = max(abs(ext[0]), abs(ext[1]), 1e-12)
    floor = EIG_FLOOR * scale
    if not ext[0] < floor:
        return 0
    # eigenpairs of the tridiagonal in (vl, vu]: vl below the lowest, vu = the floor
    db[0] = ext[0] - 1.0 - abs(ext[0])
    db[1] = floor
    ib[3] = 1  # il, iu (unused with RANGE = 'V')
    ib[4] = n
    ib[5] = 0  # m
    ib[6] = n  # ldz
    ib[7] = n  # nzc
    ib[8] = 0  # tryrac: no relative accuracy needed
    ib[9] = 10 * n + 10
    isuppz = np.empty(2 * n, np.int32)
    e[n - 1] = 0.0
    _dstemr(ch[1:].ctypes, ch[1:].ctypes, ib[0:].ctypes, d.ctypes, e.ctypes, db[0:].ctypes,
            db[1:].ctypes, ib[3:].ctypes, ib[4:].ctypes, ib[5:].ctypes, wk.ctypes, Z.ctypes,
            ib[6:].ctypes, ib[7:].ctypes, isuppz.ctypes, ib[8:].ctypes, work.ctypes,
            ib[1:].ctypes, iwork.ctypes, ib[9:].ctypes, ib[2:].ctypes)  # fmt: skip
    k = ib[5]
    if ib[2] != 0 or k < 1 or k >= n:
        return -1
    # Z (column-major n x k: its rows here) = Q Z, Q from the reflectors left in S
    ib[10] = k
    _dormtr(ch[0:].ctypes, ch[0:].ctypes, ch[2:].ctypes, ib[0:].ctypes, ib[10:].ctypes,
            S.ctypes, ib[0:].ctypes, tau.ctypes, Z.ctypes, ib[6:].ctypes, work.ctypes,
            ib[1:].ctypes, ib[2:].ctypes)  # fmt: skip
    if ib[2] != 0:
        return -1
    for j in range(k):
        ev[j] = wk[j]
    ev[k] = scale
    return int(k)


def _abs_block(a: float, b: float, c: float, floor: float) -> tuple[float, float, float, float]:
    """The symmetric 2x2 block ``[[a, b], [b, c]]`` with its eigenvalues replaced by their
    magnitudes, floored at ``floor``: ``(a', b', c', lowest eigenvalue)``."""
    mid = 0.5 * (a + c)
    rad = math.hypot(0.5 * (a - c), b)
    l1 = mid - rad  # lowest
    l2 = mid + rad
    m1 = max(abs(l1), floor)
    m2 = max(abs(l2), floor)
    if rad == 0.0:  # a multiple of the identity
        return m1, 0.0, m1, l1
    # unit eigenvector (u, v) of l1: (b, l1 - a) or (l1 - c, b), whichever is larger
    u, v = b, l1 - a
    u2, v2 = l1 - c, b
    if u2 * u2 + v2 * v2 > u * u + v * v:
        u, v = u2, v2
    nrm = math.hypot(u, v)
    u /= nrm
    v /= nrm
    # m1 (u, v)(u, v)^T + m2 (-v, u)(-v, u)^T
    return m1 * u * u + m2 * v * v, (m1 - m2) * u * v, m1 * v * v + m2 * u * u, l1


def _abs_newton_ldl(Sm: np.ndarray, rhs: np.ndarray, dD: np.ndarray) -> int:
    """A damped Newton step for an indefinite ``Sm`` from one symmetric indefinite
    factorisation (modified LDL^T, Cheng and Higham 1998): Bunch-Kaufman ``Sm = P L D L^T P^T``
    (dsytrf), then every eigenvalue of the 1x1 and 2x2 blocks of ``D`` replaced by its magnitude,
    floored at ``EIG_FLOOR`` x the largest, and ``P L |D| L^T P^T dD = rhs`` solved (dsytrs).
    Like the |H|-Newton step of :func:`_abs_newton_low` it is a Newton step where ``Sm`` is
    positive definite and a descent direction everywhere, at the cost of one factorisation
    (no eigenpairs). ``D`` has the inertia of ``Sm`` (Sylvester), so negative curvature is seen
    exactly, but the lowest eigenvector is not formed.

    Returns 0 (no negative curvature), 1 (negative curvature: the caller takes the exact
    eigenpairs where it needs the direction) or -1 where LAPACK fails or the step is not finite
    (the caller then takes the eigenpairs).
    """
    n = Sm.shape[0]
    A = Sm.copy()
    ch = np.empty(1, np.uint8)
    ch[0] = 76  # 'L'; A is symmetric, so its C layout is its Fortran layout
    ib = np.empty(4, np.int32)
    lwork = 64 * n + 64
    ib[0] = n
    ib[1] = lwork
    ib[2] = 0
    ib[3] = 1  # nrhs
    ipiv = np.empty(n, np.int32)
    work = np.empty(lwork)
    _dsytrf(ch.ctypes, ib[0:].ctypes, A.ctypes, ib[0:].ctypes, ipiv.ctypes, work.ctypes,
            ib[1:].ctypes, ib[2:].ctypes)  # fmt: skip
    if ib[2] < 0:  # info > 0: an exactly zero pivot, floored below
        return -1
    # D: 1x1 blocks where ipiv > 0; a 2x2 block at (k, k+1) where ipiv[k] = ipiv[k+1] < 0, its
    # off-diagonal element in Fortran A(k+1, k), which is A[k, k+1] here
    scale = 0.0
    k = 0
    while k < n:
        if ipiv[k] > 0 or k == n - 1:
            scale = max(scale, abs(A[k, k]))
            k += 1
        else:
            a, b, c = A[k, k], A[k, k + 1], A[k + 1, k + 1]
            scale = max(scale, abs(0.5 * (a + c)) + math.hypot(0.5 * (a - c), b))
            k += 2
    if not math.isfinite(scale):
        return -1
    floor = EIG_FLOOR * max(scale, 1e-12)
    has_neg = False
    k = 0
    while k < n:
        if ipiv[k] > 0 or k == n - 1:
            v = A[k, k]
            if v < 0.0:
                has_neg = True
            A[k, k] = max(abs(v), floor)
            k += 1
        else:
            a2, b2, c2, low = _abs_block(A[k, k], A[k, k + 1], A[k + 1, k + 1], floor)
            if low < 0.0:
                has_neg = True
            A[k, k] = a2
            A[k, k + 1] = b2
            A[k + 1, k + 1] = c2
            k += 2
    for i in range(n):
        dD[i] = rhs[i]
    _dsytrs(ch.ctypes, ib[0:].ctypes, ib[3:].ctypes, A.ctypes, ib[0:].ctypes, ipiv.ctypes,
            dD.ctypes, ib[0:].ctypes, ib[2:].ctypes)  # fmt: skip
    if ib[2] != 0:
        return -1
    for i in range(n):
        if not math.isfinite(dD[i]):
            return -1
    return 1 if has_neg else 0


if not _HAVE_LOW_EIG:  # pragma: no cover - numba or SciPy's Cython LAPACK missing

    def _low_eigenpairs(S: np.ndarray, ev: np.ndarray, Z: np.ndarray) -> int:
        return -1

    def _abs_newton_ldl(Sm: np.ndarray, rhs: np.ndarray, dD: np.ndarray) -> int:
        return -1


def _abs_newton_low(Sm: np.ndarray, rhs: np.ndarray, dD: np.ndarray, negD: np.ndarray) -> int:
    """The |H|-Newton step of :func:`_newton_solve` (eigenvalues by magnitude, floored at
    ``EIG_FLOOR`` x the largest) from the eigenpairs below the floor only
    (:func:`_low_eigenpairs`): with ``V`` those eigenvectors and ``c`` the largest eigenvalue
    magnitude, ``dD = V diag(1/|lam|) V^T rhs + M^-1 (rhs - V V^T rhs)`` where
    ``M = Sm + V diag(c - lam) V^T`` is positive definite, equal to ``Sm`` on the other
    eigenvectors and no worse conditioned than them (Cholesky).

    Returns 0 or 1 as :func:`_newton_solve` (1: negative curvature, ``negD`` set), or -1 where
    this fails (the caller then takes ``eigh``).
    """
    nD = Sm.shape[0]
    S = Sm.copy()
    ev = np.empty(nD)
    Z = np.empty((nD, nD))
    k = _low_eigenpairs(S, ev, Z)
    if k <= 0:
        return -1
    scale = ev[k]
    for j in range(k):
        if not math.isfinite(ev[j]):
            return -1
    M = Sm.copy()
    r2 = rhs.copy()
    for a in range(nD):
        dD[a] = 0.0
    for j in range(k):
        lam = max(abs(ev[j]), EIG_FLOOR * scale)
        pc = 0.0
        for a in range(nD):
            pc += Z[j, a] * rhs[a]
        for a in range(nD):
            dD[a] += Z[j, a] * (pc / lam)
            r2[a] -= Z[j, a] * pc
        sh = scale - ev[j]
        for a in range(nD):
            za = sh * Z[j, a]
            for b in range(nD):
                M[a, b] += za * Z[j, b]
    d2 = np.empty(nD)
    if not _lapack_cholesky_solve(M, r2, d2):
        return -1
    for a in range(nD):
        dD[a] += d2[a]
    for a in range(nD):
        negD[a] = 0.0
    if ev[0] < -NEG_CURV_REL * scale:
        inv = 1.0 / math.sqrt(abs(ev[0]) + 1e-300)
        for a in range(nD):
            negD[a] = Z[0, a] * inv
        return 1
    return 0


def _newton_solve(
    H: np.ndarray,
    g: np.ndarray,
    idx: np.ndarray,
    m: int | np.int64,
    is_local: np.ndarray,
    d: np.ndarray,
    neg: np.ndarray,
    exact: bool,
) -> int:
    """Solve the active Newton system ``H[idx, idx] d = g[idx]`` as :func:`sigtune.hep._fit._solve`
    does: through the Schur complement of the per-bin ("local") parameters, whose block of the
    Hessian is diagonal (floored if not positive); a Schur complement that is not positive
    definite takes its eigenvalues by magnitude, floored at ``EIG_FLOOR`` x the largest
    (|H|-Newton; wide ones by :func:`_abs_newton_low`, else ``eigh``). With ``exact`` False a
    wide one that is not positive definite takes the cheaper modified LDL^T step
    (:func:`_abs_newton_ldl`) instead, and the negative-curvature direction is not formed.

    Returns 1 when there is negative curvature and ``neg`` holds the lowest eigenvector scaled
    by ``1/sqrt(|lowest|)`` (used to leave saddle points); 2 when there is negative curvature but
    ``neg`` was not formed (call again with ``exact``); else 0 (``neg`` zero).
    """
    didx = np.empty(m, np.int64)
    lidx = np.empty(m, np.int64)
    nD = 0
    nL = 0
    for a in range(m):
        if is_local[idx[a]]:
            lidx[nL] = a
            nL += 1
        else:
            didx[nD] = a
            nD += 1
    hl = np.empty(nL)
    for j in range(nL):
        i = idx[lidx[j]]
        v = H[i, i]
        floor = LOCAL_FLOOR * (1.0 + abs(v))
        hl[j] = v if v > floor else 2.0 * abs(v) + floor
    Sm = np.empty((nD, nD))
    rhs = np.empty(nD)
    for a in range(nD):
        ia = idx[didx[a]]
        r = g[ia]
        for j in range(nL):
            il = idx[lidx[j]]
            r -= H[ia, il] * g[il] / hl[j]
        rhs[a] = r
        for b in range(a, nD):
            ib = idx[didx[b]]
            v = 0.5 * (H[ia, ib] + H[ib, ia])
            for j in range(nL):
                il = idx[lidx[j]]
                v -= H[ia, il] * H[il, ib] / hl[j]
            Sm[a, b] = v
            Sm[b, a] = v
    dD = np.empty(nD)
    negD = np.zeros(nD)
    has_neg = False
    code = 0
    if nD >= CHOL_LAPACK:
        pd = _lapack_cholesky_solve(Sm, rhs, dD)
    else:
        pd = _cholesky_solve(Sm, rhs, np.empty((nD, nD)), dD)
    if not pd and nD >= CHOL_LAPACK and LDL_STEP and not exact:
        res = _abs_newton_ldl(Sm, rhs, dD)
        if res >= 0:
            pd = True
            code = 2 * res
    if not pd and nD >= CHOL_LAPACK and LOW_EIG:
        # the same step from the few eigenpairs below the floor (2-3x faster than eigh)
        res = _abs_newton_low(Sm, rhs, dD, negD)
        if res >= 0:
            pd = True
            has_neg = res == 1
    if not pd:
        ev, vec = np.linalg.eigh(Sm)
        scale = max(np.abs(ev).max(), 1e-12)
        if ev[0] < -NEG_CURV_REL * scale:
            has_neg = True
            inv = 1.0 / math.sqrt(abs(ev[0]) + 1e-300)
            for a in range(nD):
                negD[a] = vec[a, 0] * inv
        for a in range(nD):
            dD[a] = 0.0
        for c in range(nD):
            # eigenvalues by magnitude with a floor: Newton along the well-curved directions,
            # downhill along negative curvature (see _fit._solve)
            lam = max(abs(ev[c]), EIG_FLOOR * scale)
            if lam > 0.0:
                pc = 0.0
                for a in range(nD):
                    pc += vec[a, c] * rhs[a]
                pc /= lam
                for a in range(nD):
                    dD[a] += vec[a, c] * pc
    for a in range(nD):
        d[didx[a]] = dD[a]
        neg[didx[a]] = negD[a]
    for j in range(nL):
        il = idx[lidx[j]]
        v = g[il]
        vn = 0.0
        for a in range(nD):
            h = H[il, idx[didx[a]]]
            v -= h * dD[a]
            vn -= h * negD[a]
        d[lidx[j]] = v / hl[j]
        neg[lidx[j]] = vn / hl[j]
    return 1 if has_neg else code


def _edm(gs: np.ndarray, d: np.ndarray) -> float:
    """Estimated distance to the minimum of the Newton step ``d`` for the gradient ``gs``
    (``|g^T H^-1 g| / 4``, nll units)."""
    gd = 0.0
    for a in range(gs.shape[0]):
        gd += gs[a] * d[a]
    return 0.25 * abs(gd)


def _minimize_row(
    x: np.ndarray,
    r: int,
    t: _Tables,
    n: np.ndarray,
    ga: np.ndarray,
    pa: np.ndarray,
    const: float,
    free: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    max_iter: int,
    g: np.ndarray,
    H: np.ndarray,
    nu: np.ndarray,
    out: np.ndarray,
) -> None:
    """Projected Newton for one row of the dense layout, in place on ``x``: the iteration of
    :func:`sigtune.hep._fit._minimize_general` (same active set, damped Newton step, saddle
    escape, Armijo backtracking and edm stopping rule) with scalar control flow.

    ``out`` receives ``[f, edm, n_iter, status]`` with status 0 = finished (converged or
    ``max_iter``), 1 = line search stalled (the caller continues with the general minimiser),
    2 = ``-2 ln L`` not finite at the start (the caller raises).
    """
    P = x.shape[0]
    is_local = t.is_local
    f = _derivs(x, r, t, n, ga, pa, const, 2, g, H, nu)
    out[2] = 0.0
    if not math.isfinite(f):
        out[0] = f
        out[1] = math.inf
        out[3] = 2.0
        return
    edm = math.inf
    n_iter = 0
    n_saddle = 0
    idx = np.empty(P, np.int64)
    x_new = np.empty(P)
    x_try = np.empty(P)
    g_new = np.empty(P)
    H_new = np.empty((P, P))
    stp = np.empty(P)
    status = 0
    for _ in range(max_iter):
        # int64 from the start: a literal 0 would have numba compile _newton_solve once more
        # for the literal type met while it types this loop (two extra versions, ~5 CPU-s)
        m = np.int64(0)
        for i in range(P):
            if free[i] and not ((x[i] <= lo[i] and g[i] > 0.0) or (x[i] >= hi[i] and g[i] < 0.0)):
                idx[m] = i
                m += 1
        gs = np.empty(m)
        for a in range(m):
            gs[a] = g[idx[a]]
        d = np.empty(m)
        neg = np.empty(m)
        gn = 0.0
        code = _newton_solve(H, g, idx, m, is_local, d, neg, False)
        edm = _edm(gs, d)
        small = edm < EDM_TOL
        if small and code == 2 and n_saddle < MAX_SADDLE:
            # the cheap step says converged next to negative curvature: the exact |H| step and
            # the lowest eigenvector decide (a saddle to leave, or rounding)
            code = _newton_solve(H, g, idx, m, is_local, d, neg, True)
            edm = _edm(gs, d)
            small = edm < EDM_TOL
        has_neg = code == 1
        use_neg = False
        if small and has_neg and n_saddle < MAX_SADDLE:
            for a in range(m):
                gn += gs[a] * neg[a]
            use_neg = True
            small = False
            n_saddle += 1
        # the step, full length (zero where a parameter does not move)
        for i in range(P):
            stp[i] = 0.0
        for a in range(m):
            i = idx[a]
            if use_neg:
                stp[i] = -neg[a] if gn > 0.0 else neg[a]
            else:
                stp[i] = -d[a]
        for i in range(P):
            x_new[i] = x[i]
        slope = 0.0
        for i in range(P):
            if stp[i] != 0.0:
                v = min(max(x[i] + stp[i], lo[i]), hi[i])
                x_new[i] = v
                slope += g[i] * (v - x[i])
        # f alone decides the line search (the same number at every order): the gradient and
        # Hessian are computed once, at the accepted point
        f_new = _derivs(x_new, r, t, n, ga, pa, const, 0, g_new, H_new, nu)
        slack = LS_SLACK * (1.0 + abs(f))
        if not (math.isfinite(f_new) and f_new <= f + ARMIJO * slope + slack):
            curv = f_new - f - slope
            if math.isfinite(f_new) and curv > 0.0:
                t_q = -slope / (2.0 * curv)
                if not math.isfinite(t_q):
                    t_q = LS_T_DEFAULT
            else:
                t_q = LS_T_DEFAULT
            ts = min(max(t_q, LS_T_MIN), LS_T_MAX)
            # first, where the step crosses a bound that the gradient points out of, the step
            # that ends on the first such bound (the ratio test of active-set methods): the
            # projection would clip that parameter alone and bend the step, which a long step
            # along a flat valley of several parameters turns into nonsense (ttZ: mu_ZZ clipped
            # at its bound while mu_WZ moved by -105); backtracking from the bent step then
            # approaches the bound by halves, one iteration each
            t_b = 1.0
            if BOUND_STEP:
                for i in range(P):
                    if stp[i] > 0.0 and x[i] + stp[i] > hi[i] and g[i] < 0.0:
                        t_b = min(t_b, (hi[i] - x[i]) / stp[i])
                    elif stp[i] < 0.0 and x[i] + stp[i] < lo[i] and g[i] > 0.0:
                        t_b = min(t_b, (lo[i] - x[i]) / stp[i])
            found = False
            for ls in range(-1, LS_MAX):
                if ls == -1:
                    if not (0.0 < t_b < 1.0):
                        continue
                    tt = t_b
                elif ls == 0:
                    tt = ts
                else:
                    ts *= 0.5
                    tt = ts
                for i in range(P):
                    x_try[i] = x[i]
                sl = 0.0
                for i in range(P):
                    if stp[i] != 0.0:
                        v = min(max(x[i] + tt * stp[i], lo[i]), hi[i])
                        x_try[i] = v
                        sl += g[i] * (v - x[i])
                f_try = _derivs(x_try, r, t, n, ga, pa, const, 0, g_new, H_new, nu)
                if math.isfinite(f_try) and f_try <= f + ARMIJO * sl + slack:
                    found = True
                    break
            if not found:
                status = 1
                break
            for i in range(P):
                x_new[i] = x_try[i]
        f_new = _derivs(x_new, r, t, n, ga, pa, const, 2, g_new, H_new, nu)
        n_iter += 1
        for i in range(P):
            x[i] = x_new[i]
            g[i] = g_new[i]
            for j in range(P):
                H[i, j] = H_new[i, j]
        f = f_new
        if small:
            break
    if status == 1:  # g, H, nu at x (the last evaluation was a trial point)
        f = _derivs(x, r, t, n, ga, pa, const, 2, g, H, nu)
    out[0] = f
    out[1] = edm
    out[2] = n_iter
    out[3] = status


def _minimize_rows(
    x: np.ndarray,
    rows: np.ndarray,
    t: _Tables,
    n: np.ndarray,
    ga: np.ndarray,
    pa: np.ndarray,
    const: np.ndarray,
    free: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    max_iter: int,
    g: np.ndarray,
    H: np.ndarray,
    nu: np.ndarray,
    out: np.ndarray,
) -> None:
    for b in range(x.shape[0]):
        _minimize_row(
            x[b], rows[b], t, n[b], ga[b], pa[b], const[b], free, lo[b], hi[b], max_iter,
            g[b], H[b], nu[b], out[b],
        )  # fmt: skip


def _derivs_arrow(
    x: np.ndarray,
    r: int,
    t: _Tables,
    n: np.ndarray,
    ga: np.ndarray,
    pa: np.ndarray,
    const: float,
    dpos: np.ndarray,
    lpos: np.ndarray,
    local_bin: np.ndarray,
    g: np.ndarray,
    HDD: np.ndarray,
    HLD: np.ndarray,
    HLL: np.ndarray,
    nu: np.ndarray,
    JD: np.ndarray,
    dw_out: np.ndarray,
) -> float:
    """``-2 ln L``, gradient and the arrowhead Hessian blocks (dense ``HDD``, coupling ``HLD``
    = ``HDL`` transposed, (nL, nD): one contiguous row per local parameter; diagonal ``HLL``) of the arrowhead layout of :mod:`sigtune.hep._fit`, for large models.

    Normsys factors are constant within a channel, so their second-derivative terms are summed
    per (sample, channel) before the products. The Gauss-Newton term of the dense block,
    ``JD^T diag(dw) JD`` with the per-bin dense Jacobian ``JD`` (N, nD), is left to the caller:
    one BLAS product in NumPy (numba's np.dot would use SciPy's OpenBLAS, whose thread pool
    competes with NumPy's for the cores). ``sqrt(dw) JD`` and ``dw`` are returned in place.
    """
    P = x.shape[0]
    S = t.nom.shape[1]
    N = t.nom.shape[2]
    K = t.lin_idx.shape[0]
    C = t.lk.shape[1]
    nD = HDD.shape[0]
    nL = HLL.shape[0]
    f = _derivs(x, r, t, n, ga, pa, const, 0, g, HDD, nu)  # rates into t.Es, t.Ls, t.As, nu
    if not math.isfinite(f):
        return f
    w2 = np.empty(N)
    dw2 = np.empty(N)
    for b in range(N):
        v = nu[b]
        w2[b] = 2.0 * (1.0 - n[b] / v) if v > 0.0 else 2.0
        dw2[b] = 2.0 * n[b] / (v * v) if v > 0.0 else 0.0
    JD[:, :] = 0.0
    HDD[:, :] = 0.0
    HLD[:, :] = 0.0
    Jl = np.zeros(nL)
    W = np.zeros((S, C))  # sum_b w nu_sb per (sample, channel): normsys x normsys
    VA = np.zeros((t.hs_par.shape[0], C))  # sum_b w E L t.dl1: histosys x normsys
    for s in range(S):
        n_ns = t.ns_ptr[s + 1] - t.ns_ptr[s]
        for b in range(N):
            c = t.chan_of_bin[b]
            E = t.Es[s, b]
            L = t.Ls[s, b]
            A = t.As[s, b]
            nusb = E * L * A
            wb = w2[b]
            W[s, c] += wb * nusb
            for j in range(t.ns_ptr[s], t.ns_ptr[s + 1]):
                i = t.ns_list[j]
                JD[b, dpos[t.ns_par[i]]] += nusb * t.lk1[i, c]
            EL = E * L
            for j in range(t.hs_ptr[s], t.hs_ptr[s + 1]):
                h = t.hs_list[j]
                dh = dpos[t.hs_par[h]]
                JD[b, dh] += EL * t.dl1[h, b]
                HDD[dh, dh] += wb * EL * t.dl2[h, b]
                VA[h, c] += wb * EL * t.dl1[h, b]
            for k in range(K):
                p = t.lin_idx[k, s, b]
                if p >= P:
                    continue
                ex = 1.0
                for k2 in range(K):
                    if k2 != k:
                        q = t.lin_idx[k2, s, b]
                        if q < P:
                            ex *= x[q]
                dp_ = dpos[p]
                val = E * A * ex
                if dp_ >= 0:
                    JD[b, dp_] += val
                else:
                    Jl[lpos[p]] += val
                # linear x linear (pairs of slots in this entry)
                for k2 in range(K):
                    if k2 == k:
                        continue
                    q = t.lin_idx[k2, s, b]
                    if q >= P:
                        continue
                    ex2 = 1.0
                    for k3 in range(K):
                        if k3 != k and k3 != k2:
                            q3 = t.lin_idx[k3, s, b]
                            if q3 < P:
                                ex2 *= x[q3]
                    v2 = wb * E * A * ex2
                    dq = dpos[q]
                    if dp_ >= 0 and dq >= 0:
                        HDD[dp_, dq] += v2
                    elif dp_ >= 0:
                        HLD[lpos[q], dp_] += v2
                # linear x normsys and linear x histosys
                vl = wb * val
                vh = wb * E * ex
                if dp_ >= 0:
                    for j in range(t.ns_ptr[s], t.ns_ptr[s + 1]):
                        i = t.ns_list[j]
                        di = dpos[t.ns_par[i]]
                        v = vl * t.lk1[i, c]
                        HDD[dp_, di] += v
                        HDD[di, dp_] += v
                    for j in range(t.hs_ptr[s], t.hs_ptr[s + 1]):
                        h = t.hs_list[j]
                        dh = dpos[t.hs_par[h]]
                        v = vh * t.dl1[h, b]
                        HDD[dp_, dh] += v
                        HDD[dh, dp_] += v
                else:
                    lp_ = lpos[p]
                    for j in range(t.ns_ptr[s], t.ns_ptr[s + 1]):
                        i = t.ns_list[j]
                        HLD[lp_, dpos[t.ns_par[i]]] += vl * t.lk1[i, c]
                    for j in range(t.hs_ptr[s], t.hs_ptr[s + 1]):
                        h = t.hs_list[j]
                        HLD[lp_, dpos[t.hs_par[h]]] += vh * t.dl1[h, b]
        # normsys x normsys and normsys x histosys, per channel
        if n_ns:
            for c in range(C):
                Wc = W[s, c]
                for j1 in range(t.ns_ptr[s], t.ns_ptr[s + 1]):
                    i1 = t.ns_list[j1]
                    d1 = dpos[t.ns_par[i1]]
                    v1 = Wc * t.lk1[i1, c]
                    HDD[d1, d1] += Wc * t.lk2[i1, c]
                    for j2 in range(t.ns_ptr[s], t.ns_ptr[s + 1]):
                        i2 = t.ns_list[j2]
                        HDD[d1, dpos[t.ns_par[i2]]] += v1 * t.lk1[i2, c]
                    for j2 in range(t.hs_ptr[s], t.hs_ptr[s + 1]):
                        h = t.hs_list[j2]
                        v = VA[h, c] * t.lk1[i1, c]
                        dh = dpos[t.hs_par[h]]
                        HDD[d1, dh] += v
                        HDD[dh, d1] += v
    # Gauss-Newton terms and the gradient
    # the Gauss-Newton term of HDD, JD^T diag(dw) JD, is added by the caller (NumPy's BLAS)
    for b in range(N):
        dw_out[b] = dw2[b]
    gD = np.zeros(nD)
    for b in range(N):
        wb = w2[b]
        for a in range(nD):
            gD[a] += wb * JD[b, a]
    for i in range(P):
        di = dpos[i]
        g[i] = gD[di] if di >= 0 else 0.0
    for i in range(P):
        lp_ = lpos[i]
        if lp_ >= 0:
            b = local_bin[lp_]
            g[i] = w2[b] * Jl[lp_]
            HLL[lp_] = dw2[b] * Jl[lp_] * Jl[lp_]
            v = dw2[b] * Jl[lp_]
            for a in range(nD):
                HLD[lp_, a] += v * JD[b, a]
    for j in range(t.g_idx.shape[0]):
        p = t.g_idx[j]
        inv = 1.0 / (t.gsig[r, j] * t.gsig[r, j])
        g[p] += 2.0 * (x[p] - ga[j]) * inv
        if dpos[p] >= 0:
            HDD[dpos[p], dpos[p]] += 2.0 * inv
        else:
            HLL[lpos[p]] += 2.0 * inv
    for j in range(t.p_idx.shape[0]):
        p = t.p_idx[j]
        gam = x[p]
        g[p] += 2.0 * (t.ptau[r, j] - pa[j] / gam)
        hv = 2.0 * pa[j] / (gam * gam)
        if dpos[p] >= 0:
            HDD[dpos[p], dpos[p]] += hv
        else:
            HLL[lpos[p]] += hv
    # JD scaled in place to sqrt(dw) JD: the caller's Gauss-Newton term is then (JD^T JD)
    for b in range(N):
        sq = math.sqrt(dw2[b])
        for a in range(nD):
            JD[b, a] *= sq
    return f


def _derivs_rows(
    x: np.ndarray,
    rows: np.ndarray,
    t: _Tables,
    n: np.ndarray,
    ga: np.ndarray,
    pa: np.ndarray,
    const: np.ndarray,
    order: int,
    f: np.ndarray,
    g: np.ndarray,
    H: np.ndarray,
    nu: np.ndarray,
) -> None:
    # literal orders: the two versions of _derivs that _minimize_row compiles anyway (a runtime
    # order would be a third, ~4 CPU-s more to compile); order 1 fills the Hessian as well
    for b in range(x.shape[0]):
        if order == 0:
            f[b] = _derivs(x[b], rows[b], t, n[b], ga[b], pa[b], const[b], 0, g[b], H[b], nu[b])
        else:
            f[b] = _derivs(x[b], rows[b], t, n[b], ga[b], pa[b], const[b], 2, g[b], H[b], nu[b])


def _const_rows(
    n: np.ndarray, pa: np.ndarray, gsig: np.ndarray, ptau: np.ndarray, out: np.ndarray
) -> None:
    """The data-dependent constant of ``-2 ln L`` per row (see ``Model._constants``)."""
    ln2pi = math.log(2.0 * math.pi)
    for b in range(n.shape[0]):
        r = b if gsig.shape[0] > 1 else 0
        c = 0.0
        for j in range(n.shape[1]):
            c += 2.0 * math.lgamma(n[b, j] + 1.0)
        for j in range(gsig.shape[1]):
            c += math.log(gsig[r, j] * gsig[r, j]) + ln2pi
        for j in range(pa.shape[1]):
            a = pa[b, j]
            tau = ptau[r, j]
            if a >= 100.0:  # Stirling's series: no cancellation of the huge terms
                q = (a - tau) / tau
                c += 2.0 * (
                    a * math.log1p(q) - tau * q + 0.5 * math.log(2.0 * math.pi * a)
                    + 1.0 / (12.0 * a) - 1.0 / (360.0 * a**3) + 1.0 / (1260.0 * a**5)
                )  # fmt: skip
            else:
                c += 2.0 * (math.lgamma(a + 1.0) + tau)
                if a != 0.0:
                    c -= 2.0 * a * math.log(tau)
        out[b] = c


def _masked_inverse(H: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Inverse of ``H`` with the fixed rows/columns replaced by the identity."""
    P = H.shape[0]
    Hm = np.empty((P, P))
    for i in range(P):
        for j in range(P):
            if free[i] and free[j]:
                Hm[i, j] = H[i, j]
            else:
                Hm[i, j] = 1.0 if i == j else 0.0
    return np.linalg.inv(Hm)


def _compiler(func: Any) -> Any:
    """numba.njit with an on-disk cache; without one where no cache directory is writable
    (numba raises at decoration time then): compiled once per process instead. Compilations
    through the cache take the cache directory's compile lock (:func:`_compile_locked`)."""
    try:
        disp = numba.njit(cache=True, nogil=True)(func)
    except RuntimeError:  # pragma: no cover - read-only install and no user cache directory
        return numba.njit(cache=False, nogil=True)(func)
    disp.compile = _compile_locked(disp)  # type: ignore[method-assign]
    return disp


# Processes that share numba's on-disk cache (the workers of a study, the processes of a test
# run, Ray workers on one node) compile one at a time: the first compiles and writes the cache,
# the others wait and then load it (~0.3 s) instead of compiling the same ~60-80 CPU-s of
# kernels side by side. The lock is an flock on a file in the cache directory, taken for the
# outermost compilation of this process only (numba compiles callees inside their caller's);
# a holder that does not let go within COMPILE_LOCK_WAIT_S (stopped, or a machine far slower
# than expected) is given up on with a warning and the kernels are compiled without it.
COMPILE_LOCK_NAME = "sigtune-compile.lock"
COMPILE_LOCK_WAIT_S = 900.0
_compile_depth = threading.local()
# Lock descriptors this process holds. A process forked meanwhile (by another thread) closes its
# copies: the flock belongs to the open file, which the copy would keep locked after the
# compiling process lets go, and the child's own compilations would wait on it.
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in list(_HELD_LOCKS):
        try:
            os.close(fd)
        except OSError:  # pragma: no cover
            pass
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_close_inherited_locks)


def _compile_locked(disp: Any) -> Any:
    inner = disp.compile
    try:
        lock_path: str | None = os.path.join(disp._cache._cache_path, COMPILE_LOCK_NAME)
    except AttributeError:  # pragma: no cover - numba internals changed: compile unlocked
        lock_path = None

    def compile(sig: Any) -> Any:
        depth = getattr(_compile_depth, "n", 0)
        outer = depth == 0 and lock_path is not None and fcntl is not None
        fd = _lock_file(lock_path) if outer else None  # type: ignore[arg-type]
        if fd is not None:
            _HELD_LOCKS.add(fd)
        _compile_depth.n = depth + 1
        try:
            return inner(sig)
        finally:
            _compile_depth.n = depth
            if fd is not None:
                _HELD_LOCKS.discard(fd)
                os.close(fd)  # closing the descriptor releases the flock

    return compile


def _lock_file(path: str) -> int | None:
    """An exclusive flock on ``path`` (created), as an open descriptor; None where the file
    cannot be opened or the holder keeps it for more than COMPILE_LOCK_WAIT_S."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return None
    deadline = time.monotonic() + COMPILE_LOCK_WAIT_S
    delay = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                warnings.warn(
                    f"sigtune.hep: another process has held numba's compile lock {path} for "
                    f"{COMPILE_LOCK_WAIT_S:.0f} s; compiling without it",
                    RuntimeWarning,
                    stacklevel=4,
                )
                return None
            time.sleep(delay)  # the holder is compiling: poll, backing off to 0.2 s
            delay = min(2 * delay, 0.2)
        except OSError:  # a file system without flock
            os.close(fd)
            return None


if _HAVE_NUMBA:  # pragma: no branch
    _jit = _compiler
    _interp = _jit(_interp)
    _derivs = _jit(_derivs)
    _substitute = _jit(_substitute)
    _cholesky_solve = _jit(_cholesky_solve)
    _lapack_cholesky_solve = _jit(_lapack_cholesky_solve)
    _low_eigenpairs = _jit(_low_eigenpairs)
    _abs_newton_low = _jit(_abs_newton_low)
    _abs_block = _jit(_abs_block)
    _abs_newton_ldl = _jit(_abs_newton_ldl)
    _newton_solve = _jit(_newton_solve)
    _edm = _jit(_edm)
    _minimize_row = _jit(_minimize_row)
    _minimize_rows = _jit(_minimize_rows)
    _derivs_rows = _jit(_derivs_rows)
    _derivs_arrow = _jit(_derivs_arrow)
    _const_rows = _jit(_const_rows)
    _masked_inverse = _jit(_masked_inverse)


class JitTables:
    """The model's arrays in the layout of the compiled kernels (built once per bundle)."""

    def __init__(self, a: ModelArrays) -> None:
        P, S, N, K = a.n_pars, a.n_samples, a.n_bins, a.n_slots
        Bm = a.n_rows
        i64 = np.int64

        def csr(owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            order = np.argsort(owner, kind="stable").astype(i64)
            ptr = np.zeros(S + 1, i64)
            np.add.at(ptr, owner.astype(i64) + 1, 1)
            return np.cumsum(ptr).astype(i64), order

        hs_ptr, hs_list = csr(a.hs_sample)
        ns_ptr, ns_list = csr(a.ns_sample)
        H_, M_, C = a.n_histosys, a.n_normsys, a.n_channels
        # parameters that can touch each bin (static sparsity of the per-bin Jacobian)
        touch = np.zeros((N, P), bool)
        for s in range(S):
            for p in a.ns_par[a.ns_sample == s]:
                touch[:, p] = True
            for p in a.hs_par[a.hs_sample == s]:
                touch[:, p] = True
            for k in range(K):
                li = a.lin_idx[k, s]
                ok = li < P
                touch[np.flatnonzero(ok), li[ok]] = True
        bin_ptr = np.zeros(N + 1, i64)
        bin_ptr[1:] = np.cumsum(touch.sum(axis=1))
        bin_pars = np.nonzero(touch)[1].astype(i64)
        self.P, self.N, self.Bm = P, N, Bm
        self.dpos = a.dpos.astype(i64)
        self.lpos = a.lpos.astype(i64)
        self.local_bin = a.local_bin.astype(i64)
        self.tables = _Tables(
            **_numbers(a),
            hs_par=a.hs_par.astype(i64),
            hs_code4p=a.histosys_code4p,
            hs_ptr=hs_ptr,
            hs_list=hs_list,
            ns_par=a.ns_par.astype(i64),
            ns_code4=a.normsys_code4,
            ns_ptr=ns_ptr,
            ns_list=ns_list,
            chan_of_bin=a.chan_of_bin.astype(i64),
            lin_idx=np.ascontiguousarray(a.lin_idx, i64),
            bin_ptr=bin_ptr,
            bin_pars=bin_pars,
            g_idx=a.gauss_par.astype(i64),
            p_idx=a.pois_par.astype(i64),
            **_scratch(H_, M_, C, S, N, P, a.dense_layout),
            is_local=_local_params(a, touch),
        )

    def rows(self, B: int) -> np.ndarray:
        return np.arange(B, dtype=np.int64) if self.Bm > 1 else np.zeros(B, np.int64)


# the fields of _Tables that hold the model's numbers (replaced by with_yields), and scratch
_NUMBER_FIELDS = ("nom", "hs_dp", "hs_dm", "ns_loghi", "ns_loglo", "ns_coef", "gsig", "ptau")
_SCRATCH_FIELDS = ("dl", "dl1", "dl2", "lk", "lk1", "lk2", "Es", "Ls", "As", "J")


def _numbers(a: ModelArrays) -> dict[str, np.ndarray]:
    """The number fields of :class:`_Tables` (contiguous float64, one leading row axis)."""
    Bm, H_, M_, C, N = a.n_rows, a.n_histosys, a.n_normsys, a.n_channels, a.n_bins
    ns_coef = a.ns_coef if a.ns_coef is not None else np.zeros((Bm, M_, C, 6))
    f64 = np.float64
    return {
        "nom": np.ascontiguousarray(a.nom, f64),
        "hs_dp": np.ascontiguousarray(a.hs_dp.reshape(Bm, H_, N), f64),
        "hs_dm": np.ascontiguousarray(a.hs_dm.reshape(Bm, H_, N), f64),
        "ns_loghi": np.ascontiguousarray(a.ns_loghi.reshape(Bm, M_, C), f64),
        "ns_loglo": np.ascontiguousarray(a.ns_loglo.reshape(Bm, M_, C), f64),
        "ns_coef": np.ascontiguousarray(ns_coef.reshape(Bm, M_, C, 6), f64),
        "gsig": np.ascontiguousarray(a.gauss_sigma.reshape(Bm, -1), f64),
        "ptau": np.ascontiguousarray(a.pois_tau.reshape(Bm, -1), f64),
    }


def _scratch(
    H_: int, M_: int, C: int, S: int, N: int, P: int, dense_layout: bool
) -> dict[str, np.ndarray]:
    """Zeroed scratch arrays of the kernels: views into one buffer (one allocation)."""
    shapes = [(H_, N)] * 3 + [(M_, C)] * 3 + [(S, N)] * 3 + [(N, P) if dense_layout else (1, 1)]
    sizes = [math.prod(sh) for sh in shapes]
    buf = np.zeros(sum(sizes))
    out, start = {}, 0
    for name, sh, n in zip(_SCRATCH_FIELDS, shapes, sizes, strict=True):
        out[name] = buf[start : start + n].reshape(sh)
        start += n
    return out


def _local_params(a: ModelArrays, touch: np.ndarray) -> np.ndarray:
    """Parameters that only enter single-slot linear factors of one bin, at most one per bin:
    their rows of the Hessian couple only to the parameters of that bin, so the block they form
    is diagonal (the per-bin gammas of staterror/shapesys/shapefactor)."""
    P = a.n_pars
    lin = a.lin_idx
    only_linear = np.ones(P, bool)
    only_linear[a.ns_par] = False
    only_linear[a.hs_par] = False
    srt = np.sort(lin, axis=0)  # a parameter twice in one entry has a second derivative
    twice = np.unique(srt[1:][(srt[1:] == srt[:-1]) & (srt[1:] < P)])
    only_linear[twice] = False
    cand = np.flatnonzero(only_linear & (touch.sum(axis=0) == 1))
    local = np.zeros(P, bool)
    if cand.size:
        bins = touch[:, cand].argmax(axis=0)  # the one bin of each candidate
        _, first = np.unique(bins, return_index=True)  # lowest parameter index claims its bin
        local[cand[first]] = True
    return local


def tables(a: ModelArrays) -> JitTables:
    """The bundle's :class:`JitTables`, cached on it (a replaced bundle builds its own)."""
    jt = a._cache.get("jit")
    if jt is None:
        jt = a._cache["jit"] = JitTables(a)
    return jt  # type: ignore[no-any-return]


def reuse_tables(old: ModelArrays, new: ModelArrays) -> None:
    """Give ``new`` (same structure and layout as ``old``, other numbers) the tables of ``old``
    with the numbers swapped (the index tables depend on the structure only) and fresh scratch
    arrays, so that models evaluated in different threads never share them. Does nothing when
    ``old`` has none cached."""
    jt_old = old._cache.get("jit")
    if jt_old is None or new.n_rows != old.n_rows:
        return
    jt = copy.copy(jt_old)
    t = jt.tables
    scratch = _scratch(
        new.n_histosys, new.n_normsys, new.n_channels, new.n_samples, new.n_bins, new.n_pars,
        new.dense_layout,
    )  # fmt: skip
    jt.tables = t._replace(**_numbers(new), **scratch)
    new._cache["jit"] = jt


def derivatives(a: ModelArrays, x: np.ndarray, consts: Consts, order: int = 2) -> Derivs:
    """``(f, g, H, H_DL (empty), H_LL (empty), nu)`` for a batch ``x (B, P)``: the dense
    layout's :meth:`Model._derivatives` contract."""
    jt = tables(a)
    n, ga, pa, const = consts
    B, P = x.shape
    f = np.empty(B)
    g = np.empty((B, P))
    H = np.empty((B, P, P))
    nu = np.empty((B, jt.N))
    xc = _rw(x)
    _derivs_rows(
        xc, jt.rows(B), jt.tables, _c2(n, B), _c2(ga, B), _c2(pa, B), _c1(const, B), order,
        f, g, H, nu,
    )  # fmt: skip
    return Derivs(f, g, H, np.zeros((B, P, 0)), np.zeros((B, 0)), nu)


def derivatives_arrow(a: ModelArrays, x: np.ndarray, consts: Consts) -> Derivs:
    """:meth:`Model._derivatives` for the arrowhead layout: ``(f, g, HDD, HDL, HLL, nu)``."""
    jt = tables(a)
    n, ga, pa, const = consts
    B, P = x.shape
    nD, nL = a.n_dense, a.n_local
    f = np.empty(B)
    g = np.empty((B, P))
    HDD = np.empty((B, nD, nD))
    HLD = np.empty((B, nL, nD))  # written row-wise by the kernel; returned as HDL (a view)
    HLL = np.empty((B, nL))
    nu = np.empty((B, jt.N))
    JD = np.empty((jt.N, nD))
    dw = np.empty(jt.N)
    xc = _rw(x)
    n, ga, pa, const = _c2(n, B), _c2(ga, B), _c2(pa, B), _c1(const, B)
    rows = jt.rows(B)
    for b in range(B):
        f[b] = _derivs_arrow(
            xc[b], rows[b], jt.tables, n[b], ga[b], pa[b], const[b], jt.dpos, jt.lpos,
            jt.local_bin, g[b], HDD[b], HLD[b], HLL[b], nu[b], JD, dw,
        )  # fmt: skip
        if np.isfinite(f[b]):  # JD holds sqrt(dw) JD: one symmetric rank-k update (BLAS)
            HDD[b] += np.dot(JD.T, JD)
    return Derivs(f, g, HDD, np.ascontiguousarray(HLD.transpose(0, 2, 1)), HLL, nu)


def value(a: ModelArrays, x: np.ndarray, consts: Consts) -> np.ndarray:
    """``-2 ln L`` only, ``(B,)``."""
    jt = tables(a)
    n, ga, pa, const = consts
    B = x.shape[0]
    f = np.empty(B)
    nu = np.empty((B, jt.N))
    dummy = np.empty((B, 0))
    _derivs_rows(
        _rw(x), jt.rows(B), jt.tables, _c2(n, B), _c2(ga, B),
        _c2(pa, B), _c1(const, B), 0, f, dummy, np.empty((B, 0, 0)), nu,
    )  # fmt: skip
    return f


class RowFits(NamedTuple):
    """Result of :func:`minimize`: one entry per row."""

    x: np.ndarray  # (B, P) end points
    f: np.ndarray  # (B,) -2 ln L there
    edm: np.ndarray  # (B,) estimated distance to the minimum of the last Newton step
    n_iter: np.ndarray  # (B,) Newton iterations
    status: np.ndarray  # (B,) 0 finished, 1 line search stalled, 2 not finite at the start
    g: np.ndarray  # (B, P) gradient at x
    H: np.ndarray  # (B, P, P) Hessian at x
    nu: np.ndarray  # (B, N) expected rates at x


def minimize(
    a: ModelArrays,
    x0: np.ndarray,
    consts: Consts,
    free: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    max_iter: int = MAX_ITER,
) -> RowFits:
    """Compiled projected Newton (dense layout) for every row."""
    jt = tables(a)
    n, ga, pa, const = consts
    B, P = x0.shape
    x = np.array(x0, np.float64, order="C", copy=True)
    g = np.empty((B, P))
    H = np.empty((B, P, P))
    nu = np.empty((B, jt.N))
    out = np.zeros((B, 4))
    _minimize_rows(
        x, jt.rows(B), jt.tables, _c2(n, B), _c2(ga, B), _c2(pa, B), _c1(const, B),
        _ro(free, np.bool_), _c2(lo, B), _c2(hi, B), int(max_iter),
        g, H, nu, out,
    )  # fmt: skip
    return RowFits(x, out[:, 0], out[:, 1], out[:, 2].astype(int), out[:, 3].astype(int), g, H, nu)


def constants(n: np.ndarray, pa: np.ndarray, gsig: np.ndarray, ptau: np.ndarray) -> np.ndarray:
    """Compiled ``Model._constants`` constant, ``(B,)``."""
    out = np.empty(n.shape[0])
    _const_rows(
        _ro(n), _ro(pa), _ro(gsig), _ro(ptau), out,
    )  # fmt: skip
    return out


def masked_inverse(H: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Compiled inverse of the Hessian masked to the free parameters (raises
    ``numpy.linalg.LinAlgError`` if singular)."""
    out: np.ndarray = _masked_inverse(_ro(H), _ro(free))
    return out


def _ro(a: Any, dtype: Any = None) -> np.ndarray:
    """``a`` as a C-contiguous read-only array, for a kernel argument that is only read.

    numba compiles one version of a kernel per argument type, and a read-only array is another
    type than a writable one. The model keeps its arrays read-only while a broadcast or a
    conversion gives a writable copy, so the same kernel was compiled up to three times (about
    12 s each without a warm cache) depending on the batch size. A read-only view costs nothing.
    """
    r = np.ascontiguousarray(a, dtype)
    if r.flags.writeable:
        r = r.view()
        r.flags.writeable = False
    return r


def _rw(x: Any) -> np.ndarray:
    """The parameter points ``x`` as a C-contiguous writable float64 array: the type that the
    Newton kernels, which update their points in place, give the same callee (see :func:`_ro`)."""
    r = np.ascontiguousarray(x, np.float64)
    return r if r.flags.writeable else r.copy()


def _c2(a: np.ndarray, B: int) -> np.ndarray:
    if a.shape[0] != B:
        a = np.broadcast_to(a, (B, *a.shape[1:]))
    return _ro(a)


def _c1(a: np.ndarray, B: int) -> np.ndarray:
    if a.shape[0] != B:
        a = np.broadcast_to(a, (B,))
    return _ro(a)
