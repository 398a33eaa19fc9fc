"""Toy-based (pseudo-experiment) hypothesis tests, with all toys fitted in batched calls.

Pseudo-data follow the full likelihood at the parameters of a conditional fit to the observed data
(the LHC Higgs-combination recipe, ATL-PHYS-PUB-2011-011, also used by pyhf's ``ToyCalculator``):
main bins :math:`n_i \\sim \\mathrm{Pois}(\\nu_i)`, auxiliary data of Gaussian constraints
:math:`a \\sim N(\\theta, \\sigma)` and of Poisson (shapesys) constraints :math:`a \\sim \\mathrm{Pois}(\\tau\\gamma)`.
The signal-plus-background toys are generated at :math:`(\\mu, \\hat{\\hat\\theta}(\\mu))`, the background
toys at :math:`(\\mu_b, \\hat{\\hat\\theta}(\\mu_b))` with :math:`\\mu_b = 0` (:math:`\\mu_b = 1` for ``q0``,
as pyhf labels them). Every toy needs a free and a conditional fit; both run as one
:func:`sigtune.hep.fit_batch` call each over all toys of both hypotheses.

p-values are tail fractions, :math:`\\mathrm{CL}_{s+b} = P(q \\ge q_{\\rm obs} | s+b)`,
:math:`\\mathrm{CL}_b = P(q \\ge q_{\\rm obs} | b)`; the expected band takes the CLs of each background
toy and its 2.3/15.9/50/84.1/97.7 percentiles.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from sigtune.hep._fit import fit_batch
from sigtune.hep._profile import _Profile
from sigtune.hep._results import BAND_N_SIGMA, HypotestResult
from sigtune.hep._validate import FitSetup, HepInputError, check_data, check_test_stat, make_setup

__all__ = ["AuxLayout", "aux_layout", "sample_toys", "toy_hypotest", "toy_test_statistics"]

_BASE = re.compile(r"^(.*)\[\d+\]$")


@dataclass(frozen=True, eq=False)
class AuxLayout:
    """Which parameter and constraint each auxiliary-data entry belongs to.

    Attributes:
        par_index: Parameter index per aux entry, shape (n_aux,).
        poisson: True where the constraint is Poisson (shapesys), else Gaussian.
        sigma: Gaussian width per aux entry (NaN for Poisson entries).
    """

    par_index: NDArray[np.intp]
    poisson: NDArray[np.bool_]
    sigma: NDArray[np.float64]


def aux_layout(model: Any) -> AuxLayout:
    """Map auxiliary data to constrained parameters (auxdata follow the parameter order).

    Raises:
        HepInputError: If the number of constrained parameters does not match the auxdata length.
    """
    idx: list[int] = []
    poisson: list[bool] = []
    sigma: list[float] = []
    for i, name in enumerate(model.par_names):
        width = model.constraint_width(i)
        if width is None:
            continue
        match = _BASE.match(name)
        base = match.group(1) if match else name
        is_pois = "shapesys" in model.param_types(base)
        idx.append(i)
        poisson.append(is_pois)
        sigma.append(float("nan") if is_pois else float(width))
    if len(idx) != len(model.auxdata):
        raise HepInputError(
            f"model has {len(idx)} constrained parameters but {len(model.auxdata)} auxdata entries; "
            "cannot generate toys for it."
        )
    return AuxLayout(
        np.asarray(idx, np.intp), np.asarray(poisson, bool), np.asarray(sigma, np.float64)
    )


def sample_toys(
    model: Any,
    pars: ArrayLike,
    n_toys: int,
    rng: np.random.Generator,
    layout: AuxLayout | None = None,
) -> NDArray[np.float64]:
    """Draw ``n_toys`` pseudo-data sets (main bins + auxdata) from the model at ``pars``.

    Args:
        model: A :class:`sigtune.hep.Model`.
        pars: Parameter values, shape (P,).
        n_toys: Number of toys.
        rng: NumPy random generator.
        layout: Precomputed :func:`aux_layout` (optional).

    Returns:
        Array of shape (n_toys, n_main + n_aux).
    """
    layout = aux_layout(model) if layout is None else layout
    expected = np.asarray(
        model.expected_data(np.asarray(pars, np.float64), include_auxdata=True), np.float64
    )
    n_main = int(model.n_main)
    main = rng.poisson(np.clip(expected[:n_main], 0.0, None), size=(n_toys, n_main)).astype(
        np.float64
    )
    aux_mean = expected[n_main:]
    aux = np.empty((n_toys, aux_mean.size))
    pois = layout.poisson
    aux[:, pois] = rng.poisson(np.clip(aux_mean[pois], 0.0, None), size=(n_toys, int(pois.sum())))
    gauss = ~pois
    aux[:, gauss] = rng.normal(
        aux_mean[gauss], layout.sigma[gauss], size=(n_toys, int(gauss.sum()))
    )
    out: NDArray[np.float64] = np.concatenate([main, aux], axis=1)
    return out


def toy_test_statistics(
    model: Any, toys: NDArray[np.float64], mu: float, test_stat: str, setup: FitSetup
) -> NDArray[np.float64]:
    """The test statistic of every toy: one batched free fit and one batched conditional fit.

    Returns:
        Array of shape (n_toys,).
    """
    free = fit_batch(model, toys, fixed=setup.fixed)
    cond = fit_batch(model, toys, fixed=setup.fixed, poi_value=float(mu))
    t = np.clip(np.asarray(cond.twice_nll) - np.asarray(free.twice_nll), 0.0, None)
    mu_hat = np.asarray(free.bestfit)[:, setup.poi_index]
    if test_stat == "q0":
        zero = mu_hat < mu
    else:
        zero = mu_hat > mu
    out: NDArray[np.float64] = np.where(zero, 0.0, t)
    return out


def _tail(samples_sorted: NDArray[np.float64], values: NDArray[np.float64]) -> NDArray[np.float64]:
    """P(sample >= value) for each value, from sorted samples."""
    n = samples_sorted.size
    out: NDArray[np.float64] = (n - np.searchsorted(samples_sorted, values, side="left")) / n
    return out


def toy_hypotest(
    model: Any,
    data: ArrayLike,
    mu: float,
    *,
    test_stat: str = "qtilde",
    n_toys: int = 2000,
    seed: int | np.random.Generator | None = None,
    init: ArrayLike | None = None,
    bounds: ArrayLike | None = None,
    fixed: Sequence[bool] | ArrayLike | None = None,
) -> HypotestResult:
    """Toy-based hypothesis test (called by ``hypotest(..., calctype="toys")``).

    Args:
        model: A :class:`sigtune.hep.Model`.
        data: Observed data (main bins + auxdata).
        mu: Tested POI value (0 for ``q0``).
        test_stat: ``"qtilde"``, ``"q"`` or ``"q0"``.
        n_toys: Toys per hypothesis (>= 10).
        seed: Seed or ``numpy.random.Generator``; equal seeds give equal results.
        init: Initial parameters (default ``model.suggested_init()``).
        bounds: Bounds (default ``model.suggested_bounds()``).
        fixed: Fixed flags (default ``model.suggested_fixed()``).

    Returns:
        A :class:`HypotestResult` with ``calctype="toys"`` (``test_stat_asimov`` is NaN).
    """
    check_test_stat(test_stat)
    if int(n_toys) < 10:
        raise HepInputError(f"n_toys must be >= 10, got {n_toys!r}.")
    n_toys = int(n_toys)
    mu = float(mu)
    if test_stat == "q0" and mu != 0.0:
        raise HepInputError(f"test_stat='q0' tests mu = 0, got mu = {mu!r}.")
    setup = make_setup(model, init, bounds, fixed)
    data_arr = check_data(model, data)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    observed = _Profile(model, data_arr, setup)
    t_obs = observed.tmu(mu)
    if test_stat == "q0":
        q_obs = t_obs if observed.mu_hat >= mu else 0.0
    else:
        q_obs = t_obs if observed.mu_hat <= mu else 0.0
    mu_b = 1.0 if test_stat == "q0" else 0.0
    layout = aux_layout(model)
    sb_pars = observed.conditional(mu).pars
    b_pars = observed.conditional(mu_b).pars
    toys = np.concatenate(
        [
            sample_toys(model, sb_pars, n_toys, rng, layout),
            sample_toys(model, b_pars, n_toys, rng, layout),
        ]
    )
    q_all = toy_test_statistics(model, toys, mu, test_stat, setup)
    q_sb = np.sort(q_all[:n_toys])
    q_b = np.sort(q_all[n_toys:])

    def pvals(
        values: NDArray[np.float64],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        clsb = _tail(q_sb, values)
        clb = _tail(q_b, values)
        with np.errstate(divide="ignore", invalid="ignore"):
            cls = np.where(clb > 0, clsb / clb, np.nan)
        return clsb, clb, cls

    clsb_o, clb_o, cls_o = pvals(np.asarray([q_obs]))
    clsb_b, clb_b, cls_b = pvals(q_b)
    pct = 100.0 * special.ndtr(-np.asarray(BAND_N_SIGMA, dtype=np.float64))

    def band(values: NDArray[np.float64]) -> tuple[float, ...]:
        return tuple(float(v) for v in np.percentile(values, pct))

    return HypotestResult(
        mu=mu,
        test_stat=test_stat,
        calctype="toys",
        cls_obs=float(cls_o[0]),
        clsb_obs=float(clsb_o[0]),
        clb_obs=float(clb_o[0]),
        cls_exp=band(cls_b),
        clsb_exp=band(clsb_b),
        clb_exp=band(clb_b),
        test_stat_obs=float(q_obs),
        test_stat_asimov=float("nan"),
        mu_hat=observed.mu_hat,
        n_toys=n_toys,
    )
