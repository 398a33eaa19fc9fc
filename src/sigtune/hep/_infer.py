"""Profile-likelihood test statistics, the asymptotic calculator, CLs, discovery and upper limits.

Notation and equation numbers follow Cowan, Cranmer, Gross, Vitells, "Asymptotic formulae for
likelihood-based tests of new physics", Eur. Phys. J. C 71 (2011) 1554, arXiv:1007.1727.

* Profile likelihood ratio (Eq. 7): :math:`\\lambda(\\mu) = L(\\mu, \\hat{\\hat\\theta}) / L(\\hat\\mu, \\hat\\theta)`,
  :math:`t_\\mu = -2\\ln\\lambda(\\mu)` (Eq. 8).
* Upper-limit statistic (Eq. 14): :math:`q_\\mu = t_\\mu` if :math:`\\hat\\mu \\le \\mu`, else 0;
  :math:`\\tilde q_\\mu` (Eq. 16) is the same with the POI bounded below at 0 (:math:`\\tilde\\lambda`, Eq. 10).
* Discovery (Eq. 12): :math:`q_0 = t_0` if :math:`\\hat\\mu \\ge 0`, else 0.
* Asimov data set (Sec. 3.2): the expected data at the conditional fit to the *observed* data at
  :math:`\\mu' = 0` (limits) or :math:`\\mu' = 1` (discovery), auxiliary data included, so that the
  Asimov likelihood is maximal exactly at those parameters (:math:`\\hat\\mu_A = \\mu'`, Eq. 24).
* Asymptotic distributions (Eqs. 52-53, 65-67): in :math:`\\sqrt{q}` space the test statistic is
  normal with unit width; with :math:`\\sigma` from the Asimov data,
  :math:`\\sqrt{q_{\\mu,A}} = (\\mu - \\mu')/\\sigma` (Eq. 30-32).
  :math:`\\mathrm{CL}_{s+b} = 1 - \\Phi(\\sqrt{q_\\mu})` (Eq. 59),
  :math:`\\mathrm{CL}_b = \\Phi(\\sqrt{q_{\\mu,A}} - \\sqrt{q_\\mu})`, :math:`\\mathrm{CL}_s = \\mathrm{CL}_{s+b}/\\mathrm{CL}_b`.
  For :math:`\\tilde q_\\mu > q_{\\mu,A}` the variable :math:`(\\tilde q_\\mu - q_{\\mu,A}) / (2\\sqrt{q_{\\mu,A}})`
  replaces :math:`\\sqrt{\\tilde q_\\mu} - \\sqrt{q_{\\mu,A}}` (Eq. 66), as in pyhf and RooStats.
* Expected band (Eq. 89): the background-only median shifted by :math:`N \\in \\{2, 1, 0, -1, -2\\}`.

Work is shared between calls: the free fit on the observed data, the Asimov data set and the
analytic free fit on the Asimov data (it sits exactly at the generating parameters) are computed
once per :class:`AsymptoticCalculator`; conditional fits are cached per POI value and warm-started
from the nearest previous fit.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from sigtune.hep._exceptions import HepError, HepFitWarning
from sigtune.hep._profile import (
    _fit_conditionals,
    _Point,
    _Profile,
    _q_from_profile,
    _q_needs_fit,
)
from sigtune.hep._results import BAND_N_SIGMA, DiscoveryResult, HypotestResult, UpperLimitResult
from sigtune.hep._validate import (
    HepInputError,
    check_cl,
    check_data,
    make_setup,
)
from sigtune.hep._validate import (
    check_test_stat as _check_test_stat,
)

__all__ = [
    "AsymptoticCalculator",
    "asymptotic_pvalues",
    "discovery",
    "expected_pvalues",
    "hypotest",
    "q0",
    "qmu",
    "qmu_tilde",
    "tmu",
    "upper_limit",
]

log = logging.getLogger(__name__)

TestStat = Literal["qtilde", "q", "q0"]
_CALCTYPES: tuple[str, ...] = ("asymptotics", "toys")
# Below this q_A the test has no sensitivity: CLs = 1 by definition (avoids 0/0).
_QA_MIN = 1e-12
# Upper limits are searched for up to this multiple of the POI's upper bound.
_LIMIT_REACH = 100.0


# --------------------------------------------------------------------------------------------
# Test statistics (one signature)
# --------------------------------------------------------------------------------------------


def tmu(
    model: Any,
    data: ArrayLike,
    mu: float,
    *,
    init: ArrayLike | None = None,
    bounds: ArrayLike | None = None,
    fixed: Sequence[bool] | ArrayLike | None = None,
) -> float:
    """Profile-likelihood test statistic :math:`t_\\mu = -2\\ln\\lambda(\\mu)` (Eq. 8 of arXiv:1007.1727).

    .. math:: t_\\mu = -2\\ln\\frac{L(\\mu, \\hat{\\hat\\theta}(\\mu))}{L(\\hat\\mu, \\hat\\theta)}

    With the POI bounded below at 0 (the default bounds) this is :math:`\\tilde t_\\mu` (Eq. 11).

    Args:
        model: A :class:`sigtune.hep.Model`.
        data: Observed main bins followed by auxdata (``ws.data(model)``).
        mu: Tested POI value.
        init: Initial parameters (default ``model.suggested_init()``).
        bounds: Parameter bounds (default ``model.suggested_bounds()``).
        fixed: Fixed flags (default ``model.suggested_fixed()``).

    Returns:
        The value of the test statistic (>= 0).
    """
    setup = make_setup(model, init, bounds, fixed)
    return _Profile(model, check_data(model, data), setup).tmu(float(mu))


def qmu(
    model: Any,
    data: ArrayLike,
    mu: float,
    *,
    init: ArrayLike | None = None,
    bounds: ArrayLike | None = None,
    fixed: Sequence[bool] | ArrayLike | None = None,
) -> float:
    """One-sided upper-limit statistic :math:`q_\\mu` (Eq. 14 of arXiv:1007.1727).

    .. math:: q_\\mu = \\begin{cases} -2\\ln\\lambda(\\mu) & \\hat\\mu \\le \\mu \\\\ 0 & \\hat\\mu > \\mu \\end{cases}

    Args: see :func:`tmu`.

    Returns:
        The value of the test statistic (>= 0).
    """
    setup = make_setup(model, init, bounds, fixed)
    return _q_from_profile(_Profile(model, check_data(model, data), setup), float(mu), "q")


def qmu_tilde(
    model: Any,
    data: ArrayLike,
    mu: float,
    *,
    init: ArrayLike | None = None,
    bounds: ArrayLike | None = None,
    fixed: Sequence[bool] | ArrayLike | None = None,
) -> float:
    """Upper-limit statistic for a non-negative POI, :math:`\\tilde q_\\mu` (Eq. 16 of arXiv:1007.1727).

    .. math:: \\tilde q_\\mu = \\begin{cases} -2\\ln\\tilde\\lambda(\\mu) & \\hat\\mu \\le \\mu \\\\
              0 & \\hat\\mu > \\mu \\end{cases}

    where :math:`\\tilde\\lambda` (Eq. 10) uses :math:`L(0, \\hat{\\hat\\theta}(0))` in the denominator when
    :math:`\\hat\\mu < 0`; this is what a fit with the POI bounded below at 0 computes.

    Args: see :func:`tmu`.

    Raises:
        HepInputError: If the POI's lower bound is not 0.
    """
    setup = make_setup(model, init, bounds, fixed)
    if setup.poi_bounds[0] != 0.0:
        raise HepInputError(
            f"qtilde needs the POI bounded below at 0, got bounds {setup.poi_bounds}; "
            "use test_stat='q' for a POI that may be negative."
        )
    return _q_from_profile(_Profile(model, check_data(model, data), setup), float(mu), "qtilde")


def q0(
    model: Any,
    data: ArrayLike,
    mu: float = 0.0,
    *,
    init: ArrayLike | None = None,
    bounds: ArrayLike | None = None,
    fixed: Sequence[bool] | ArrayLike | None = None,
) -> float:
    """Discovery test statistic :math:`q_0` (Eq. 12 of arXiv:1007.1727).

    .. math:: q_0 = \\begin{cases} -2\\ln\\lambda(0) & \\hat\\mu \\ge 0 \\\\ 0 & \\hat\\mu < 0 \\end{cases}

    Args: see :func:`tmu`; ``mu`` must be 0 (kept for the common signature).

    Raises:
        HepInputError: If ``mu`` is not 0.
    """
    if float(mu) != 0.0:
        raise HepInputError(f"q0 tests the background-only hypothesis mu = 0, got mu = {mu!r}.")
    setup = make_setup(model, init, bounds, fixed)
    return _q_from_profile(_Profile(model, check_data(model, data), setup), 0.0, "q0")


# --------------------------------------------------------------------------------------------
# Asymptotic distributions (pure functions)
# --------------------------------------------------------------------------------------------


def _log_ratio_cls(clsb_arg: float, clb_arg: float) -> float:
    """CLs = Phi(clsb_arg) / Phi(clb_arg), computed in log space for tiny tails."""
    return float(math.exp(min(special.log_ndtr(clsb_arg) - special.log_ndtr(clb_arg), 0.0)))


def _shifted_stat(q: float, q_asimov: float, test_stat: str) -> float:
    """Test statistic in the :math:`-\\hat\\mu/\\sigma` space of the asymptotic distributions.

    :math:`\\sqrt{q} - \\sqrt{q_A}` for ``q`` and ``q0`` (Eqs. 53, 57); for ``qtilde`` with
    :math:`\\tilde q > q_A`, :math:`(\\tilde q - q_A) / (2\\sqrt{q_A})` (from Eq. 66).
    """
    sq, sqa = math.sqrt(max(q, 0.0)), math.sqrt(max(q_asimov, 0.0))
    if test_stat == "qtilde" and sq > sqa and q_asimov > _QA_MIN:
        return (q - q_asimov) / (2.0 * sqa)
    return sq - sqa


def asymptotic_pvalues(
    q: float, q_asimov: float, test_stat: str = "qtilde"
) -> tuple[float, float, float]:
    """Observed (CLsb, CLb, CLs) from the asymptotic distributions (arXiv:1007.1727 Sec. 3.7).

    In the shifted variable :math:`x` (see :func:`_shifted_stat`) the s+b distribution is
    :math:`N(-\\sqrt{q_A}, 1)` and the b-only distribution :math:`N(0, 1)`:

    .. math:: \\mathrm{CL}_{s+b} = \\Phi(-(x + \\sqrt{q_A})), \\quad \\mathrm{CL}_b = \\Phi(-x),
              \\quad \\mathrm{CL}_s = \\mathrm{CL}_{s+b} / \\mathrm{CL}_b .

    For ``q`` this gives :math:`\\mathrm{CL}_{s+b} = 1 - \\Phi(\\sqrt{q_\\mu})` (Eq. 59), and for ``q0``
    :math:`\\mathrm{CL}_{s+b} = p_0 = 1 - \\Phi(\\sqrt{q_0})` (Eq. 53).

    Args:
        q: Observed test statistic.
        q_asimov: The test statistic on the Asimov data set.
        test_stat: ``"qtilde"``, ``"q"`` or ``"q0"``.

    Returns:
        (CLsb, CLb, CLs). Without sensitivity (``q_asimov`` ~ 0) CLs is 1.
    """
    _check_test_stat(test_stat)
    x = _shifted_stat(q, q_asimov, test_stat)
    sqa = math.sqrt(max(q_asimov, 0.0))
    clsb = float(special.ndtr(-(x + sqa)))
    clb = float(special.ndtr(-x))
    cls = 1.0 if q_asimov <= _QA_MIN else _log_ratio_cls(-(x + sqa), -x)
    return clsb, clb, cls


def expected_pvalues(
    q_asimov: float, test_stat: str = "qtilde"
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Expected (CLsb, CLb, CLs) bands for :math:`N` in :data:`BAND_N_SIGMA` (Eq. 89).

    The expected shifted test statistic under the background-only hypothesis is :math:`x = N`, so
    :math:`\\mathrm{CL}_{s+b} = \\Phi(-(N + \\sqrt{q_A}))` and :math:`\\mathrm{CL}_b = \\Phi(-N)`.

    Args:
        q_asimov: The test statistic on the Asimov data set.
        test_stat: ``"qtilde"``, ``"q"`` or ``"q0"`` (the same formula for all three).

    Returns:
        Three 5-tuples (CLsb, CLb, CLs), each ordered as :data:`BAND_N_SIGMA`.
    """
    _check_test_stat(test_stat)
    sqa = math.sqrt(max(q_asimov, 0.0))
    clsb = tuple(float(special.ndtr(-(n + sqa))) for n in BAND_N_SIGMA)
    clb = tuple(float(special.ndtr(-n)) for n in BAND_N_SIGMA)
    if q_asimov <= _QA_MIN:
        cls = tuple(1.0 for _ in BAND_N_SIGMA)
    else:
        cls = tuple(_log_ratio_cls(-(n + sqa), -float(n)) for n in BAND_N_SIGMA)
    return clsb, clb, cls


