"""Impact ranking of nuisance parameters on the POI (the TRExFitter / cabinetry definition).

For each constrained, floating nuisance parameter :math:`\\theta` the model is refitted with
:math:`\\theta` fixed at :math:`\\hat\\theta \\pm \\Delta` and every other parameter profiled; the impact is
:math:`\\Delta\\mu^\\pm = \\hat\\mu(\\theta = \\hat\\theta \\pm \\Delta) - \\hat\\mu`.

* pre-fit impact: :math:`\\Delta` is the pre-fit width of the constraint (1 for normsys / histosys,
  :math:`\\sigma_b` for staterror, :math:`1/\\sqrt{\\tau}` for shapesys, :math:`\\sigma_{\\rm lumi}` for lumi);
* post-fit impact: :math:`\\Delta` is the post-fit (Hessian) uncertainty of :math:`\\theta`.

Fixed values are clipped to the parameter bounds. Parameters are ranked by the *total impact*
:math:`\\sqrt{((\\Delta\\mu^+_{\\rm post})^2 + (\\Delta\\mu^-_{\\rm post})^2) / 2}`, the root mean square of the
two post-fit impacts (it equals :math:`|\\Delta\\mu|` for a symmetric impact and does not favour a
parameter whose up and down shifts happen to be asymmetric).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sigtune.hep._fit import fit
from sigtune.hep._results import RankingEntry, RankingResult
from sigtune.hep._validate import FitSetup, HepInputError, check_data, make_setup

log = logging.getLogger(__name__)

__all__ = ["ranking"]


def _refit_mu(
    model: Any,
    data: NDArray[np.float64],
    setup: FitSetup,
    start: NDArray[np.float64],
    index: int,
    value: float,
) -> float:
    fixed = setup.fixed.copy()
    fixed[index] = True
    init = start.copy()
    init[index] = value
    res = fit(model, data, init=init, bounds=setup.bounds, fixed=fixed, uncertainties=False)
    return float(res.bestfit[setup.poi_index])


def ranking(
    model: Any,
    data: ArrayLike,
    *,
    parameters: Sequence[str] | None = None,
    init: ArrayLike | None = None,
    bounds: ArrayLike | None = None,
    fixed: Sequence[bool] | ArrayLike | None = None,
) -> RankingResult:
    """Pre-fit and post-fit impacts of the constrained nuisance parameters on the POI.

    Args:
        model: A :class:`sigtune.hep.Model`.
        data: Observed data (main bins + auxdata).
        parameters: Restrict the ranking to these parameter names (default: every constrained,
            floating parameter).
        init: Initial parameters (default ``model.suggested_init()``).
        bounds: Bounds (default ``model.suggested_bounds()``).
        fixed: Fixed flags (default ``model.suggested_fixed()``).

    Returns:
        A :class:`RankingResult` sorted by decreasing ``total_impact``; ``.top(n)`` gives the first n.

    Raises:
        HepInputError: If a name in ``parameters`` is unknown, unconstrained or fixed.
        HepFitError: If the nominal fit fails.
    """
    setup = make_setup(model, init, bounds, fixed)
    data_arr = check_data(model, data)
    names = list(model.par_names)
    poi = setup.poi_index
    nominal = fit(
        model, data_arr, init=setup.init, bounds=setup.bounds, fixed=setup.fixed, uncertainties=True
    )
    best = np.asarray(nominal.bestfit, dtype=np.float64)
    errors = np.asarray(nominal.errors, dtype=np.float64)
    mu_hat = float(best[poi])
    low, high = (float(b) for b in np.asarray(setup.bounds, dtype=np.float64)[poi])
    if mu_hat <= low + 1e-9 or mu_hat >= high - 1e-9:
        log.warning(
            "ranking: the best-fit POI %s = %g sits at its bound [%g, %g], so impacts towards the "
            "bound are cut to 0; pass wider POI bounds (e.g. a negative lower bound) for a "
            "meaningful ranking",
            names[poi],
            mu_hat,
            low,
            high,
        )

    candidates = [
        i
        for i in range(len(names))
        if i != poi and not setup.fixed[i] and model.constraint_width(i) is not None
    ]
    if parameters is not None:
        wanted = list(parameters)
        index_of = {n: i for i, n in enumerate(names)}
        unknown = [n for n in wanted if n not in index_of]
        if unknown:
            raise HepInputError(f"unknown parameter(s) {unknown}; the model has {names}.")
        not_ranked = [n for n in wanted if index_of[n] not in candidates]
        if not_ranked:
            raise HepInputError(
                f"parameter(s) {not_ranked} are the POI, fixed or unconstrained: impacts need a constraint."
            )
        candidates = [index_of[n] for n in wanted]

    lo, hi = setup.bounds[:, 0], setup.bounds[:, 1]
    entries: list[RankingEntry] = []
    for i in candidates:
        width_pre = float(model.constraint_width(i))
        width_post = float(errors[i])
        impacts: list[float] = []
        for delta in (width_pre, -width_pre, width_post, -width_post):
            value = float(np.clip(best[i] + delta, lo[i], hi[i]))
            impacts.append(_refit_mu(model, data_arr, setup, best, i, value) - mu_hat)
        pre_up, pre_dn, post_up, post_dn = impacts
        entries.append(
            RankingEntry(
                name=names[i],
                index=i,
                theta_hat=float(best[i]),
                postfit_width=width_post,
                prefit_width=width_pre,
                prefit_up=pre_up,
                prefit_down=pre_dn,
                postfit_up=post_up,
                postfit_down=post_dn,
                total_impact=math.sqrt(0.5 * (post_up**2 + post_dn**2)),
            )
        )
    entries.sort(key=lambda e: (-e.total_impact, e.name))
    return RankingResult(
        poi_name=names[poi], mu_hat=mu_hat, mu_err=float(errors[poi]), entries=tuple(entries)
    )
