"""Profile-likelihood scan over the parameter of interest.

At each POI value the nuisance parameters are profiled,
:math:`t_\\mu = -2\\ln\\lambda(\\mu) = -2\\ln L(\\mu, \\hat{\\hat\\theta}) + 2\\ln L(\\hat\\mu, \\hat\\theta)`
(Eq. 8 of arXiv:1007.1727). By Wilks' theorem :math:`t_\\mu` follows a :math:`\\chi^2_1` distribution, so
the 68.27% / 95% confidence intervals are where :math:`t_\\mu` crosses 1 and 3.841. Crossings are
bracketed on the scan grid and then refined by root finding on the profile itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, stats

from sigtune.hep._fit import fit
from sigtune.hep._profile import _Point, _Profile
from sigtune.hep._results import ScanResult
from sigtune.hep._validate import HepInputError, check_data, make_setup

__all__ = ["profile_scan"]

_LEVEL_68 = 1.0
_LEVEL_95 = float(stats.chi2.ppf(0.95, 1))


def _crossing(
    profile: _Profile,
    grid: NDArray[np.float64],
    delta: NDArray[np.float64],
    level: float,
    side: str,
) -> float:
    """POI value where t_mu = level on one side of mu_hat (NaN if the grid never reaches it)."""
    mu_hat = profile.mu_hat
    if side == "low":
        idx = np.flatnonzero(grid <= mu_hat)[::-1]
    else:
        idx = np.flatnonzero(grid >= mu_hat)
    inner = mu_hat
    for i in idx:
        f_i = delta[i] - level
        if f_i >= 0.0:
            if f_i == 0.0:
                return float(grid[i])

            def func(mu: float) -> float:
                return profile.tmu(mu) - level

            a, b = sorted((inner, float(grid[i])))
            return float(optimize.brentq(func, a, b, xtol=1e-8 * max(1.0, abs(a), abs(b))))
        inner = float(grid[i])
    return float("nan")


def profile_scan(
    model: Any,
    data: ArrayLike,
    poi_values: Sequence[float] | ArrayLike | None = None,
    *,
    n_points: int = 21,
    init: ArrayLike | None = None,
    bounds: ArrayLike | None = None,
    fixed: Sequence[bool] | ArrayLike | None = None,
) -> ScanResult:
    """Scan :math:`t_\\mu = -2\\ln\\lambda(\\mu)` over the POI and find the 68% and 95% intervals.

    Args:
        model: A :class:`sigtune.hep.Model`.
        data: Observed data (main bins + auxdata).
        poi_values: POI values to scan. None: ``n_points`` values over
            :math:`\\hat\\mu \\pm 3\\sigma_{\\hat\\mu}`, clipped to the POI bounds.
        n_points: Number of points when ``poi_values`` is None (>= 2).
        init: Initial parameters (default ``model.suggested_init()``).
        bounds: Bounds (default ``model.suggested_bounds()``).
        fixed: Fixed flags (default ``model.suggested_fixed()``).

    Returns:
        A :class:`ScanResult`; interval ends the scanned range does not reach are NaN.

    Raises:
        HepInputError: If a POI value lies outside the POI bounds or fewer than 2 points are asked.

    Example:
        >>> res = profile_scan(model, data, np.linspace(0, 3, 31))  # doctest: +SKIP
        >>> res.interval_68                                        # doctest: +SKIP
    """
    setup = make_setup(model, init, bounds, fixed)
    data_arr = check_data(model, data)
    poi = setup.poi_index
    lo_b, hi_b = setup.poi_bounds
    profile = _Profile(model, data_arr, setup)
    if poi_values is None:
        if n_points < 2:
            raise HepInputError(f"n_points must be >= 2, got {n_points}.")
        res = fit(
            model,
            data_arr,
            init=setup.init,
            bounds=setup.bounds,
            fixed=setup.fixed,
            uncertainties=True,
        )
        mu_hat = float(res.bestfit[poi])
        profile.set_free(_Point(np.asarray(res.bestfit, dtype=np.float64), float(res.twice_nll)))
        err = (
            float(res.errors[poi])
            if res.errors is not None and np.isfinite(res.errors[poi])
            else 1.0
        )
        err = err if err > 0 else 1.0
        grid = np.linspace(max(lo_b, mu_hat - 3 * err), min(hi_b, mu_hat + 3 * err), n_points)
    else:
        grid = np.asarray(poi_values, dtype=np.float64).ravel()
        if grid.size < 1:
            raise HepInputError("poi_values must hold at least one value.")
        outside = grid[(grid < lo_b) | (grid > hi_b)]
        if outside.size:
            raise HepInputError(
                f"poi_values {outside.tolist()} lie outside the POI bounds {(lo_b, hi_b)}; widen bounds=."
            )
    # Visit points outward from mu_hat so that each fit warm-starts from a neighbour.
    order = np.argsort(np.abs(grid - profile.mu_hat), kind="stable")
    twice = np.empty_like(grid)
    for i in order:
        twice[i] = profile.conditional(float(grid[i])).twice_nll
    nll_min = min(profile.free.twice_nll, float(np.min(twice)))
    delta = np.clip(twice - profile.free.twice_nll, 0.0, None)
    interval_68 = (
        _crossing(profile, grid, delta, _LEVEL_68, "low"),
        _crossing(profile, grid, delta, _LEVEL_68, "high"),
    )
    interval_95 = (
        _crossing(profile, grid, delta, _LEVEL_95, "low"),
        _crossing(profile, grid, delta, _LEVEL_95, "high"),
    )
    return ScanResult(
        poi_name=str(model.par_names[poi]),
        poi_values=grid,
        twice_nll=twice,
        delta_twice_nll=delta,
        mu_hat=profile.mu_hat,
        twice_nll_min=nll_min,
        interval_68=interval_68,
        interval_95=interval_95,
        converged=np.isfinite(twice),
    )