def _expected_sqrt_qa_for_cls(alpha: float, n_sigma: float) -> float:
    """The :math:`\\sqrt{q_A}` at which the expected CLs of band ``n_sigma`` equals ``alpha``.

    Solves :math:`\\Phi(-(N + s)) / \\Phi(-N) = \\alpha` for :math:`s`.
    """
    return float(-special.ndtri(alpha * special.ndtr(-n_sigma)) - n_sigma)


# --------------------------------------------------------------------------------------------
# Calculator
# --------------------------------------------------------------------------------------------


class AsymptoticCalculator:
    """Asymptotic calculator with the Asimov data set (arXiv:1007.1727 Sec. 3).

    Caches the free fit to the observed data, the Asimov data set (nuisance parameters profiled to
    the observed data at :math:`\\mu'`, auxiliary data included, as pyhf does) and the conditional
    fits, so that several POI values (a limit search) share work.

    Args:
        model: A :class:`sigtune.hep.Model`.
        data: Observed data (main bins + auxdata).
        test_stat: ``"qtilde"`` (default), ``"q"`` or ``"q0"``.
        init: Initial parameters (default ``model.suggested_init()``).
        bounds: Bounds (default ``model.suggested_bounds()``).
        fixed: Fixed flags (default ``model.suggested_fixed()``).
        multistart: Start every conditional fit also from the suggested initial values and keep
            the lower minimum (for likelihoods with several local minima; about twice the cost).
    """

    def __init__(
        self,
        model: Any,
        data: ArrayLike,
        *,
        test_stat: str = "qtilde",
        init: ArrayLike | None = None,
        bounds: ArrayLike | None = None,
        fixed: Sequence[bool] | ArrayLike | None = None,
        multistart: bool = False,
    ) -> None:
        self.model = model
        self.test_stat = _check_test_stat(test_stat)
        self.setup = make_setup(model, init, bounds, fixed)
        if self.test_stat == "qtilde" and self.setup.poi_bounds[0] != 0.0:
            raise HepInputError(
                f"qtilde needs the POI bounded below at 0, got bounds {self.setup.poi_bounds}; "
                "use test_stat='q' for a POI that may be negative."
            )
        self.data = check_data(model, data)
        self.observed = _Profile(model, self.data, self.setup, multistart=multistart)
        self.asimov_mu = 1.0 if self.test_stat == "q0" else 0.0
        lo, hi = self.setup.poi_bounds
        if not lo <= self.asimov_mu <= hi:
            raise HepInputError(
                f"the Asimov POI value {self.asimov_mu} lies outside the POI bounds {(lo, hi)}; widen them."
            )
        self._asimov: _Profile | None = None

    @property
    def n_fits(self) -> int:
        """Number of numerical fits run so far."""
        return self.observed.n_fits + (self._asimov.n_fits if self._asimov is not None else 0)

    @property
    def asimov(self) -> _Profile:
        """The Asimov data set's profile; its free fit is the generating point (no fit needed)."""
        if self._asimov is None:
            # a worse local minimum here makes every expected result wrong: all starts
            gen = self.observed.conditional(self.asimov_mu, all_starts=True)
            asimov_data = np.asarray(
                self.model.expected_data(gen.pars, include_auxdata=True), dtype=np.float64
            )
            # every conditional fit to the Asimov data feeds an expected result: all starts,
            # except inside a checked bracket (see sigtune.hep._profile), unless multistart
            prof = _Profile(
                self.model, asimov_data, self.setup, multistart=self.observed.multistart
            )
            prof.checked_starts = True
            # The Asimov likelihood is maximal where the expectation equals the data: at the
            # generating parameters (Eq. 24).
            if self.model._dense_engine:  # (derivatives only feed the large-model prediction)
                f = float(self.model._f(gen.pars[None], None, prof.consts)[0])
                point = _Point(gen.pars, f, start="exact")
            else:
                deriv = self.model._derivatives(gen.pars[None], prof.consts)
                point = _Point(gen.pars, float(deriv[0][0]), deriv, start="exact")
            prof.set_free(point, exact=True)
            self._asimov = prof
        return self._asimov

    def asimov_data(self) -> NDArray[np.float64]:
        """The Asimov data set (main bins + auxdata)."""
        return self.asimov.data

    def teststatistic(self, mu: float) -> float:
        """Observed test statistic at ``mu``."""
        return _q_from_profile(self.observed, float(mu), self.test_stat)

    def q_asimov(self, mu: float) -> float:
        """Test statistic at ``mu`` on the Asimov data set (:math:`q_{\\mu,A}`, Eq. 30)."""
        return _q_from_profile(self.asimov, float(mu), self.test_stat)

    def hypotest(self, mu: float) -> HypotestResult:
        """CLs, CLsb, CLb and the expected bands at ``mu``."""
        mu = float(mu)
        if self.test_stat == "q0" and mu != 0.0:
            raise HepInputError(f"test_stat='q0' tests mu = 0, got mu = {mu!r}.")
        requests = [(self.asimov, mu)]
        if _q_needs_fit(self.observed, mu, self.test_stat):
            requests.insert(0, (self.observed, mu))
        _fit_conditionals(requests)
        q = self.teststatistic(mu)
        qa = self.q_asimov(mu)
        clsb, clb, cls = asymptotic_pvalues(q, qa, self.test_stat)
        clsb_e, clb_e, cls_e = expected_pvalues(qa, self.test_stat)
        return HypotestResult(
            mu=mu,
            test_stat=self.test_stat,
            calctype="asymptotics",
            cls_obs=cls,
            clsb_obs=clsb,
            clb_obs=clb,
            cls_exp=cls_e,
            clsb_exp=clsb_e,
            clb_exp=clb_e,
            test_stat_obs=q,
            test_stat_asimov=qa,
            mu_hat=self.observed.mu_hat,
            fit_starts=self.fit_starts(mu),
            n_fits=self.n_fits,
        )

    def fit_starts(self, mu: float) -> dict[str, str]:
        """Which start gave each fit behind :meth:`hypotest` at ``mu`` (see
        :attr:`HypotestResult.fit_starts`)."""
        asimov = self.asimov
        observed = (
            self.observed.conditional(mu).start
            if _q_needs_fit(self.observed, mu, self.test_stat)
            else "unused"  # the statistic is 0 by definition (mu-hat beyond mu)
        )
        return {
            "free": self.observed.free.start,
            "observed": observed,
            "asimov_data": self.observed.conditional(self.asimov_mu).start,
            "asimov": asimov.conditional(mu).start,
        }


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def hypotest(
    model: Any,
    data: ArrayLike,
    mu: float,
    test_stat: str = "qtilde",
    calctype: str = "asymptotics",
    *,
    init: ArrayLike | None = None,
    bounds: ArrayLike | None = None,
    fixed: Sequence[bool] | ArrayLike | None = None,
    n_toys: int = 2000,
    seed: int | None = None,
    multistart: bool = False,
) -> HypotestResult:
    """Hypothesis test of POI value ``mu``: observed CLs, CLsb, CLb and the expected CLs band.

    With ``calctype="asymptotics"`` the distributions of the test statistic follow
    arXiv:1007.1727 (Eqs. 52-53, 65-67) with :math:`\\sigma` from the Asimov data set; the calculation
    needs at most four fits (free and conditional fits to the data, the conditional fit generating
    the Asimov data, the conditional fit to the Asimov data). With ``"toys"`` the distributions are
    sampled (:func:`sigtune.hep._toys.toy_hypotest`).

    Args:
        model: A :class:`sigtune.hep.Model`.
        data: Observed data (main bins + auxdata).
        mu: Tested POI value (0 for ``q0``).
        test_stat: ``"qtilde"`` (POI >= 0, default), ``"q"`` or ``"q0"`` (discovery; the p-value
            is ``clsb_obs``, as pyhf returns it).
        calctype: ``"asymptotics"`` or ``"toys"``.
        init: Initial parameters (default ``model.suggested_init()``).
        bounds: Bounds (default ``model.suggested_bounds()``).
        fixed: Fixed flags (default ``model.suggested_fixed()``).
        n_toys: Toys per hypothesis (toys only).
        seed: Random seed (toys only).
        multistart: Also start each conditional fit from the suggested initial values and keep
            the lower minimum (asymptotics; see :class:`AsymptoticCalculator`).

    Returns:
        A :class:`HypotestResult`.

    Raises:
        HepInputError: On an unknown ``test_stat``/``calctype`` or invalid arguments.
        HepFitError: If a fit fails.

    Example:
        >>> res = hypotest(model, data, 1.0)  # doctest: +SKIP
        >>> res.cls_obs, res.cls_exp[2]       # doctest: +SKIP
    """
    _check_test_stat(test_stat)
    if calctype not in _CALCTYPES:
        raise HepInputError(f"calctype must be one of {_CALCTYPES}, got {calctype!r}.")
    if calctype == "toys":
        from sigtune.hep._toys import toy_hypotest

        return toy_hypotest(
            model,
            data,
            mu,
            test_stat=test_stat,
            n_toys=n_toys,
            seed=seed,
            init=init,
            bounds=bounds,
            fixed=fixed,
        )
    calc = AsymptoticCalculator(
        model,
        data,
        test_stat=test_stat,
        init=init,
        bounds=bounds,
        fixed=fixed,
        multistart=multistart,
    )
    return calc.hypotest(mu)


