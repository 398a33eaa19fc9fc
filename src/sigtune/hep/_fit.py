"""Maximum-likelihood fits: projected Newton on the arrowhead Hessian, batched.

The objective is ``twice_nll = -2 ln L``. Each iteration uses the analytic gradient and Hessian
(:meth:`Model._derivatives`); the Hessian is "arrowhead": a dense block ``H_DD`` for the global
parameters (POI, normfactors, lumi, normsys/histosys alphas, gammas shared across bins) and a
diagonal block ``H_LL`` for per-bin gammas (staterror/shapesys/shapefactor), coupled by
``H_DL``. The Newton step is solved through the Schur complement
``S = H_DD - H_DL H_LL^-1 H_DL^T`` in ``O(n_bins * P_dense^2)``. Box bounds are handled by a
projected Newton / active-set rule (a parameter at a bound whose gradient pushes outwards is
held for that iteration), a backtracking Armijo line search on the projected path, and
damping by the eigenvalues' magnitudes when the Hessian is not positive definite. Anything that
does not converge is refitted with SciPy's L-BFGS-B.

There is one projected-Newton implementation per Hessian layout: the batched NumPy iteration
:func:`_minimize_general` here (arrowhead layout, and every model when numba is missing) and its
compiled twin :func:`sigtune.hep._jit._minimize_row` (dense layout, one row at a time). Both
take every tolerance from :mod:`sigtune.hep._jit` (``EDM_TOL``, ``EIG_FLOOR``, ...). The model
is read through its :class:`~sigtune.hep._arrays.ModelArrays` bundle (``model.arrays``) and its
evaluation methods ``_constants``, ``_f`` and ``_derivatives`` (see ``docs/dev/hep-model.md``).

Uncertainties are ``sqrt(diag(inverse Hessian of nll))`` in the free parameters (fixed
parameters get 0), i.e. ``cov = 2 * inv(H_twice_nll)``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

import numpy as np

from sigtune.hep import _jit
from sigtune.hep._arrays import Consts, Derivs, ModelArrays
from sigtune.hep._exceptions import HepFitError, HepFitWarning
from sigtune.hep._jit import (
    ARMIJO,
    BOUND_STEP,
    EDM_CLEAN,
    EDM_CONV,
    EDM_TOL,
    EIG_FLOOR,
    LS_MAX,
    LS_SLACK,
    LS_T_DEFAULT,
    LS_T_MAX,
    LS_T_MIN,
    MAX_ITER,
    MAX_SADDLE,
    NEG_CURV_CONV,
    NEG_CURV_REL,
    PGRAD_CONV,
    local_floor,
)
from sigtune.hep._model import Model

# ---------------------------------------------------------------------- BLAS threads
# The Newton steps of a small model factorise matrices of a few hundred rows (LAPACK's eigh in
# the damped step, solves, inverses). Multi-threaded OpenBLAS gains nothing there and, on a busy
# machine, loses 10x or more (measured: eigh of the 196 x 196 ttZ Hessian 63 ms with 2 threads,
# 7 ms with 1, on 2 loaded cores; a ttZ hypotest 16 s against 0.65 s). Fits of models whose dense
# block is BLAS_ONE_MIN to SMALL_BLAS wide therefore run with one BLAS thread (threadpoolctl, when it is
# installed); the limit is process-wide, set by the first fit that enters and restored by the
# last one that leaves (threads fitting at once share it). Setting the environment variable
# SIGTUNE_HEP_BLAS_THREADS (to anything) leaves BLAS threads alone.
SMALL_BLAS = 1024
BLAS_ONE_MIN = 100  # narrower: BLAS threads cost little there, the limiter's calls would (~20%
# of a 0.4 ms sbottom fit)
_P = ParamSpec("_P")
_R = TypeVar("_R")
_blas_lock = threading.Lock()
_blas_depth = 0
_blas_limiter: Any = None
_blas_controller: Any = None


def _blas_controller_or_none() -> Any:
    global _blas_controller
    if _blas_controller is None:
        try:
            import scipy.linalg  # noqa: F401  (load SciPy's BLAS, the one numba's LAPACK uses)
            from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - threadpoolctl is in the fast/hep extras
            _blas_controller = False
        else:
            _blas_controller = ThreadpoolController()
    return _blas_controller or None


@contextlib.contextmanager
def _one_blas_thread(model: Model) -> Iterator[None]:
    """Run the block with one BLAS thread when ``model``'s dense block is small, not tiny (see
    ``BLAS_ONE_MIN``, ``SMALL_BLAS``); re-entrant and shared between threads."""
    global _blas_depth, _blas_limiter
    nD = model.arrays.n_dense
    if not BLAS_ONE_MIN <= nD <= SMALL_BLAS or os.environ.get("SIGTUNE_HEP_BLAS_THREADS"):
        yield
        return
    with _blas_lock:
        if _blas_depth == 0:
            ctl = _blas_controller_or_none()
            _blas_limiter = None if ctl is None else ctl.limit(limits=1, user_api="blas")
        _blas_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def _small_blas(func: Callable[Concatenate[Model, _P], _R]) -> Callable[Concatenate[Model, _P], _R]:
    """Decorator: run ``func(model, ...)`` under :func:`_one_blas_thread` ``(model)``."""

    @functools.wraps(func)
    def wrapper(model: Model, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _one_blas_thread(model):
            return func(model, *args, **kwargs)

    return wrapper


__all__ = [
    "BatchFitResult",
    "FitResult",
    "MinimumCheck",
    "StartsFit",
    "asimov_data",
    "check_minimum",
    "fit",
    "fit_batch",
    "fit_from_starts",
]

_BATCH_ARROWHEAD_MIN = 8  # fit_batch switches to the arrowhead layout from this batch size


@dataclass(frozen=True)
class FitResult:
    """Result of :func:`fit`.

    Attributes:
        bestfit: Parameter values at the minimum ``(P,)``.
        errors: Hessian uncertainties ``(P,)`` (0 for fixed parameters; NaN if the Hessian is
            singular; all NaN when ``uncertainties=False``).
        twice_nll: ``-2 ln L`` at the minimum; ``nll`` is half of it.
        converged: Whether the returned point is a minimum: edm below ``EDM_CONV`` (1e-6) and
            every moving parameter's gradient times its standard deviation below
            ``PGRAD_CONV`` (2e-3), no negative curvature (see :func:`check_minimum`).
        edm: Estimated distance to the minimum (nll units).
        n_iter: Newton iterations used.
        time_ms: Wall time of the fit.
        par_names: Parameter names; ``poi_index`` the POI's index (or ``None``).
        message: What the minimiser reports.
        start: The starting point of the returned minimum: ``"init"`` (the given or suggested
            initial values), ``"default"`` (the suggested ones, when ``init`` was given),
            ``"perturbed-<k>"`` (a restart), or in inference ``"warm"``/``"free"``.
        n_fits: Minimisations run (1 unless restarts were needed; see :func:`fit_from_starts`).
    """

    bestfit: np.ndarray
    errors: np.ndarray
    twice_nll: float
    nll: float
    converged: bool
    edm: float
    n_iter: int
    time_ms: float
    par_names: list[str]
    poi_index: int | None
    message: str
    start: str = "init"
    n_fits: int = 1
    _cov_factory: Any = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def covariance(self) -> np.ndarray:
        """``(P, P)`` covariance (inverse Hessian of nll in the free parameters)."""
        if self._cov_factory is None:
            return np.full((len(self.bestfit),) * 2, np.nan)
        return np.asarray(self._cov_factory())

    @functools.cached_property
    def correlation(self) -> np.ndarray:
        """``(P, P)`` correlation matrix (fixed parameters: 1 on the diagonal, 0 elsewhere)."""
        cov = self.covariance
        sd = np.sqrt(np.diag(cov))
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = cov / np.outer(sd, sd)
        corr[sd == 0, :] = 0.0
        corr[:, sd == 0] = 0.0
        np.fill_diagonal(corr, 1.0)
        return np.asarray(corr)

    @property
    def mu(self) -> float:
        """Best-fit POI value."""
        if self.poi_index is None:
            raise HepFitError("the model has no parameter of interest")
        return float(self.bestfit[self.poi_index])

    @property
    def mu_err(self) -> float:
        """Hessian uncertainty of the POI."""
        if self.poi_index is None:
            raise HepFitError("the model has no parameter of interest")
        return float(self.errors[self.poi_index])

    def pulls(self, model: Model) -> dict[str, float]:
        """``(theta_hat - aux) / width`` for every constrained parameter component."""
        out = {}
        aux = model.auxdata
        pos = {
            int(i): int(p)
            for i, p in zip(model.arrays.gauss_par, model.arrays.gauss_aux, strict=True)
        }
        for i, name in enumerate(self.par_names):
            width = model.constraint_width(i)
            if width is None:
                continue
            if i in pos:
                centre = float(aux[pos[i]])
            else:
                centre = 1.0
            out[name] = (float(self.bestfit[i]) - centre) / width
        return out

    def to_metrics(self, prefix: str = "fit/") -> dict[str, float]:
        """Flat metrics: ``mu``, ``mu_err``, ``nll``, ``twice_nll``, ``converged``, ``edm``,
        ``time_ms`` and ``<par>``, ``<par>_err`` for every parameter."""
        out: dict[str, float] = {}
        if self.poi_index is not None:
            out[prefix + "mu"] = self.mu
            out[prefix + "mu_err"] = self.mu_err
        out[prefix + "nll"] = self.nll
        out[prefix + "twice_nll"] = self.twice_nll
        out[prefix + "converged"] = float(self.converged)
        out[prefix + "edm"] = self.edm
        out[prefix + "time_ms"] = self.time_ms
        for name, v, e in zip(self.par_names, self.bestfit, self.errors, strict=True):
            out[prefix + name] = float(v)
            out[prefix + name + "_err"] = float(e)
        return out


@dataclass(frozen=True)
class BatchFitResult:
    """Result of :func:`fit_batch`: one row per data set / stacked model.

    Attributes:
        bestfit: ``(B, P)``; errors ``(B, P)`` (NaN unless ``uncertainties=True``);
        twice_nll, nll, edm: ``(B,)``; converged ``(B,)`` bool; n_iter ``(B,)``;
        time_ms: wall time of the whole batch.
    """

    bestfit: np.ndarray
    errors: np.ndarray
    twice_nll: np.ndarray
    nll: np.ndarray
    converged: np.ndarray
    edm: np.ndarray
    n_iter: np.ndarray
    time_ms: float
    par_names: list[str]
    poi_index: int | None

    def __len__(self) -> int:
        return int(self.bestfit.shape[0])

    @property
    def mu(self) -> np.ndarray:
        """Best-fit POI per row."""
        if self.poi_index is None:
            raise HepFitError("the model has no parameter of interest")
        return np.asarray(self.bestfit[:, self.poi_index])

    def __getitem__(self, i: int) -> FitResult:
        return FitResult(
            bestfit=self.bestfit[i],
            errors=self.errors[i],
            twice_nll=float(self.twice_nll[i]),
            nll=float(self.nll[i]),
            converged=bool(self.converged[i]),
            edm=float(self.edm[i]),
            n_iter=int(self.n_iter[i]),
            time_ms=self.time_ms / len(self),
            par_names=self.par_names,
            poi_index=self.poi_index,
            message="converged" if self.converged[i] else "not converged",
        )


# ---------------------------------------------------------------------- argument handling
def _resolve_index(model: Model, key: int | str) -> int:
    if isinstance(key, str):
        if key in model.par_names:
            return model.par_names.index(key)
        if key in model.parameters:
            sl = model.par_slice(key)
            if sl.stop - sl.start == 1:
                return int(sl.start)
        raise HepFitError(f"unknown parameter {key!r}; parameters: {model.par_names}")
    i = int(key)
    if not 0 <= i < model.n_pars:
        raise HepFitError(f"parameter index {i} out of range [0, {model.n_pars})")
    return i


def _setup(
    model: Model,
    B: int,
    init: Any,
    fixed: Any,
    bounds: Any,
    poi_value: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Initial point ``(B, P)``, free mask ``(P,)``, lower/upper ``(B, P)``."""
    P = model.n_pars
    arr = model.arrays

    def rows(a: np.ndarray) -> np.ndarray:
        return a.copy() if a.shape[0] == B else np.broadcast_to(a, (B, P)).copy()

    x0 = rows(arr.init)
    if init is not None:
        x_in = np.asarray(init, float)
        if x_in.shape[-1:] != (P,):
            raise HepFitError(f"init must have {P} values, got shape {x_in.shape}")
        x0[:] = x_in
    lo = rows(arr.bounds[..., 0])
    hi = rows(arr.bounds[..., 1])
    if bounds is not None:
        if isinstance(bounds, Mapping):
            for key, (b_lo, b_hi) in bounds.items():
                i = _resolve_index(model, key)
                lo[:, i], hi[:, i] = b_lo, b_hi
        else:
            b = np.asarray(bounds, float)
            if b.shape != (P, 2):
                raise HepFitError(f"bounds must have shape ({P}, 2), got {b.shape}")
            lo[:], hi[:] = b[:, 0], b[:, 1]
        if np.any(lo > hi):
            raise HepFitError("every bound must satisfy low <= high")
    free = ~arr.fixed.copy()
    if fixed is not None:
        if isinstance(fixed, Mapping):
            for key, value in fixed.items():
                i = _resolve_index(model, key)
                free[i] = False
                if value is not None:
                    x0[:, i] = value
        else:
            mask = np.asarray(fixed)
            if mask.dtype == bool and mask.shape == (P,):
                free &= ~mask
            else:
                for key in fixed:
                    free[_resolve_index(model, key)] = False
    if poi_value is not None:
        if model.poi_index is None:
            raise HepFitError("poi_value given, but the model has no parameter of interest")
        free[model.poi_index] = False
        x0[:, model.poi_index] = poi_value
    # free parameters start inside their bounds
    x0 = np.where(free, np.clip(x0, lo, hi), x0)
    return x0, free, lo, hi


