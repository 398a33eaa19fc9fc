"""Profile-likelihood scan: closed form of a one-bin counting experiment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats
from test_infer import counting_spec, two_bin_spec

from sigtune.hep._scan import profile_scan
from sigtune.hep._validate import HepInputError
from sigtune.hep._workspace import Workspace

S, B, N = 10.0, 50.0, 75.0


def _t_exact(mu: float) -> float:
    nu = mu * S + B
    return 2.0 * (nu - N + N * math.log(N / nu))


def _build(spec: dict) -> tuple:  # type: ignore[type-arg]
    ws = Workspace(spec)
    model = ws.model()
    return model, ws.data(model)


def test_scan_matches_closed_form() -> None:
    model, data = _build(counting_spec(S, B, N))
    grid = np.linspace(0.0, 6.0, 25)
    res = profile_scan(model, data, grid)
    mu_hat = (N - B) / S
    assert res.mu_hat == pytest.approx(mu_hat, abs=1e-6)
    np.testing.assert_allclose(res.delta_twice_nll, [_t_exact(m) for m in grid], atol=1e-7)
    np.testing.assert_allclose(res.poi_values, grid)
    assert res.twice_nll.shape == grid.shape and bool(np.all(res.converged))
    assert res.poi_name == "mu"
    # Intervals: where t_mu crosses 1 and chi2_1(95%) = 3.841.
    for level, interval in ((1.0, res.interval_68), (stats.chi2.ppf(0.95, 1), res.interval_95)):
        lo = optimize.brentq(lambda m, lv=level: _t_exact(m) - lv, 0.0, mu_hat)
        hi = optimize.brentq(lambda m, lv=level: _t_exact(m) - lv, mu_hat, 20.0)
        assert interval[0] == pytest.approx(lo, abs=1e-6)
        assert interval[1] == pytest.approx(hi, abs=1e-6)
    # Gaussian regime: the 68% interval is close to +-1 sigma, sigma = sqrt(N) / S.
    assert res.interval_68[1] - res.interval_68[0] == pytest.approx(2 * math.sqrt(N) / S, rel=0.05)


def test_scan_interval_outside_range_is_nan() -> None:
    model, data = _build(counting_spec(S, B, N))
    res = profile_scan(model, data, np.linspace(2.0, 3.0, 5))
    assert math.isnan(res.interval_95[0]) and math.isnan(res.interval_95[1])


def test_default_grid_centres_on_best_fit() -> None:
    model, data = _build(two_bin_spec())
    res = profile_scan(model, data, n_points=11)
    assert res.poi_values.size == 11
    assert res.poi_values[0] <= max(res.mu_hat, 0.0) <= res.poi_values[-1]
    assert float(np.min(res.delta_twice_nll)) >= 0.0
    d = res.to_dict()
    assert d["poi_name"] == "mu" and len(d["delta_twice_nll"]) == 11


def test_scan_bad_input() -> None:
    model, data = _build(counting_spec(S, B, N))
    with pytest.raises(HepInputError, match="outside the POI bounds"):
        profile_scan(model, data, [-1.0, 1.0])
    with pytest.raises(HepInputError, match="n_points must be >= 2"):
        profile_scan(model, data, n_points=1)