def discovery(
    model: Any,
    data: ArrayLike,
    *,
    init: ArrayLike | None = None,
    bounds: ArrayLike | None = None,
    fixed: Sequence[bool] | ArrayLike | None = None,
    multistart: bool = False,
) -> DiscoveryResult:
    """Observed and expected discovery significance with :math:`q_0` (arXiv:1007.1727 Sec. 3.1).

    .. math:: Z_0 = \\sqrt{q_0}, \\quad p_0 = 1 - \\Phi(Z_0) \\quad \\text{(Eq. 53-54)}

    The median expected significance under :math:`\\mu = 1` is :math:`\\sqrt{q_{0,A}}` (Eq. 33), with the
    Asimov data generated by the conditional fit at :math:`\\mu = 1` to the observed data. The
    expected band is :math:`p_0(N) = \\Phi(-(N + \\sqrt{q_{0,A}}))`, :math:`N \\in \\{2, 1, 0, -1, -2\\}`.
    At most four fits (three when :math:`\\hat\\mu` sits at its lower bound 0).

    Args:
        model: A :class:`sigtune.hep.Model`.
        data: Observed data (main bins + auxdata).
        init: Initial parameters (default ``model.suggested_init()``).
        bounds: Bounds (default ``model.suggested_bounds()``); the POI range must contain 0 and 1.
        fixed: Fixed flags (default ``model.suggested_fixed()``).
        multistart: See :class:`AsymptoticCalculator`.

    Returns:
        A :class:`DiscoveryResult`.
    """
    calc = AsymptoticCalculator(
        model, data, test_stat="q0", init=init, bounds=bounds, fixed=fixed, multistart=multistart
    )
    res = calc.hypotest(0.0)
    z_band = tuple(float(-special.ndtri(p)) if p > 0 else math.inf for p in res.clsb_exp)
    q0a = res.test_stat_asimov
    return DiscoveryResult(
        z0_obs=math.sqrt(max(res.test_stat_obs, 0.0)),
        p0_obs=res.clsb_obs,
        z0_exp=math.sqrt(max(q0a, 0.0)),
        p0_exp=res.clsb_exp[2],
        q0_obs=res.test_stat_obs,
        mu_hat=res.mu_hat,
        q0_asimov=q0a,
        p0_exp_band=res.clsb_exp,
        z0_exp_band=z_band,
    )