# ---------------------------------------------------------------------- Newton core
def _masked_system(
    a: ModelArrays,
    g: np.ndarray,
    HDD: np.ndarray,
    HDL: np.ndarray,
    HLL: np.ndarray,
    act: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Restrict the Newton system to the active (moving) parameters ``act`` (B, P)."""
    aD = act[:, a.dense]
    gD = np.where(aD, g[:, a.dense], 0.0)
    mm = aD[:, :, None] & aD[:, None, :]
    HDD = np.where(mm, HDD, 0.0)
    idx = np.arange(a.n_dense)
    HDD[:, idx, idx] = np.where(aD, HDD[:, idx, idx], 1.0)
    if a.n_local:
        aL = act[:, a.local]
        gL = np.where(aL, g[:, a.local], 0.0)
        if HDL.shape[0] == 1:  # one row: zero the inactive rows/columns of a copy (cheaper)
            HDL = HDL.copy()
            HDL[0, ~aD[0], :] = 0.0
            HDL[0][:, ~aL[0]] = 0.0
        else:
            HDL = np.where(aD[:, :, None] & aL[:, None, :], HDL, 0.0)
        HLL = np.where(aL, HLL, 1.0)
    else:
        gL = np.zeros((g.shape[0], 0))
    return gD, gL, HDD, HDL, HLL


def _solve(
    HDD: np.ndarray, HDL: np.ndarray, HLL: np.ndarray, gD: np.ndarray, gL: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve the arrowhead system ``H [dD; dL] = [gD; gL]`` for every batch row.

    Rows whose Hessian is not positive definite are damped (Levenberg-Marquardt): the local
    diagonal is floored and the Schur complement shifted by its most negative eigenvalue.

    Returns:
        ``(dD, dL, neg)`` with ``neg`` ``(B, nD)``: for rows with negative curvature, the
        eigenvector of the lowest eigenvalue scaled by ``1/sqrt(|lowest|)`` (else zeros), used
        to leave saddle points where the gradient vanishes.
    """
    nL = HLL.shape[1]
    if nL:
        HLL = local_floor(HLL)
        if HDL.shape[0] == 1:  # one row: a symmetric rank-k update (half the flops)
            sq = np.sqrt(HLL[0])
            Q = HDL[0] / sq
            Sm = HDD - np.dot(Q, Q.T)[None]
            rhs = gD - (Q @ (gL[0] / sq))[None]
        else:
            R = HDL / HLL[:, None, :]
            Sm = HDD - R @ HDL.transpose(0, 2, 1)
            rhs = gD - (R @ gL[:, :, None])[..., 0]
    else:
        Sm, rhs = HDD, gD
    neg = np.zeros_like(gD)
    try:
        np.linalg.cholesky(Sm)  # positive-definiteness test
    except np.linalg.LinAlgError:
        # some rows are not positive definite: use the eigenvalues by magnitude with a floor
        # relative to the largest (|H|-Newton): a Newton step along the well-curved directions,
        # downhill along negative curvature. (A diagonal shift by the most negative eigenvalue
        # crawls when the Hessian spans many orders of magnitude, e.g. shapesys with tau ~ 1e11.)
        Sm = 0.5 * (Sm + Sm.transpose(0, 2, 1))
        ev, vec = np.linalg.eigh(Sm)
        scale = np.maximum(np.abs(ev).max(axis=1), 1e-12)
        bad = ev[:, 0] < -NEG_CURV_REL * scale
        neg = np.where(bad[:, None], vec[:, :, 0] / np.sqrt(np.abs(ev[:, :1]) + 1e-300), 0.0)
        lam = np.maximum(np.abs(ev), EIG_FLOOR * scale[:, None])
        proj = np.einsum("bij,bi->bj", vec, rhs) / lam
        return np.einsum("bij,bj->bi", vec, proj), _local_step(HDL, HLL, gL, proj, vec), neg
    dD = _lin_solve(Sm, rhs)
    return dD, _local_step(HDL, HLL, gL, dD), neg


def _local_step(
    HDL: np.ndarray,
    HLL: np.ndarray,
    gL: np.ndarray,
    dD: np.ndarray,
    vec: np.ndarray | None = None,
) -> np.ndarray:
    """Back-substitution for the local block, ``(gL - HDL^T dD) / HLL`` (``HLL`` floored as in
    :func:`_solve`); with ``vec`` the dense step is ``vec @ dD`` (eigenvector coordinates)."""
    if vec is not None:
        dD = np.einsum("bij,bj->bi", vec, dD)
    if not HLL.shape[1]:
        return gL
    return np.asarray((gL - (HDL.transpose(0, 2, 1) @ dD[:, :, None])[..., 0]) / local_floor(HLL))


def _lin_solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched ``A x = b``; singular rows get a pseudo-inverse solution."""
    try:
        return np.asarray(np.linalg.solve(A, b[..., None])[..., 0])
    except np.linalg.LinAlgError:
        return np.asarray((np.linalg.pinv(A) @ b[..., None])[..., 0])


def _newton_direction(
    a: ModelArrays,
    g: np.ndarray,
    HDD: np.ndarray,
    HDL: np.ndarray,
    HLL: np.ndarray,
    act: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Newton step (B, P), Newton decrement ``g^T H^-1 g`` (B,) and a negative-curvature
    direction (B, P) (zeros where the Hessian is positive definite)."""
    gD, gL, HDD, HDL, HLL = _masked_system(a, g, HDD, HDL, HLL, act)
    dD, dL, negD = _solve(HDD, HDL, HLL, gD, gL)
    step = np.zeros_like(g)
    step[:, a.dense] = -dD
    neg = np.zeros_like(g)
    neg[:, a.dense] = negD
    if a.n_local:
        step[:, a.local] = -dL
        hll = local_floor(HLL)
        neg[:, a.local] = -(HDL.transpose(0, 2, 1) @ negD[:, :, None])[..., 0] / hll
    dec = (gD * dD).sum(axis=1) + (gL * dL).sum(axis=1)
    return step, dec, neg


class _MinResult(NamedTuple):
    """Result of :func:`_minimize` / :func:`_fit_arrays`: one entry per row."""

    x: np.ndarray  # (B, P) end points
    f: np.ndarray  # (B,) -2 ln L there
    edm: np.ndarray  # (B,) estimated distance to the minimum (last Newton step)
    converged: np.ndarray  # (B,) bool
    n_iter: np.ndarray  # (B,) Newton iterations
    deriv: Derivs  # the last derivatives (see final_derivs of _minimize)


@_small_blas
def _minimize(
    model: Model,
    x0: np.ndarray,
    consts: Consts,
    free: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    max_iter: int = MAX_ITER,
    final_derivs: bool = True,
) -> _MinResult:
    """Projected Newton from ``x0`` (B, P), in the implementation of the model's layout.

    With ``final_derivs=False`` the arrowhead path may return the derivatives of the iterate
    before the last (converging) Newton step, with the final ``f``: callers that need no
    uncertainties save one full evaluation per fit.

    The dense layout without interpolation kinks runs the compiled row iteration
    (:func:`_minimize_jit`) when numba is there; everything else (and any row whose line search
    stalls there) runs :func:`_minimize_general`.
    """
    a = model.arrays
    if _jit.ENABLED and a.dense_layout and not a.kink.any():
        return _minimize_jit(model, x0, consts, free, lo, hi, max_iter)
    return _minimize_general(model, x0, consts, free, lo, hi, max_iter, final_derivs)


def _minimize_jit(
    model: Model,
    x0: np.ndarray,
    consts: Consts,
    free: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    max_iter: int = MAX_ITER,
) -> _MinResult:
    """The compiled projected Newton (:func:`sigtune.hep._jit.minimize`), row by row.

    Rows whose line search stalls continue in :func:`_minimize_general` from where they stopped;
    a likelihood that is not finite at the start goes there too (which raises).
    """
    r = _jit.minimize(model.arrays, x0, consts, free, lo, hi, max_iter)
    if np.any(r.status == 2):
        return _minimize_general(model, x0, consts, free, lo, hi, max_iter)  # raises
    B, P = r.x.shape
    x, f, edm, n_iter, g, H, nu = r.x, r.f, r.edm, r.n_iter, r.g, r.H, r.nu
    conv = edm < EDM_CLEAN
    for b in np.flatnonzero(r.status == 1):
        m1 = _row_model(model, int(b))
        sub = _minimize_general(
            m1,
            x[b : b + 1],
            consts.row(int(b)),
            free,
            lo[b : b + 1],
            hi[b : b + 1],
            max_iter - int(n_iter[b]),
        )
        x[b], f[b], edm[b], conv[b] = sub.x[0], sub.f[0], sub.edm[0], sub.converged[0]
        n_iter[b] += sub.n_iter[0]
        g[b], H[b], nu[b] = sub.deriv.g[0], sub.deriv.hdd[0], sub.deriv.nu[0]
    deriv = Derivs(f, g, H, np.zeros((B, P, 0)), np.zeros((B, 0)), nu)
    return _MinResult(x, f, edm, conv, n_iter, deriv)


def _minimize_general(
    model: Model,
    x0: np.ndarray,
    consts: Consts,
    free: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    max_iter: int = MAX_ITER,
    final_derivs: bool = True,
) -> _MinResult:
    """Batched projected Newton (both layouts; the one for the arrowhead layout).

    Active set: a free parameter at a bound whose gradient points outwards is held for the
    iteration. Step: Newton on the active system (:func:`_newton_direction`), damped where the
    Hessian is not positive definite; at a saddle point (tiny step, negative curvature) a step
    along the lowest eigenvector. Line search: Armijo on the projected path, first retry at the
    minimum of the quadratic through f(0), f'(0), f(1), then halving. Stop: edm below
    ``EDM_TOL``, a stalled line search, or (kinks) three steps without decrease.
    """
    x = x0
    B = x.shape[0]
    deriv = model._derivatives(x, consts)
    f, g = deriv.f, deriv.g
    if not np.all(np.isfinite(f)):
        bad = int(np.flatnonzero(~np.isfinite(f))[0])
        raise HepFitError(
            f"-2 ln L is not finite at the initial parameters (row {bad}): an expected rate is "
            "<= 0 in a bin with observed events; change init or bounds"
        )
    done = np.zeros(B, bool)
    edm = np.full(B, np.inf)
    n_iter = np.zeros(B, int)
    stalled = np.zeros(B, bool)
    flat = np.zeros(B, int)  # consecutive iterations without a meaningful decrease of f
    n_saddle = np.zeros(B, int)
    a = model.arrays
    kink = a.kink  # parameters whose interpolation has a kink at 0
    has_kink = bool(kink.any())
    lo_eff, hi_eff = lo, hi
    for _ in range(max_iter):
        if has_kink:
            # treat the kink at 0 like a bound from the current side, so that a minimum
            # sitting on the kink is reached exactly instead of by oscillation; at exactly 0
            # the gradient is the right-hand one: if it does not point right, look left
            at0 = kink & free & (x == 0.0) & (g >= 0.0) & ~done[:, None]
            if at0.any():
                x = np.where(at0, -1e-12, x)
                deriv = model._derivatives(x, consts)
                f, g = deriv.f, deriv.g
            lo_eff = np.where(kink & (x > 0), np.maximum(lo, 0.0), lo)
            hi_eff = np.where(kink & (x < 0), np.minimum(hi, 0.0), hi)
        at_lo = (x <= lo_eff) & (g > 0)
        at_hi = (x >= hi_eff) & (g < 0)
        act = free[None, :] & ~at_lo & ~at_hi & ~done[:, None]
        step, dec, neg = _newton_direction(a, g, deriv.hdd, deriv.hdl, deriv.hll, act)
        edm_now = np.where(done, edm, 0.25 * np.abs(dec))
        edm = edm_now
        small = edm_now < EDM_TOL
        # a vanishing gradient with negative curvature is a saddle point, not a minimum:
        # step along the negative-curvature direction (downhill side of the gradient)
        saddle = small & ~done & (np.abs(neg).sum(axis=1) > 0) & (n_saddle < MAX_SADDLE)
        if saddle.any():
            sign = np.where((g * neg).sum(axis=1) > 0, -1.0, 1.0)
            step = np.where(saddle[:, None], sign[:, None] * neg, step)
            small &= ~saddle
            n_saddle += saddle
        n_iter += ~done
        # line search on the projected path
        t = np.ones(B)
        x_new = np.where(free, np.clip(x + step, lo_eff, hi_eff), x)
        # the step that converges every row: f decides the line search, the derivatives at
        # the new point are only needed when the caller asks for them
        last = not final_derivs and bool((small | done).all())
        if last:
            f_new = model._f(x_new, None, consts)
        else:
            d_new = model._derivatives(x_new, consts)
            f_new = d_new[0]
        slack = LS_SLACK * (1.0 + np.abs(f))
        ok = (f_new <= f + ARMIJO * np.einsum("bi,bi->b", g, x_new - x) + slack) | done
        ok &= np.isfinite(f_new) | done
        if not np.all(ok):
            bad = ~ok
            # first retry: minimiser of the quadratic through f(0), f'(0) and f(1)
            slope = np.einsum("bi,bi->b", g, x_new - x)
            with np.errstate(divide="ignore", invalid="ignore"):
                curv = f_new - f - slope
                t_q = np.where(np.isfinite(f_new) & (curv > 0), -slope / (2.0 * curv), LS_T_DEFAULT)
            t_first = np.clip(np.nan_to_num(t_q, nan=LS_T_DEFAULT), LS_T_MIN, LS_T_MAX)
            if BOUND_STEP:
                # first the step up to the first bound it crosses that the gradient points out
                # of, unbent (see _jit.BOUND_STEP)
                with np.errstate(divide="ignore", invalid="ignore"):
                    out_hi = free & (step > 0) & (x + step > hi_eff) & (g < 0)
                    out_lo = free & (step < 0) & (x + step < lo_eff) & (g > 0)
                    ratio = np.where(out_hi, (hi_eff - x) / step, np.inf)
                    ratio = np.where(out_lo, (lo_eff - x) / step, ratio)
                t_b = ratio.min(axis=1)
                try_b = bad & (t_b > 0) & (t_b < 1)
                if try_b.any():
                    t_b = np.where(try_b, t_b, 0.0)  # inf where no bound is crossed
                    x_try = np.where(free, np.clip(x + t_b[:, None] * step, lo_eff, hi_eff), x)
                    f_try = model._f(x_try, None, consts)
                    good = (
                        try_b
                        & (f_try <= f + ARMIJO * np.einsum("bi,bi->b", g, x_try - x) + slack)
                        & np.isfinite(f_try)
                    )
                    x_new = np.where(good[:, None], x_try, x_new)
                    t = np.where(good, t_b, t)
                    bad &= ~good
            for _ls in range(LS_MAX):
                if not bad.any():
                    break
                t = np.where(bad, t_first * t if _ls == 0 else 0.5 * t, t)
                x_try = np.where(free, np.clip(x + t[:, None] * step, lo_eff, hi_eff), x)
                f_try = model._f(x_try, None, consts)
                good = (
                    f_try <= f + ARMIJO * np.einsum("bi,bi->b", g, x_try - x) + slack
                ) & np.isfinite(f_try)
                x_new = np.where((bad & good)[:, None], x_try, x_new)
                bad &= ~good
                if not bad.any():
                    break
            stalled |= bad
            x_new = np.where(bad[:, None], x, x_new)
            if not last:
                d_new = model._derivatives(x_new, consts)
            else:
                f_new = np.where(bad, f, model._f(x_new, None, consts))
        x = x_new
        deriv = deriv._replace(f=f_new) if last else d_new
        f_old = f
        f, g = deriv.f, deriv.g
        # a minimum on a kink of the interpolation (code0/code1 at alpha = 0) has no small
        # gradient: stop once f no longer decreases
        if has_kink:
            flat = np.where(f_old - f < 1e-11 * (1.0 + np.abs(f)), flat + 1, 0)
        done |= small | stalled | (flat >= 3)
        if done.all():
            break
    converged = (edm < EDM_CLEAN) | (flat >= 3)
    return _MinResult(x, f, edm, converged, n_iter, deriv)


@_small_blas
def _errors_and_cov(
    model: Model, deriv: Derivs, free: np.ndarray, want_cov: bool
) -> tuple[np.ndarray, Any]:
    """Diagonal errors (B, P) and, for B == 1, a covariance factory."""
    a = model.arrays
    g, HDD, HDL, HLL = deriv.g, deriv.hdd, deriv.hdl, deriv.hll
    B, P = g.shape
    if B == 1 and a.dense_layout:
        return _errors_and_cov_single(HDD[0], free, want_cov)
    act = np.broadcast_to(free, (B, P))
    _, _, HDD, HDL, HLL = _masked_system(a, g, HDD, HDL, HLL, act)
    nL = a.n_local
    aD = free[a.dense]
    aL = free[a.local]
    errors = np.full((B, P), np.nan)
    try:
        if nL:
            if np.any(HLL <= 0):
                raise np.linalg.LinAlgError("local block not positive")
            R = HDL / HLL[:, None, :]
            Sm = HDD - R @ HDL.transpose(0, 2, 1)
        else:
            R = HDL
            Sm = HDD
        Sinv = np.linalg.inv(Sm)
    except np.linalg.LinAlgError:
        return errors, None
    varD = 2.0 * np.diagonal(Sinv, axis1=1, axis2=2)
    errors[:, a.dense] = np.sqrt(np.where(aD & (varD > 0), varD, np.where(aD, np.nan, 0.0)))
    if nL:
        varL = 2.0 * (1.0 / HLL + np.einsum("bil,bij,bjl->bl", R, Sinv, R))
        errors[:, a.local] = np.sqrt(np.where(aL & (varL > 0), varL, np.where(aL, np.nan, 0.0)))

    factory = None
    if want_cov and B == 1:
        dense, local = a.dense, a.local
        R0, S0, H0 = R[0], Sinv[0], HLL[0]

        def factory() -> np.ndarray:
            cov = np.zeros((P, P))
            cov[np.ix_(dense, dense)] = 2.0 * S0
            if nL:
                off = -2.0 * S0 @ R0
                cov[np.ix_(dense, local)] = off
                cov[np.ix_(local, dense)] = off.T
                ll = 2.0 * (R0.T @ S0 @ R0)
                ll[np.arange(nL), np.arange(nL)] += 2.0 / H0
                cov[np.ix_(local, local)] = ll
            fx = ~free
            cov[fx, :] = 0.0
            cov[:, fx] = 0.0
            return cov

    return errors, factory


def _errors_and_cov_single(
    H: np.ndarray, free: np.ndarray, want_cov: bool
) -> tuple[np.ndarray, Any]:
    """:func:`_errors_and_cov` for one row of a dense-engine model (full ``(P, P)`` Hessian):
    the same masked matrix (identity in the fixed parameters) and inverse, without the batch
    and arrowhead bookkeeping."""
    P = H.shape[0]
    errors = np.full((1, P), np.nan)
    fx = ~free
    try:
        if _jit.ENABLED:
            inv = _jit.masked_inverse(H, free)
        else:
            Hm = H.copy()
            Hm[fx, :] = 0.0
            Hm[:, fx] = 0.0
            ifx = np.flatnonzero(fx)
            Hm[ifx, ifx] = 1.0
            inv = np.linalg.inv(Hm)
    except np.linalg.LinAlgError:
        return errors, None
    var = 2.0 * np.diagonal(inv)
    errors[0] = np.sqrt(np.where(free & (var > 0), var, np.where(free, np.nan, 0.0)))
    factory = None
    if want_cov:

        def factory() -> np.ndarray:
            cov = 2.0 * inv
            cov[fx, :] = 0.0
            cov[:, fx] = 0.0
            return cov

    return errors, factory


@_small_blas
def _scipy_refit(
    model: Model,
    x0: np.ndarray,
    consts: Consts,
    free: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> tuple[np.ndarray, float, bool]:
    """L-BFGS-B fallback for one row (B == 1 arrays)."""
    from scipy.optimize import minimize  # only needed on the rare fallback path

    idx = np.flatnonzero(free)
    base = x0.copy()

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        x = base.copy()
        x[0, idx] = z
        d = model._derivatives(x, consts)
        f = float(d.f[0])
        if not math.isfinite(f):
            return 1e300, np.zeros_like(z)
        return f, d.g[0, idx]

    res = minimize(
        fun,
        base[0, idx],
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(lo[0, idx], hi[0, idx], strict=True)),
        options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10},
    )
    x = base.copy()
    x[0, idx] = res.x
    return x, float(res.fun), bool(res.success)


