"""Result types of the inference layer: frozen dataclasses, one per function."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DiscoveryResult",
    "HypotestResult",
    "RankingEntry",
    "RankingResult",
    "ScanResult",
    "UpperLimitResult",
]

#: Order of the expected band, in standard deviations of the background-only test statistic,
#: as pyhf returns it. ``band[2]`` is the median; ``band[0]`` the "-2 sigma" (most signal-free)
#: fluctuation, i.e. the smallest CLs / p-value.
BAND_N_SIGMA: tuple[int, ...] = (2, 1, 0, -1, -2)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass(frozen=True)
class HypotestResult:
    """Outcome of :func:`sigtune.hep.hypotest` at one value of the parameter of interest.

    Attributes:
        mu: The tested POI value.
        test_stat: ``"qtilde"``, ``"q"`` or ``"q0"``.
        calctype: ``"asymptotics"`` or ``"toys"``.
        cls_obs: Observed :math:`\\mathrm{CL}_s = \\mathrm{CL}_{s+b} / \\mathrm{CL}_b`.
        clsb_obs: Observed :math:`\\mathrm{CL}_{s+b}` (p-value of the tested hypothesis; for ``q0``
            this is the discovery p-value :math:`p_0`).
        clb_obs: Observed :math:`\\mathrm{CL}_b`.
        cls_exp: Expected CLs band, 5 values ordered as :data:`BAND_N_SIGMA` (index 2: median).
        clsb_exp: Expected :math:`\\mathrm{CL}_{s+b}` band (for ``q0``: the expected :math:`p_0` band).
        clb_exp: Expected :math:`\\mathrm{CL}_b` band.
        test_stat_obs: The observed test statistic (:math:`\\tilde q_\\mu`, :math:`q_\\mu` or :math:`q_0`).
        test_stat_asimov: The test statistic on the Asimov data set (asymptotics), else NaN.
        mu_hat: Best-fit POI on the observed data.
        n_toys: Number of toys per hypothesis (toys), else 0.
        fit_starts: Which starting point gave each fit (asymptotics): keys ``"free"`` (the
            unconditional fit), ``"observed"`` (conditional at ``mu``), ``"asimov_data"`` (the
            conditional fit that generates the Asimov data) and ``"asimov"`` (conditional fit
            at ``mu`` to the Asimov data); values ``"init"``, ``"warm"``, ``"default"``,
            ``"free"``, ``"perturbed-<k>"`` or ``"exact"`` (no fit needed).
        n_fits: Minimisations run by the calculator so far (asymptotics).
    """

    mu: float
    test_stat: str
    calctype: str
    cls_obs: float
    clsb_obs: float
    clb_obs: float
    cls_exp: tuple[float, ...]
    clsb_exp: tuple[float, ...]
    clb_exp: tuple[float, ...]
    test_stat_obs: float
    test_stat_asimov: float
    mu_hat: float
    n_toys: int = 0
    fit_starts: dict[str, str] = field(default_factory=dict)
    n_fits: int = 0

    @property
    def pvalue_obs(self) -> float:
        """The observed p-value pyhf's ``hypotest`` returns: CLs, or :math:`p_0` for ``q0``."""
        return self.clsb_obs if self.test_stat == "q0" else self.cls_obs

    @property
    def pvalue_exp(self) -> tuple[float, ...]:
        """The expected band pyhf's ``hypotest`` returns: CLs, or :math:`p_0` for ``q0``."""
        return self.clsb_exp if self.test_stat == "q0" else self.cls_exp

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dictionary (non-finite floats become None)."""
        out: dict[str, Any] = _jsonable(asdict(self))
        return out


@dataclass(frozen=True)
class DiscoveryResult:
    """Outcome of :func:`sigtune.hep.discovery` (test statistic :math:`q_0`, asymptotics).

    Attributes:
        z0_obs: Observed significance :math:`Z_0 = \\sqrt{q_0}`.
        p0_obs: Observed p-value :math:`p_0 = 1 - \\Phi(Z_0)`.
        z0_exp: Median expected significance under :math:`\\mu = 1`, :math:`\\sqrt{q_{0,A}}`.
        p0_exp: Median expected p-value :math:`1 - \\Phi(\\sqrt{q_{0,A}})`.
        q0_obs: Observed :math:`q_0`.
        mu_hat: Best-fit POI on the observed data.
        q0_asimov: :math:`q_0` on the Asimov data set generated with :math:`\\mu = 1`.
        p0_exp_band: Expected p-value band ordered as :data:`BAND_N_SIGMA` (index 2 = ``p0_exp``).
        z0_exp_band: The same band as significances.
    """

    z0_obs: float
    p0_obs: float
    z0_exp: float
    p0_exp: float
    q0_obs: float
    mu_hat: float
    q0_asimov: float
    p0_exp_band: tuple[float, ...]
    z0_exp_band: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dictionary."""
        out: dict[str, Any] = _jsonable(asdict(self))
        return out