def _solve_decreasing(
    func: Callable[[float], float],
    estimate: float,
    lo_bound: float,
    hi_bound: float,
    xtol: float,
    what: str,
    known: Sequence[tuple[float, float]] = (),
) -> float:
    """Root of a decreasing ``func`` (positive below the root) in ``[lo_bound, hi_bound]``.

    Safeguarded secant: the next POI value is the secant (linear interpolation) through the two
    evaluated points nearest the root; while no sign change is known it may extrapolate at most
    4 x the last distance (a first step of 10%, geometric steps of 1.5 x when the points give no
    usable slope); once the root is bracketed, a step that leaves the bracket, or follows two
    evaluations that did not halve the smallest ``|func|``, is replaced by bisection. It stops when the secant estimate through two nearby
    points (at most 1% apart) is within ``xtol`` of the nearer one (returning the estimate: the
    secant's error is then far below ``xtol``) or the bracket is narrower than ``2 xtol``.
    ``known`` are points already evaluated (free: conditional fits are cached), which seed the
    interpolation. The functions of the limit
    search are close to linear in the POI, so a root typically costs 2-4 evaluations.
    """
    pts: dict[float, float] = {float(x): float(f) for x, f in known}

    def ev(x: float) -> float:
        x = float(x)
        if x not in pts:
            pts[x] = float(func(x))
        return pts[x]

    def close(x1: float, x2: float) -> bool:
        """Secant points near enough for its estimate to be trusted to ``xtol`` (a secant
        through distant points would also accept a jump as a root)."""
        return abs(x1 - x2) <= max(0.01 * abs(x1), 1e4 * xtol)

    x0 = min(max(estimate, lo_bound), hi_bound)
    if not pts or all(abs(x - x0) > xtol for x in pts):
        ev(x0)
    progress: list[float] = []  # smallest |f| after each evaluation
    for _ in range(200):
        progress.append(min(abs(f) for f in pts.values()))
        neg = [x for x, f in pts.items() if f <= 0]
        b = min(neg) if neg else None
        pos = [x for x, f in pts.items() if f > 0 and (b is None or x < b)]
        a = max(pos) if pos else None
        if b is not None and pts[b] == 0.0:
            return b
        if a is not None and b is not None:
            fa, fb = pts[a], pts[b]
            if b - a <= 2 * xtol:
                return a + (b - a) * fa / (fa - fb)
            # secant through the two points nearest the root (smallest |f|)
            near = sorted(pts, key=lambda x: abs(pts[x]))[:2]
            x1, x2 = near
            f1, f2 = pts[x1], pts[x2]
            cand = x1 - f1 * (x2 - x1) / (f2 - f1) if f2 != f1 else math.nan
            if a < cand < b and abs(x1 - cand) <= xtol and close(x1, x2):
                return float(cand)
            stalled = len(progress) >= 3 and progress[-1] > 0.5 * progress[-3]
            if not a < cand < b or stalled:
                cand = 0.5 * (a + b)
                progress.clear()
        else:
            # no sign change yet: extrapolate from the two evaluated points nearest the root
            up = b is None  # all positive: the root lies above
            edge = max(pts) if up else min(pts)
            others = sorted((x for x in pts if x != edge), key=lambda x: abs(x - edge))
            cand = math.nan
            if others:
                x2 = others[0]
                f1, f2 = pts[edge], pts[x2]
                if (f2 - f1) * (x2 - edge) < 0:  # decreasing between them
                    step = -f1 * (x2 - edge) / (f2 - f1)
                    if abs(step) <= xtol and close(edge, x2):
                        return float(edge + step)
                    reach = 4.0 * max(abs(edge - x2), 0.1 * abs(edge))
                    cand = edge + max(min(step, reach), -reach)
            elif edge != 0.0:  # a single point: a first step of 10%
                cand = edge * (1.1 if up else 1.0 / 1.1)
            if not math.isfinite(cand) or (cand > edge) != up:
                cand = (edge * 1.5 if edge > 0 else 1.0) if up else edge / 1.5
            if up and cand > hi_bound:
                if edge >= hi_bound:
                    raise HepError(
                        f"the {what} lies above {hi_bound} (searched up to {_LIMIT_REACH:g} x "
                        "the POI upper bound): the signal is too weak for a limit there; scale "
                        "the signal up (a normfactor) or widen the POI bounds (bounds=...)."
                    )
                cand = hi_bound
            if not up and cand < lo_bound:
                if edge <= lo_bound:
                    raise HepError(f"the {what} lies below the POI lower bound {lo_bound}.")
                cand = lo_bound
        ev(cand)
    raise HepError(f"the {what}: the root search did not converge in 200 steps")


