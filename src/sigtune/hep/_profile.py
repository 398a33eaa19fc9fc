"""Profile likelihood of one data set: the free fit and cached conditional fits.

Shared by the asymptotic calculator (:mod:`sigtune.hep._infer`), toys (:mod:`sigtune.hep._toys`)
and scans (:mod:`sigtune.hep._scan`), so that none of them imports another.

Which starts each fit uses (see :func:`sigtune.hep._fit.fit_from_starts`): the free fit starts
from the initial values; a conditional fit from the warm start (nearest previous fit, on the
profile's tangent for large models), then, unless that fit converged away from the bounds, the
suggested initial values and the free fit's point. Fits whose result feeds Asimov data or an
expected result (the Asimov-generating fit, every fit to the Asimov data) and every conditional
fit with ``multistart=True`` run all starts and keep the lowest minimum.

Axis starts (small models, at most :data:`AXIS_STARTS_MAX_NPS` constrained free nuisance
parameters): the suggested initial values with one constrained parameter moved by -2, -1, +1 or
+2 times its pre-fit width (:meth:`Model.constraint_width`). With ``multistart=True`` every fit
(the free fit too) runs them all; otherwise they follow the other starts of a conditional fit and
run only when every earlier start was suspicious (not converged, or at a bound). They find
interior minima that no other start reaches (e.g. a histosys at +2.3 sigma while the fit from
the suggested start converges at +0.5 sigma, 3 units of -2 ln L higher).

Checked brackets (the fits to the Asimov data, see :attr:`_Profile.checked_starts`): a POI value
where all starts ran, the warm start's minimum was the lowest and converged is *checked*. A later
fit at a POI value strictly between two neighbouring checked values (no unchecked all-starts
value between them) runs from the warm start alone, unless that fit is suspicious (not converged,
or a parameter at a bound), in which case the other starts follow as usual. The exact free fit of
the Asimov data counts as checked (it is the global minimum). ``multistart=True`` turns this off.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sigtune.hep._fit import fit_from_starts, profile_start
from sigtune.hep._validate import FitSetup

log = logging.getLogger("sigtune.hep._infer")

# Models with at most this many constrained free nuisance parameters get axis starts.
AXIS_STARTS_MAX_NPS = 8
_AXIS_SHIFTS = (-2.0, -1.0, 1.0, 2.0)


@dataclass(frozen=True, eq=False)
class _Point:
    """Result of one (conditional or free) fit: parameters and -2 ln L."""

    pars: NDArray[np.float64]
    twice_nll: float
    # derivatives at ``pars`` (``Model._derivatives`` layout), for profile-predicted starts
    deriv: tuple[NDArray[np.float64], ...] | None = None
    start: str = "init"  # which starting point reached this minimum (see fit_from_starts)
    converged: bool = True


def _free_mask(model: Any, setup: FitSetup) -> NDArray[np.bool_]:
    """Parameters a fit moves: neither fixed by the model nor by the setup (a new array)."""
    out: NDArray[np.bool_] = ~(model._arr.fixed | setup.fixed)
    return out


def _fit_point(
    model: Any,
    data: NDArray[np.float64],
    setup: FitSetup,
    *,
    starts: list[tuple[str, NDArray[np.float64]]] | None = None,
    poi_value: float | None = None,
    consts: tuple[NDArray[np.float64], ...] | None = None,
    all_starts: bool = False,
    bound_ok: NDArray[np.bool_] | None = None,
) -> tuple[_Point, int]:
    """One fit for the test statistics: :func:`sigtune.hep._fit.fit_from_starts` without the
    argument handling of :func:`sigtune.hep.fit` (``data`` is already checked; ``consts`` caches
    ``model._constants``). Returns the point and the number of minimisations run."""
    lo = setup.bounds[None, :, 0]
    hi = setup.bounds[None, :, 1]
    free = _free_mask(model, setup)
    if starts is None:
        starts = [("init", setup.init)]
    if poi_value is not None:
        free[setup.poi_index] = False
        starts = [(label, setup.with_value(x, setup.poi_index, poi_value)) for label, x in starts]
    if consts is None:
        consts = model._constants(data[None])
    what = "free fit" if poi_value is None else f"conditional fit at mu = {poi_value:g}"
    best = fit_from_starts(
        model,
        consts,
        starts,
        free,
        lo,
        hi,
        all_starts=all_starts,
        final_derivs=False,
        what=what,
        bound_ok=bound_ok,
    )
    if not best.converged:
        log.debug("%s did not converge", what)
    point = _Point(best.x, best.twice_nll, best.deriv, best.start, best.converged)
    return point, best.n_fits


class _Profile:
    """Free fit and cached conditional fits of one data set.

    Conditional fits start warm, from the nearest previous fit. Profile likelihoods of real
    analyses can have several local minima (for example some sbottom Region B/C points); with
    ``multistart=True`` every conditional fit also starts cold, from the suggested initial values,
    and keeps the lower minimum (about twice the cost). If a conditional minimum lies below the
    free one, the free fit had stopped in a local minimum and is replaced by that point.
    """

    def __init__(
        self, model: Any, data: NDArray[np.float64], setup: FitSetup, *, multistart: bool = False
    ) -> None:
        self.model = model
        self.data = data
        self.setup = setup
        self.multistart = multistart
        self._free: _Point | None = None
        self._free_is_exact = False
        self._cond: dict[float, _Point] = {}
        self.n_fits = 0
        self._consts: tuple[NDArray[np.float64], ...] | None = None
        # fits that must run all starts may skip them inside a checked bracket (see module doc)
        self.checked_starts = False
        # POI value -> True if all starts ran there and the warm start's minimum was the lowest
        self._all_start_runs: dict[float, bool] = {}
        self._axis: list[tuple[str, NDArray[np.float64]]] | None = None

    @property
    def consts(self) -> tuple[NDArray[np.float64], ...]:
        """``model._constants`` of the data (shared by every fit of this profile)."""
        if self._consts is None:
            self._consts = self.model._constants(self.data[None])
        return self._consts

    def set_free(self, point: _Point, *, exact: bool = False) -> None:
        self._free = point
        self._free_is_exact = exact
        if exact:  # the global minimum: the conditional fit at mu-hat is checked
            self._all_start_runs[float(point.pars[self.setup.poi_index])] = True

    def in_checked_bracket(self, mu: float) -> bool:
        """Whether ``mu`` lies strictly between two neighbouring POI values at which all starts
        ran and the warm start gave the lowest, converged minimum (see the module doc)."""
        below = [m for m in self._all_start_runs if m < mu]
        above = [m for m in self._all_start_runs if m > mu]
        if not below or not above:
            return False
        return self._all_start_runs[max(below)] and self._all_start_runs[min(above)]

    def record_all_starts(self, mu: float, point: _Point) -> None:
        """Note that all starts ran at ``mu`` and which one won."""
        self._all_start_runs[float(mu)] = point.converged and point.start == "warm"

    @property
    def free(self) -> _Point:
        if self._free is None:
            starts = [("init", self.setup.init)]
            if self.multistart:
                starts += self.axis_starts()
            self._free, n = _fit_point(
                self.model,
                self.data,
                self.setup,
                starts=starts,
                consts=self.consts,
                all_starts=self.multistart,
            )
            self.n_fits += n
        return self._free

    def axis_starts(self) -> list[tuple[str, NDArray[np.float64]]]:
        """The suggested initial values with one constrained free nuisance parameter moved by
        -2, -1, +1, +2 pre-fit widths (clipped into the bounds); empty for models with more
        than :data:`AXIS_STARTS_MAX_NPS` such parameters (see the module doc)."""
        if self._axis is None:
            free = _free_mask(self.model, self.setup)
            free[self.setup.poi_index] = False
            widths = [(i, self.model.constraint_width(int(i))) for i in np.flatnonzero(free)]
            nps = [(int(i), w) for i, w in widths if w is not None and w > 0]
            out: list[tuple[str, NDArray[np.float64]]] = []
            if len(nps) <= AXIS_STARTS_MAX_NPS:
                lo, hi = self.setup.bounds[:, 0], self.setup.bounds[:, 1]
                names = self.model.par_names
                for i, w in nps:
                    for k in _AXIS_SHIFTS:
                        x = np.array(self.setup.init, dtype=np.float64)
                        x[i] = min(max(x[i] + k * w, lo[i]), hi[i])
                        if x[i] != self.setup.init[i]:
                            out.append((f"axis {names[i]} {k:+g}", x))
            self._axis = out
        return self._axis

    @property
    def mu_hat(self) -> float:
        return float(self.free.pars[self.setup.poi_index])

    def has(self, mu: float) -> bool:
        return float(mu) in self._cond

    def _shortcut(self, mu: float) -> _Point | None:
        """The free fit itself when it already sits at ``mu`` (typically mu_hat at its bound 0)."""
        poi = self.setup.poi_index
        free = self.free
        if abs(float(free.pars[poi]) - mu) <= 1e-10 * (1.0 + abs(mu)):
            pars = self.setup.with_value(free.pars, poi, mu)
            return _Point(pars, free.twice_nll, start=free.start, converged=free.converged)
        return None

    def free_at_bound(self) -> NDArray[np.bool_]:
        """Parameters at a bound in the free fit (a conditional fit with them at the same
        bounds is not suspicious)."""
        x = self.free.pars
        return np.asarray((x <= self.setup.bounds[:, 0]) | (x >= self.setup.bounds[:, 1]))

    def starts(self, mu: float, *, axis: bool = True) -> list[tuple[str, NDArray[np.float64]]]:
        """Starting points for the conditional fit at ``mu``: warm (from the nearest previous
        fit, on the profile's tangent where available), the suggested initial values, the free
        fit's point and (``axis``) the axis starts; duplicates dropped."""
        poi = self.setup.poi_index
        base = self._nearest(mu)
        warm = self._predicted(base, mu)
        if warm is None:
            warm = self.setup.with_value(base.pars, poi, mu)
        out: list[tuple[str, NDArray[np.float64]]] = [("warm", warm)]
        extra = [("default", self.setup.init), ("free", self.free.pars)]
        if axis:
            extra += self.axis_starts()
        # kept rows in one array: a start is a duplicate if it is within 1e-12 of a kept one in
        # every component (one vectorised comparison; np.allclose per pair was most of the cost
        # of this method with ~100 axis starts)
        kept = np.empty((len(extra) + 1, warm.shape[0]))
        kept[0] = warm
        n = 1
        for label, x in extra:
            x = self.setup.with_value(x, poi, mu)
            if not bool(np.any(np.all(np.abs(kept[:n] - x) <= 1e-12, axis=1))):
                kept[n] = x
                n += 1
                out.append((label, x))
        return out

    def store(self, mu: float, point: _Point) -> _Point:
        """Keep ``point`` as the conditional fit at ``mu``."""
        self._cond[float(mu)] = point
        if (
            not self._free_is_exact
            and self._free is not None
            and point.twice_nll < self._free.twice_nll
        ):
            log.debug(
                "conditional fit at mu=%s lies below the free fit; replacing the free fit", mu
            )
            self._free = point
        return point

    def conditional(self, mu: float, *, all_starts: bool = False) -> _Point:
        """The conditional fit at ``mu`` (cached); ``all_starts`` runs every start of
        :meth:`starts` (as ``multistart`` does for every conditional fit)."""
        mu = float(mu)
        if mu not in self._cond:
            _fit_conditionals([(self, mu)], all_starts=all_starts)
        return self._cond[mu]

    def _nearest(self, mu: float) -> _Point:
        if not self._cond:
            return self.free
        key = min(self._cond, key=lambda m: abs(m - mu))
        if abs(key - mu) < abs(self.mu_hat - mu):
            return self._cond[key]
        return self.free

    def _predicted(self, base: _Point, mu: float) -> NDArray[np.float64] | None:
        """Start for the conditional fit at ``mu`` on the profile's tangent from ``base``:
        ``theta + d theta`` with ``H_tt d theta = -H_tmu (mu - mu_base)`` (Hessian at ``base``,
        a minimum in the nuisance parameters). Halves the Newton iterations of a q0 fit on the
        benchmark models; ``None`` (plain warm start) without derivatives or if not finite.

        Only for the arrowhead (large-model) engine: the compiled small-model Newton iteration
        costs less than the prediction."""
        if base.deriv is None or self.model._dense_engine:
            return None
        poi = self.setup.poi_index
        free = _free_mask(self.model, self.setup)
        free[poi] = False
        start = profile_start(self.model, base.pars, base.deriv, free, poi, mu)
        if start is None:
            return None
        start = np.clip(start, self.setup.bounds[:, 0], self.setup.bounds[:, 1])
        start[poi] = mu
        f = float(self.model._f(start[None], None, self.consts)[0])  # type: ignore[arg-type]
        return start if math.isfinite(f) else None

    def tmu(self, mu: float) -> float:
        """:math:`t_\\mu = -2\\ln\\lambda(\\mu)` clipped at 0 (Eq. 8)."""
        return max(self.conditional(mu).twice_nll - self.free.twice_nll, 0.0)


def _fit_conditionals(
    requests: Sequence[tuple[_Profile, float]], *, all_starts: bool = False
) -> None:
    """Run the conditional fits of several (profile, mu) pairs (see :meth:`_Profile.starts`).

    The warm start alone when its fit converges away from the bounds; every start with
    ``multistart`` or ``all_starts``, except inside a checked bracket of a profile with
    :attr:`_Profile.checked_starts` (see the module doc). (A single :func:`sigtune.hep.fit_batch` call over all
    rows would also work; on the models we measured it was not faster than consecutive fits
    for batches of 2-4 rows.)
    """
    for profile, mu in requests:
        mu = float(mu)
        if profile.has(mu):
            continue
        short = profile._shortcut(mu)
        if short is not None:
            profile.store(mu, short)
            continue
        every = all_starts or profile.multistart or profile.checked_starts
        if every and profile.checked_starts and not profile.multistart:
            every = not profile.in_checked_bracket(mu)
        # axis starts: all with multistart; otherwise only as the last resort of a fit that
        # stops at the first unsuspicious minimum (not where every start runs anyway)
        starts = profile.starts(mu, axis=profile.multistart or not every)
        point, n = _fit_point(
            profile.model,
            profile.data,
            profile.setup,
            starts=starts,
            poi_value=mu,
            consts=profile.consts,
            all_starts=every,
            bound_ok=profile.free_at_bound(),
        )
        profile.n_fits += n
        if every:
            profile.record_all_starts(mu, point)
        profile.store(mu, point)


def _q_needs_fit(profile: _Profile, mu: float, test_stat: str) -> bool:
    """Whether the test statistic at ``mu`` needs the conditional fit (it is 0 by definition
    when mu-hat lies on the other side of ``mu``: Eqs. 12, 14, 16)."""
    mu_hat = profile.mu_hat
    return mu_hat >= mu if test_stat == "q0" else mu_hat <= mu


def _q_from_profile(profile: _Profile, mu: float, test_stat: str) -> float:
    if not _q_needs_fit(profile, mu, test_stat):
        return 0.0
    return profile.tmu(mu)