def _row_model(model: Model, i: int) -> Model:
    """Model row ``i`` of stacked models (the model itself when it is not stacked)."""
    if model.batch_size == 1:
        return model
    return model._with_numbers(1, **model.arrays.row(i).numbers())


def _fit_arrays(
    model: Model,
    x0: np.ndarray,
    free: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    consts: Consts,
    final_derivs: bool = True,
) -> _MinResult:
    """Minimise from prepared arrays (``_setup`` output and ``model._constants``); rows that do
    not converge are refitted with L-BFGS-B and polished with Newton. ``final_derivs``: see
    :func:`_minimize`."""
    x, f, edm, conv, n_iter, deriv = _minimize(
        model, x0, consts, free, lo, hi, final_derivs=final_derivs
    )
    refit = ~conv
    if refit.any():
        for b in np.flatnonzero(refit):
            m1 = _row_model(model, int(b))
            c1 = consts.row(int(b))
            xb, fb, _ = _scipy_refit(m1, x[b : b + 1], c1, free, lo[b : b + 1], hi[b : b + 1])
            if fb <= f[b]:
                # polish with Newton from the L-BFGS-B point
                polish = _minimize(m1, xb, c1, free, lo[b : b + 1], hi[b : b + 1])
                if polish.f[0] <= fb:
                    xb, fb = polish.x, float(polish.f[0])
                x[b], f[b] = xb[0], fb
        deriv = model._derivatives(x, consts)
        # converged means a minimum at the returned point (not the fallback's own "success")
        chk = check_minimum(model, x, deriv, free, lo, hi)
        conv = np.where(refit, chk.ok, conv)
        edm = np.where(refit, chk.edm, edm)
    return _MinResult(x, f, edm, conv, n_iter, deriv)