def _interp_root(known: Sequence[tuple[float, float]], default: float) -> float:
    """Linear inter-/extrapolation of the root of a decreasing function from the evaluated
    points nearest to it (``default`` if they give no usable slope)."""
    pos = [p for p in known if p[1] > 0]
    neg = [p for p in known if p[1] <= 0]
    if pos and neg:
        (x1, f1), (x2, f2) = max(pos), min(neg)
    elif len(pos) >= 2:
        (x2, f2), (x1, f1) = sorted(pos)[-2:]
    elif len(neg) >= 2:
        (x1, f1), (x2, f2) = sorted(neg)[:2]
    else:
        return default
    if f1 == f2 or (f2 - f1) * (x2 - x1) >= 0:
        return default
    return x1 - f1 * (x2 - x1) / (f2 - f1)


def upper_limit(
    model: Any,
    data: ArrayLike,
    cl: float = 0.95,
    *,
    test_stat: str = "qtilde",
    init: ArrayLike | None = None,
    bounds: ArrayLike | None = None,
    fixed: Sequence[bool] | ArrayLike | None = None,
    rtol: float = 1e-6,
    multistart: bool = False,
) -> UpperLimitResult:
    """Observed and expected CLs upper limits on the POI by root finding (Brent's method).

    The observed limit solves :math:`\\mathrm{CL}_s(\\mu) = 1 - \\mathrm{cl}`; each expected limit solves
    :math:`\\Phi(-(N + \\sqrt{q_{\\mu,A}})) / \\Phi(-N) = 1 - \\mathrm{cl}`, i.e. :math:`\\sqrt{q_{\\mu,A}}(\\mu) = s_N`
    with :math:`s_N` known in closed form, so the expected limits need only fits to the Asimov data.
    Brackets start from the Asimov estimate :math:`\\sigma_A = \\mu / \\sqrt{q_{\\mu,A}}` (Eq. 31) and
    expand geometrically within the POI bounds; every fit is cached and warm-started.

    Args:
        model: A :class:`sigtune.hep.Model`.
        data: Observed data (main bins + auxdata).
        cl: Confidence level (0.95 for the usual 95% CL limit).
        test_stat: ``"qtilde"`` (default) or ``"q"``.
        init: Initial parameters (default ``model.suggested_init()``).
        bounds: Bounds (default ``model.suggested_bounds()``).
        fixed: Fixed flags (default ``model.suggested_fixed()``).
        rtol: Relative tolerance on the limits.
        multistart: See :class:`AsymptoticCalculator`.

    Returns:
        An :class:`UpperLimitResult`.

    Raises:
        HepInputError: On invalid arguments.
        HepError: If mu-hat sits at the POI's upper bound, or a limit lies beyond 100 x that
            bound (widen the bounds / scale the signal).

    Warns:
        HepFitWarning: A limit lies above the POI's upper bound (it is still found: the POI is
            fixed in the conditional fits, so the bound only limits the free fit).
    """
    alpha = 1.0 - check_cl(cl)
    if test_stat not in ("qtilde", "q"):
        raise HepInputError(f"upper limits use test_stat 'qtilde' or 'q', got {test_stat!r}.")
    calc = AsymptoticCalculator(
        model,
        data,
        test_stat=test_stat,
        init=init,
        bounds=bounds,
        fixed=fixed,
        multistart=multistart,
    )
    lo_b, hi_b = calc.setup.poi_bounds
    lo_b = max(lo_b, 0.0)

    # Scale from the Asimov data at a reference point.
    mu_ref = min(max(1.0, calc.observed.mu_hat), hi_b)
    sqa_ref = math.sqrt(calc.q_asimov(mu_ref))
    sigma = mu_ref / sqa_ref if sqa_ref > 1e-8 else hi_b

    # The POI is fixed in every conditional fit, so its upper bound only limits the free fit:
    # a limit above it is searched for (up to _LIMIT_REACH x the bound) with a warning, unless
    # mu-hat itself sits at the upper bound (then the bound biases the free fit: widen it).
    if calc.observed.mu_hat >= hi_b * (1.0 - 1e-9):
        raise HepError(
            f"the best-fit POI sits at its upper bound {hi_b}: widen the POI bounds (bounds=...) "
            "before computing a limit."
        )
    reach = hi_b * _LIMIT_REACH
    beyond: list[str] = []

    def solve(
        func: Callable[[float], float],
        estimate: float,
        what: str,
        known: Sequence[tuple[float, float]] = (),
    ) -> float:
        xtol = max(rtol * max(abs(estimate), 1e-3 * sigma), 1e-12)
        root = _solve_decreasing(func, estimate, lo_b, reach, xtol, what, known)
        if root > hi_b:
            beyond.append(what)
        return root

    # sqrt(q_mu,A) is increasing in mu and shared by the five expected limits: each root search
    # is seeded with every Asimov fit so far (cached), so later bands cost 1-3 fits.
    sqa: dict[float, float] = {0.0: 0.0, mu_ref: sqa_ref} if lo_b == 0.0 else {mu_ref: sqa_ref}

    def sqrt_qa(mu: float) -> float:
        if mu not in sqa:
            sqa[mu] = math.sqrt(calc.q_asimov(mu))
        return sqa[mu]

    # The widest limit first: its Asimov fits (all starts) then bracket the other bands' fits,
    # which run from the warm start alone (checked brackets, see sigtune.hep._profile).
    exp_by_n: dict[int, float] = {}
    for n in sorted(BAND_N_SIGMA):
        target = _expected_sqrt_qa_for_cls(alpha, float(n))

        def g(mu: float, target: float = target) -> float:
            return target - sqrt_qa(mu)

        known = [(m, target - v) for m, v in sqa.items()]
        estimate = _interp_root(known, target * sigma)
        exp_by_n[n] = solve(g, estimate, f"expected limit ({-n:+d} sigma)", known)
    expected = [exp_by_n[n] for n in BAND_N_SIGMA]

    # CLs falls roughly like a normal tail in mu: its normal quantile is close to linear
    z_alpha = float(special.ndtri(alpha))

    def f_obs(mu: float) -> float:
        cls = calc.hypotest(mu).cls_obs
        return float(special.ndtri(min(max(cls, 1e-300), 1.0 - 1e-16))) - z_alpha

    obs_est = max(calc.observed.mu_hat, 0.0) + _expected_sqrt_qa_for_cls(alpha, 0.0) * sigma
    obs = solve(f_obs, obs_est, "observed limit")
    if beyond:
        warnings.warn(
            f"{', '.join(beyond)} above the POI upper bound {hi_b}: found by fixing the POI "
            "beyond the bound (it only limits the free fit); widen the bounds to silence this",
            HepFitWarning,
            stacklevel=2,
        )
    return UpperLimitResult(
        obs=obs, exp=tuple(expected), cl=float(cl), test_stat=test_stat, n_fits=calc.n_fits
    )