@dataclass(frozen=True)
class UpperLimitResult:
    """Outcome of :func:`sigtune.hep.upper_limit`.

    Attributes:
        obs: Observed upper limit on the POI at confidence level ``cl``.
        exp: Expected limits, 5 values ordered as :data:`BAND_N_SIGMA` (index 2: median,
            index 0: -2 sigma, index 4: +2 sigma).
        cl: Confidence level (``1 - alpha``).
        test_stat: Test statistic used for CLs.
        n_fits: Number of likelihood fits the root finding needed.
    """

    obs: float
    exp: tuple[float, ...]
    cl: float
    test_stat: str
    n_fits: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dictionary."""
        out: dict[str, Any] = _jsonable(asdict(self))
        return out


@dataclass(frozen=True, eq=False)
class ScanResult:
    """Profile-likelihood scan over the POI (:func:`sigtune.hep.profile_scan`).

    Attributes:
        poi_name: Name of the POI.
        poi_values: Scanned POI values, shape (K,).
        twice_nll: :math:`-2\\ln L(\\mu, \\hat{\\hat\\theta})` at each value, shape (K,).
        delta_twice_nll: :math:`t_\\mu = -2\\ln\\lambda(\\mu)` = ``twice_nll - twice_nll_min``.
        mu_hat: Unconditional best-fit POI.
        twice_nll_min: :math:`-2\\ln L` at the unconditional minimum.
        interval_68: (low, high) where :math:`t_\\mu = 1` (NaN: no crossing inside the POI bounds).
        interval_95: (low, high) where :math:`t_\\mu = 3.84` (NaN: no crossing inside the bounds).
        converged: Per-point convergence flags, shape (K,).
    """

    poi_name: str
    poi_values: NDArray[np.float64]
    twice_nll: NDArray[np.float64]
    delta_twice_nll: NDArray[np.float64]
    mu_hat: float
    twice_nll_min: float
    interval_68: tuple[float, float]
    interval_95: tuple[float, float]
    converged: NDArray[np.bool_] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dictionary."""
        out: dict[str, Any] = _jsonable(asdict(self))
        return out


@dataclass(frozen=True)
class RankingEntry:
    """Impacts of one constrained nuisance parameter on the POI.

    Every impact is :math:`\\hat\\mu(\\theta \\text{ fixed}) - \\hat\\mu`.

    Attributes:
        name: Parameter name (``"gamma_stat_SR[0]"`` for a bin of a vector modifier).
        index: Index in ``model.par_names``.
        theta_hat: Best-fit value.
        postfit_width: Post-fit uncertainty (Hessian).
        prefit_width: Pre-fit width of the constraint.
        prefit_up: Impact with :math:`\\theta = \\hat\\theta + \\Delta_{\\rm pre}`.
        prefit_down: Impact with :math:`\\theta = \\hat\\theta - \\Delta_{\\rm pre}`.
        postfit_up: Impact with :math:`\\theta = \\hat\\theta + \\Delta_{\\rm post}`.
        postfit_down: Impact with :math:`\\theta = \\hat\\theta - \\Delta_{\\rm post}`.
        total_impact: :math:`\\sqrt{(\\Delta\\mu_{\\rm up}^2 + \\Delta\\mu_{\\rm down}^2)/2}` of the
            post-fit impacts (root mean square); the ranking key.
    """

    name: str
    index: int
    theta_hat: float
    postfit_width: float
    prefit_width: float
    prefit_up: float
    prefit_down: float
    postfit_up: float
    postfit_down: float
    total_impact: float


@dataclass(frozen=True)
class RankingResult:
    """Impact ranking (:func:`sigtune.hep.ranking`): entries sorted by decreasing ``total_impact``.

    Attributes:
        poi_name: Name of the POI.
        mu_hat: Unconditional best-fit POI.
        mu_err: Its post-fit uncertainty.
        entries: One :class:`RankingEntry` per constrained, floating nuisance parameter.
    """

    poi_name: str
    mu_hat: float
    mu_err: float
    entries: tuple[RankingEntry, ...]

    def top(self, n: int) -> tuple[RankingEntry, ...]:
        """The ``n`` parameters with the largest total impact."""
        return self.entries[: max(int(n), 0)]

    def names(self) -> list[str]:
        """Parameter names in ranking order."""
        return [e.name for e in self.entries]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dictionary."""
        out: dict[str, Any] = _jsonable(asdict(self))
        return out