@dataclass(frozen=True)
class MinimumCheck:
    """Whether points are minima (:func:`check_minimum`), one value per row.

    Attributes:
        ok: ``edm < EDM_CONV``, scaled projected gradient ``< PGRAD_CONV`` and no negative
            curvature in the moving parameters.
        edm: Estimated distance to the minimum, ``g^T H^-1 g / 4`` in nll units (on the
            parameters not held at a bound).
        pgrad: Largest ``|g_i| * sigma_i`` over those parameters: the change of ``-2 ln L``
            over one standard deviation ``sigma_i = sqrt(2 / H_ii)`` (at most the bound range).
        min_eig: Lowest eigenvalue of the Hessian of ``-2 ln L`` in those parameters (relative
            to the largest; ``>= 0`` when positive definite).
    """

    ok: np.ndarray
    edm: np.ndarray
    pgrad: np.ndarray
    min_eig: np.ndarray


@_small_blas
def check_minimum(
    model: Model,
    x: np.ndarray,
    deriv: Derivs,
    free: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> MinimumCheck:
    """Convergence criterion at points ``x`` (B, P) with their derivatives ``deriv``.

    A parameter at a bound whose gradient points outwards is held (projected gradient 0). On
    the others: the Newton decrement (edm), the scaled gradient and the curvature.
    """
    a = model.arrays
    g = deriv.g
    B, P = g.shape
    at_lo = (x <= lo) & (g > 0)
    at_hi = (x >= hi) & (g < 0)
    act = np.broadcast_to(free, (B, P)) & ~at_lo & ~at_hi
    gD, gL, HDD, HDL, HLL = _masked_system(a, g, deriv.hdd, deriv.hdl, deriv.hll, act)
    edm = np.full(B, np.inf)
    pgrad = np.full(B, np.inf)
    min_eig = np.full(B, -np.inf)
    for b in range(B):
        aD = act[b, a.dense]
        aL = act[b, a.local] if a.n_local else np.zeros(0, bool)
        gd, gl = gD[b, aD], gL[b, aL] if a.n_local else np.zeros(0)
        hdd = HDD[b][np.ix_(aD, aD)]
        hll = HLL[b, aL] if a.n_local else np.zeros(0)
        hdl = HDL[b][np.ix_(aD, aL)] if a.n_local else np.zeros((gd.size, 0))
        diag = np.concatenate([np.diagonal(hdd), hll])
        grad = np.concatenate([gd, gl])
        if not (np.all(np.isfinite(grad)) and np.all(np.isfinite(diag))):
            continue
        if hll.size and np.any(hll <= 0):
            min_eig[b] = float(hll.min())
            continue
        Sm = hdd - (hdl / hll) @ hdl.T if hll.size else hdd
        rhs = gd - hdl @ (gl / hll) if hll.size else gd
        Sm = 0.5 * (Sm + Sm.T)
        if Sm.size:
            ev, vec = np.linalg.eigh(Sm)
            scale = max(float(np.abs(ev).max()), float(np.abs(hll).max()) if hll.size else 0.0)
            scale = max(scale, 1e-300)
            min_eig[b] = float(ev[0]) / scale
            if min_eig[b] <= NEG_CURV_CONV:
                continue
            # flat directions (|ev| ~ 0) count with a floored curvature: their gradient must vanish
            dD = vec @ ((vec.T @ rhs) / np.maximum(ev, EIG_FLOOR * scale))
        else:
            min_eig[b] = 1.0
            dD = np.zeros(0)
        dL = (gl - hdl.T @ dD) / hll if hll.size else np.zeros(0)
        edm[b] = 0.25 * abs(float(gd @ dD + gl @ dL))
        idx = np.flatnonzero(act[b])
        # (order of idx: dense then local, as grad/diag are built)
        rng = np.concatenate([(hi[b] - lo[b])[a.dense][aD], (hi[b] - lo[b])[a.local][aL]])
        with np.errstate(divide="ignore"):
            sigma = np.minimum(np.sqrt(2.0 / np.maximum(diag, 1e-300)), rng)
        pgrad[b] = float(np.max(np.abs(grad) * sigma)) if idx.size else 0.0
    ok = (edm < EDM_CONV) & (pgrad < PGRAD_CONV) & (min_eig > NEG_CURV_CONV)
    return MinimumCheck(ok=ok, edm=edm, pgrad=pgrad, min_eig=min_eig)


@dataclass(frozen=True, eq=False)
class StartsFit:
    """The lowest minimum of :func:`fit_from_starts` (one row)."""

    x: np.ndarray
    twice_nll: float
    edm: float
    converged: bool
    n_iter: int
    deriv: Derivs
    start: str
    n_fits: int


def strict_mode(strict: bool | None = None) -> bool:
    """``strict`` if given, else whether ``SIGTUNE_HEP_STRICT`` is set to 1/true/yes."""
    if strict is not None:
        return bool(strict)
    return os.environ.get("SIGTUNE_HEP_STRICT", "0").strip().lower() in ("1", "true", "yes")


N_RESTARTS = 2  # perturbed restarts after every given start failed to converge
_TIE = 1e-9  # a later start must be lower by this (relative) to replace an earlier minimum


def _at_bound(x: np.ndarray, free: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    return bool(np.any(free & ((x <= lo) | (x >= hi))))


def fit_from_starts(
    model: Model,
    consts: Consts | tuple[np.ndarray, ...],
    starts: Sequence[tuple[str, np.ndarray]],
    free: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    all_starts: bool = False,
    final_derivs: bool = True,
    strict: bool | None = None,
    what: str = "fit",
    bound_ok: np.ndarray | None = None,
) -> StartsFit:
    """Restart policy: the lowest minimum over labelled starting points ``(P,)``.

    Starts run in order. A start where ``-2 ln L`` is not finite is skipped. After a start that
    converged (:func:`check_minimum`) with no free parameter at a bound, the rest are skipped
    unless ``all_starts``. If no start converged, up to :data:`N_RESTARTS` restarts from
    perturbations of the lowest point follow. The result is the lowest minimum (an earlier
    start wins ties); a :class:`~sigtune.hep.HepFitWarning` says when restarts were needed,
    and a result that still did not converge warns (or raises :class:`HepFitError` in strict
    mode, see :func:`strict_mode`).

    Args:
        model, consts: The model and ``model._constants`` of one data row.
        starts: ``(label, start)`` pairs; a start is clipped into the bounds.
        free: ``(P,)`` mask of moving parameters; ``lo``, ``hi``: ``(1, P)`` bounds.
        all_starts: Run every start (the fits whose result feeds Asimov data or a test
            statistic of an expected result).
        final_derivs: See :func:`_minimize`.
        strict: See :func:`strict_mode`.
        what: The fit's name in messages.
        bound_ok: ``(P,)`` parameters expected at a bound (e.g. at a bound in the free fit
            too), which do not make a converged result suspicious.
    """
    consts = Consts(*consts)
    best: StartsFit | None = None
    n_fits = 0
    first_failed = False

    def run(label: str, start: np.ndarray) -> bool:
        """Fit from ``start``; True if it ran (finite start)."""
        nonlocal best, n_fits, first_failed
        x0 = np.where(free, np.clip(start, lo[0], hi[0]), start)[None]
        if not math.isfinite(float(model._f(x0, None, consts)[0])):
            return False
        x, f, edm, conv, n_iter, deriv = _fit_arrays(
            model, x0, free, lo.copy(), hi.copy(), consts, final_derivs
        )
        n_fits += 1
        cand = StartsFit(
            x[0], float(f[0]), float(edm[0]), bool(conv[0]), int(n_iter[0]), deriv, label, n_fits
        )
        if n_fits == 1 and not cand.converged:
            first_failed = True
        if best is None or cand.twice_nll < best.twice_nll - _TIE * (1.0 + abs(best.twice_nll)):
            best = cand
        elif cand.twice_nll <= best.twice_nll + _TIE * (1.0 + abs(best.twice_nll)):
            if cand.converged and not best.converged:  # the same minimum, certified here
                best = cand
        return True

    for label, start in starts:
        run(label, np.asarray(start, np.float64))
        b = best
        if b is not None and not all_starts and b.converged:
            watch = free if bound_ok is None else free & ~bound_ok
            if not _at_bound(b.x, watch, lo[0], hi[0]):
                break
    if best is None:
        raise HepFitError(
            f"{what}: -2 ln L is not finite at any starting point ({', '.join(s[0] for s in starts)}): "
            "an expected rate is <= 0 in a bin with observed events; change init or bounds"
        )
    rng = np.random.default_rng(20261205)
    k = 0
    while not best.converged and k < N_RESTARTS:
        k += 1
        width = np.minimum(0.1 * (hi[0] - lo[0]), np.maximum(0.1 * np.abs(best.x), 0.1))
        run(f"perturbed-{k}", best.x + np.where(free, rng.normal(size=best.x.shape) * width, 0.0))
    best = StartsFit(**{**best.__dict__, "n_fits": n_fits})
    if not best.converged:
        msg = (
            f"{what} did not converge after {n_fits} starts: edm = {best.edm:.3g} at the lowest "
            f"point (-2 ln L = {best.twice_nll:.6f}, from the {best.start!r} start)"
        )
        if strict_mode(strict):
            raise HepFitError(msg + "; unset SIGTUNE_HEP_STRICT to get the result with a warning")
        warnings.warn(msg, HepFitWarning, stacklevel=3)
    elif first_failed:
        warnings.warn(
            f"{what}: the first start did not converge; the minimum comes from the "
            f"{best.start!r} start ({n_fits} fits)",
            HepFitWarning,
            stacklevel=3,
        )
    return best


def _run(
    model: Model,
    data: np.ndarray,
    init: Any,
    fixed: Any,
    bounds: Any,
    poi_value: Any,
    uncertainties: bool,
) -> tuple[_MinResult, np.ndarray]:
    """Fit every row of ``data`` (B, n) from the setup's start; the result and the free mask."""
    B = data.shape[0]
    if model.batch_size not in (1, B):
        raise HepFitError(
            f"the stacked model holds {model.batch_size} models but the data batch has {B} rows"
        )
    x0, free, lo, hi = _setup(model, B, init, fixed, bounds, poi_value)
    consts = model._constants(data)
    return _fit_arrays(model, x0, free, lo, hi, consts), free


def fit(
    model: Model,
    data: Any,
    *,
    init: Any = None,
    fixed: Mapping[int | str, float | None] | Sequence[int | str] | np.ndarray | None = None,
    bounds: Any = None,
    poi_value: float | None = None,
    uncertainties: bool = True,
    strict: bool | None = None,
) -> FitResult:
    """Maximum-likelihood fit (minimum of ``-2 ln L``).

    A fit that does not reach a minimum (:func:`check_minimum`) is restarted, from the
    suggested initial values when ``init`` was given, then from perturbed points (see
    :func:`fit_from_starts`); ``start`` and ``n_fits`` of the result say what it took.

    Args:
        model: The model.
        data: Full data vector ``(n_main + n_aux,)``: main bins then auxdata.
        init: Starting values ``(P,)``; default ``model.suggested_init()``.
        fixed: ``{name or index: value}`` (value ``None`` keeps the init), a list of names /
            indices, or a boolean mask; added to the model's own fixed parameters.
        bounds: ``(P, 2)`` array or ``{name or index: (low, high)}``; default the model's.
        poi_value: Fix the POI at this value (conditional fit).
        uncertainties: Compute Hessian uncertainties and the (lazy) covariance.
        strict: Raise :class:`HepFitError` instead of warning when no minimum is reached
            (default: the ``SIGTUNE_HEP_STRICT`` environment variable).

    Returns:
        FitResult.

    Raises:
        HepFitError: Bad data or arguments, a likelihood that is not finite at every start, or
            (strict mode) no minimum reached.

    Warns:
        HepFitWarning: Restarts were needed, or no minimum was reached.

    Example:
        >>> res = fit(model, data)                       # doctest: +SKIP
        >>> res.mu, res.mu_err, res.twice_nll            # doctest: +SKIP
    """
    t0 = time.perf_counter()
    if model.batch_size != 1:
        raise HepFitError("this model stacks several models; fit it with fit_batch")
    d = model._check_data(data)
    if d.ndim != 1:
        raise HepFitError("fit takes one data vector; use fit_batch for a batch")
    x0, free, lo, hi = _setup(model, 1, init, fixed, bounds, poi_value)
    consts = model._constants(d[None])
    starts = [("init", x0[0])]
    if init is not None:
        # (fixed parameters keep their given values)
        default = _setup(model, 1, None, fixed, bounds, poi_value)[0][0]
        starts.append(("default", np.where(free, default, x0[0])))
    best = fit_from_starts(model, consts, starts, free, lo, hi, strict=strict)
    x, f, edm = best.x[None], np.array([best.twice_nll]), np.array([best.edm])
    conv, n_iter, deriv = np.array([best.converged]), np.array([best.n_iter]), best.deriv
    if uncertainties:
        errors, factory = _errors_and_cov(model, deriv, free, True)
    else:
        errors, factory = np.full((1, model.n_pars), np.nan), None
    tms = (time.perf_counter() - t0) * 1e3
    return FitResult(
        bestfit=x[0],
        errors=errors[0],
        twice_nll=float(f[0]),
        nll=0.5 * float(f[0]),
        converged=bool(conv[0]),
        edm=float(edm[0]),
        n_iter=int(n_iter[0]),
        time_ms=tms,
        par_names=list(model.par_names),
        poi_index=model.poi_index,
        message="converged" if conv[0] else "not converged (no minimum at the returned point)",
        start=best.start,
        n_fits=best.n_fits,
        _cov_factory=factory,
    )


def fit_batch(
    model: Model,
    data_batch: Any,
    *,
    init: Any = None,
    fixed: Mapping[int | str, float | None] | Sequence[int | str] | np.ndarray | None = None,
    bounds: Any = None,
    poi_value: float | np.ndarray | None = None,
    uncertainties: bool = False,
) -> BatchFitResult:
    """Fit ``B`` data sets at once (toys), or ``B`` stacked models (see :func:`stack_models`).

    Args:
        model: A model, or a stack of ``B`` same-structure models.
        data_batch: ``(B, n)`` data vectors; row ``i`` is fitted with model ``i`` if stacked.
        init: ``(P,)`` or ``(B, P)`` starting values.
        fixed, bounds: As in :func:`fit` (shared by all rows).
        poi_value: Fix the POI, a scalar or one value per row ``(B,)``.
        uncertainties: Also compute Hessian uncertainties per row.

    Returns:
        BatchFitResult.
    """
    t0 = time.perf_counter()
    d = model._check_data(data_batch)
    if d.ndim != 2:
        raise HepFitError("fit_batch takes a (B, n) array of data vectors")
    if poi_value is not None:
        pv = np.asarray(poi_value, float)
        if pv.ndim == 1:
            if pv.shape != (d.shape[0],):
                raise HepFitError(f"poi_value must be a scalar or have {d.shape[0]} values")
            if init is None:
                init = np.broadcast_to(model.arrays.init, (d.shape[0], model.n_pars)).copy()
            else:
                init = np.broadcast_to(np.asarray(init, float), (d.shape[0], model.n_pars)).copy()
            init[:, model.poi_index] = pv
            fixed = _with_poi_fixed(model, fixed)
            poi_value = None
    # large batches: the sparse arrowhead layout beats the dense per-entry tensors
    # (the compiled dense engine loops over rows: it does not need the arrowhead layout)
    use_arrow = d.shape[0] >= _BATCH_ARROWHEAD_MIN and not (
        _jit.ENABLED and model.arrays.dense_layout
    )
    engine = model._arrow if use_arrow else model
    (x, f, edm, conv, n_iter, deriv), free = _run(
        engine, d, init, fixed, bounds, poi_value, uncertainties
    )
    if uncertainties:
        errors, _ = _errors_and_cov(engine, deriv, free, False)
    else:
        errors = np.full_like(x, np.nan)
    tms = (time.perf_counter() - t0) * 1e3
    return BatchFitResult(
        bestfit=x,
        errors=errors,
        twice_nll=f,
        nll=0.5 * f,
        converged=conv,
        edm=edm,
        n_iter=n_iter,
        time_ms=tms,
        par_names=list(model.par_names),
        poi_index=model.poi_index,
    )


def profile_start(
    model: Model,
    pars: np.ndarray,
    deriv: Derivs | tuple[np.ndarray, ...],
    free: np.ndarray,
    poi: int,
    mu: float,
) -> np.ndarray | None:
    """Linear prediction of the conditional minimum at POI ``mu`` from a point ``pars`` that
    minimises ``-2 ln L`` in the ``free`` parameters: ``d theta = -H_tt^-1 H_tmu (mu - pars[poi])``
    with the Hessian blocks ``deriv`` at ``pars`` (row 0). ``None`` if it is not finite."""
    dmu = float(mu) - float(pars[poi])
    a = model.arrays
    deriv = Derivs(*deriv)
    HDD, HDL, HLL = deriv.hdd[:1], deriv.hdl[:1], deriv.hll[:1]
    dp = int(a.dpos[poi])
    if dp < 0:
        return None
    col = np.zeros(model.n_pars)
    col[a.dense] = HDD[0][:, dp]
    if a.n_local:
        col[a.local] = HDL[0][dp, :]
    step, _, _ = _newton_direction(a, col[None] * dmu, HDD, HDL, HLL, free[None])
    out = pars + step[0]
    return out if np.all(np.isfinite(out)) else None


def _with_poi_fixed(model: Model, fixed: Any) -> Any:
    if model.poi_index is None:
        raise HepFitError("poi_value given, but the model has no parameter of interest")
    if fixed is None:
        return {model.poi_index: None}
    if isinstance(fixed, Mapping):
        out = dict(fixed)
        out[model.poi_index] = None
        return out
    mask = np.asarray(fixed)
    if mask.dtype == bool:
        mask = mask.copy()
        mask[model.poi_index] = True
        return mask
    return [*list(fixed), model.poi_index]


def asimov_data(model: Model, data: Any, poi_value: float) -> np.ndarray:
    """Asimov data: expected main bins and auxdata at the conditional fit to ``data``.

    The nuisance parameters are profiled to the *observed* data with the POI fixed at
    ``poi_value`` (as pyhf's ``generate_asimov_data``); the auxdata are the fitted
    parameters' expected auxiliary measurements (Gaussian: the value; Poisson: ``tau*gamma``).

    Args:
        model: The model (or a stack of models, with ``(B, n)`` data).
        data: ``(n,)`` or ``(B, n)`` observed data.
        poi_value: The POI value of the Asimov hypothesis.

    Returns:
        Array of the same shape as ``data``.
    """
    d = model._check_data(data)
    if d.ndim == 1 and model.batch_size == 1:
        res = fit(model, d, poi_value=poi_value, uncertainties=False)
        return np.asarray(model.expected_data(res.bestfit))
    db = d.reshape(-1, model.n_data)
    if model.batch_size > 1 and db.shape[0] == 1:
        db = np.repeat(db, model.batch_size, axis=0)
    bres = fit_batch(model, db, poi_value=poi_value)
    return np.asarray(model.expected_data(bres.bestfit))
