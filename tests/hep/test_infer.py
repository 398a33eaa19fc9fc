"""Test statistics, asymptotic formulas, hypotest, discovery and upper limits.

Oracles: closed forms of arXiv:1007.1727 for a counting experiment, and pyhf 0.7.6.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import special

import sigtune.hep._infer as infer_mod
from sigtune.hep._closed_form import z_asimov
from sigtune.hep._infer import (
    AsymptoticCalculator,
    _expected_sqrt_qa_for_cls,
    asymptotic_pvalues,
    discovery,
    expected_pvalues,
    hypotest,
    q0,
    qmu,
    qmu_tilde,
    tmu,
    upper_limit,
)
from sigtune.hep._validate import HepInputError
from sigtune.hep._workspace import Workspace

pyhf = pytest.importorskip("pyhf")


def counting_spec(s: float, b: float, n: float, sigma_b: float | None = None) -> dict[str, Any]:
    """One bin: signal x mu + background (optionally with a shapesys of absolute size sigma_b)."""
    bkg_mods: list[dict[str, Any]] = []
    if sigma_b is not None:
        bkg_mods.append({"name": "bkg_unc", "type": "shapesys", "data": [sigma_b]})
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [s],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {"name": "background", "data": [b], "modifiers": bkg_mods},
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [n]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def two_bin_spec() -> dict[str, Any]:
    """pyhf's uncorrelated_background example with a normsys and a histosys added."""
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [12.0, 11.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [50.0, 52.0],
                        "modifiers": [
                            {"name": "uncorr_bkguncrt", "type": "shapesys", "data": [3.0, 7.0]},
                            {"name": "norm", "type": "normsys", "data": {"hi": 1.05, "lo": 0.96}},
                            {
                                "name": "shape",
                                "type": "histosys",
                                "data": {"hi_data": [52.0, 51.0], "lo_data": [48.5, 53.0]},
                            },
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [51.0, 48.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def build(spec: dict[str, Any]) -> tuple[Any, np.ndarray]:
    ws = Workspace(spec)
    model = ws.model()
    return model, ws.data(model)


def pyhf_build(spec: dict[str, Any]) -> tuple[Any, list[float]]:
    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(spec)
    model = ws.model()
    return model, ws.data(model)


# ----------------------------------------------------------------------------- pure formulas


def test_asymptotic_pvalues_q_closed_form() -> None:
    q, qa = 2.3, 5.1
    clsb, clb, cls = asymptotic_pvalues(q, qa, "q")
    assert clsb == pytest.approx(special.ndtr(-math.sqrt(q)), rel=1e-14)  # Eq. 59
    assert clb == pytest.approx(special.ndtr(math.sqrt(qa) - math.sqrt(q)), rel=1e-14)
    assert cls == pytest.approx(clsb / clb, rel=1e-12)


def test_asymptotic_pvalues_qtilde_beyond_asimov() -> None:
    q, qa = 9.0, 4.0  # q > q_A: (q - q_A) / (2 sqrt(q_A)) replaces sqrt(q) - sqrt(q_A)
    x = (q - qa) / (2 * math.sqrt(qa))
    clsb, clb, _cls = asymptotic_pvalues(q, qa, "qtilde")
    assert clsb == pytest.approx(special.ndtr(-(x + 2.0)), rel=1e-13)
    assert clb == pytest.approx(special.ndtr(-x), rel=1e-13)
    # Below q_A the two statistics agree.
    assert asymptotic_pvalues(1.0, 4.0, "qtilde") == pytest.approx(
        asymptotic_pvalues(1.0, 4.0, "q")
    )


def test_asymptotic_pvalues_q0_is_p0() -> None:
    clsb, _, _ = asymptotic_pvalues(9.0, 16.0, "q0")
    assert clsb == pytest.approx(special.ndtr(-3.0), rel=1e-13)


def test_cls_in_far_tail_is_finite() -> None:
    _, _, cls = asymptotic_pvalues(3000.0, 3000.0, "q")
    assert 0.0 <= cls < 1e-300 or cls == 0.0
    _, _, cls_exp = expected_pvalues(2500.0)
    assert all(np.isfinite(cls_exp))


def test_no_sensitivity_gives_cls_one() -> None:
    assert asymptotic_pvalues(0.0, 0.0, "qtilde")[2] == 1.0
    assert expected_pvalues(0.0)[2] == (1.0,) * 5


def test_expected_band_median_and_order() -> None:
    qa = 3.3
    _clsb, clb, cls = expected_pvalues(qa)
    assert clb[2] == 0.5
    assert cls[2] == pytest.approx(special.ndtr(-math.sqrt(qa)) / 0.5, rel=1e-13)
    assert list(cls) == sorted(cls)


@pytest.mark.parametrize("n_sigma", [2.0, 1.0, 0.0, -1.0, -2.0])
def test_expected_sqrt_qa_inversion(n_sigma: float) -> None:
    s = _expected_sqrt_qa_for_cls(0.05, n_sigma)
    assert special.ndtr(-(n_sigma + s)) / special.ndtr(-n_sigma) == pytest.approx(0.05, rel=1e-12)


@pytest.mark.parametrize("bad", ["qmu", "t", ""])
def test_unknown_test_stat_raises(bad: str) -> None:
    with pytest.raises(HepInputError, match="test_stat"):
        asymptotic_pvalues(1.0, 1.0, bad)


# ----------------------------------------------------------------------------- counting experiment


def test_counting_test_statistics_closed_form() -> None:
    s, b, n = 10.0, 50.0, 62.0
    model, data = build(counting_spec(s, b, n))
    mu_hat = (n - b) / s

    def t_exact(mu: float) -> float:
        nu = mu * s + b
        return 2 * (nu - n + n * math.log(n / nu))

    assert tmu(model, data, 2.0) == pytest.approx(t_exact(2.0), abs=1e-7)
    assert qmu(model, data, 2.0) == pytest.approx(t_exact(2.0), abs=1e-7)
    assert qmu_tilde(model, data, 2.0) == pytest.approx(t_exact(2.0), abs=1e-7)
    # mu below mu_hat: the one-sided statistics vanish, t_mu does not.
    assert qmu(model, data, 0.5 * mu_hat) == 0.0
    assert tmu(model, data, 0.5 * mu_hat) == pytest.approx(t_exact(0.5 * mu_hat), abs=1e-7)
    assert q0(model, data) == pytest.approx(2 * (n * math.log(n / b) - (n - b)), abs=1e-7)
    with pytest.raises(HepInputError, match="mu = 0"):
        q0(model, data, 1.0)


def test_discovery_counting_matches_closed_forms() -> None:
    s, b, n = 25.0, 50.0, 68.0
    model, data = build(counting_spec(s, b, n))
    res = discovery(model, data)
    assert res.mu_hat == pytest.approx((n - b) / s, abs=1e-6)
    assert res.q0_obs == pytest.approx(2 * (n * math.log(n / b) - (n - b)), abs=1e-7)
    assert res.z0_obs == pytest.approx(math.sqrt(res.q0_obs), rel=1e-12)
    assert res.p0_obs == pytest.approx(special.ndtr(-res.z0_obs), rel=1e-10)
    # Median expected Z0 with Asimov data at mu = 1 is Z_A(s, b) (Eq. 97): 3.289.
    assert res.z0_exp == pytest.approx(z_asimov(s, b), rel=1e-6)
    assert res.z0_exp == pytest.approx(3.289, abs=5e-4)
    assert res.p0_exp == res.p0_exp_band[2]
    assert res.z0_exp_band[2] == pytest.approx(res.z0_exp, rel=1e-9)


def test_discovery_with_shapesys_matches_closed_form_with_uncertainty() -> None:
    # Observed = s + b: the Asimov data at mu = 1 coincide with the observation, and the shapesys
    # Poisson constraint (tau = b^2 / sigma_b^2) is the auxiliary measurement of the closed form.
    s, b, sigma_b = 25.0, 50.0, 7.0
    model, data = build(counting_spec(s, b, s + b, sigma_b))
    res = discovery(model, data)
    assert res.z0_exp == pytest.approx(z_asimov(s, b, sigma_b), rel=1e-5)
    assert res.z0_obs == pytest.approx(res.z0_exp, rel=1e-5)


def test_discovery_fit_count_and_multistart_entry_points() -> None:
    # Free fit, the conditional fit generating the Asimov data (from the warm and the default
    # start: a worse local minimum there would make every expected result wrong), conditional
    # fits to the observed and Asimov data; the free fit to the Asimov data is analytic.
    # multistart adds starts to every conditional fit, through every entry point.
    model, data = build(two_bin_spec())
    single = hypotest(model, data, 0.0, test_stat="q0")
    assert single.n_fits <= 5
    assert set(single.fit_starts) == {"free", "observed", "asimov_data", "asimov"}
    # qtilde at mu = 1: the conditional fit to the observed data is a real fit; multistart
    # runs it from every start
    one = hypotest(model, data, 1.0)
    multi = hypotest(model, data, 1.0, multistart=True)
    assert multi.n_fits > one.n_fits
    # A well-behaved likelihood has one minimum: both strategies agree.
    assert multi.cls_obs == pytest.approx(one.cls_obs, abs=1e-9)
    assert multi.cls_exp == pytest.approx(one.cls_exp, abs=1e-9)
    d1, d2 = discovery(model, data), discovery(model, data, multistart=True)
    assert d2.z0_exp == pytest.approx(d1.z0_exp, abs=1e-6)
    calls: list[int] = []
    real = infer_mod.AsymptoticCalculator.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(int(kwargs.get("multistart", False)))
        real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(infer_mod.AsymptoticCalculator, "__init__", spy)
        hypotest(model, data, 1.0, multistart=True)
        upper_limit(model, data, multistart=True)
        discovery(model, data, multistart=True)
    assert calls == [1, 1, 1]


# ----------------------------------------------------------------------------- against pyhf


@pytest.mark.parametrize("test_stat", ["qtilde", "q"])
@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_hypotest_against_pyhf(test_stat: str, mu: float) -> None:
    spec = two_bin_spec()
    model, data = build(spec)
    pmodel, pdata = pyhf_build(spec)
    res = hypotest(model, data, mu, test_stat=test_stat)
    cls_obs, tails, exp = pyhf.infer.hypotest(
        mu, pdata, pmodel, test_stat=test_stat, return_tail_probs=True, return_expected_set=True
    )
    clsb, clb = tails
    assert res.cls_obs == pytest.approx(float(cls_obs), rel=2e-4)
    assert res.clsb_obs == pytest.approx(float(clsb), rel=2e-4)
    assert res.clb_obs == pytest.approx(float(clb), rel=2e-4)
    np.testing.assert_allclose(res.cls_exp, np.asarray(exp, dtype=float), rtol=2e-4)
    assert res.mu == mu and res.test_stat == test_stat and res.calctype == "asymptotics"


def test_discovery_against_pyhf() -> None:
    spec = two_bin_spec()
    spec["observations"][0]["data"] = [66.0, 60.0]
    model, data = build(spec)
    pmodel, pdata = pyhf_build(spec)
    res = discovery(model, data)
    p0, p0_exp = pyhf.infer.hypotest(0.0, pdata, pmodel, test_stat="q0", return_expected_set=True)
    assert res.p0_obs == pytest.approx(float(p0), rel=2e-4)
    np.testing.assert_allclose(res.p0_exp_band, np.asarray(p0_exp, dtype=float), rtol=2e-4)
    assert res.z0_obs > 1.0


def test_upper_limit_against_pyhf_and_definition() -> None:
    spec = two_bin_spec()
    model, data = build(spec)
    pmodel, pdata = pyhf_build(spec)
    res = upper_limit(model, data, cl=0.95)
    obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(pdata, pmodel, rtol=1e-5)
    assert res.obs == pytest.approx(float(obs), rel=5e-4)
    np.testing.assert_allclose(res.exp, np.asarray(exp, dtype=float), rtol=5e-4)
    # The limit is where CLs = 0.05, and the band is ordered.
    assert hypotest(model, data, res.obs).cls_obs == pytest.approx(0.05, abs=1e-6)
    for k, mu_k in enumerate(res.exp):
        assert hypotest(model, data, mu_k).cls_exp[k] == pytest.approx(0.05, abs=1e-6)
    assert list(res.exp) == sorted(res.exp)
    # (safeguarded secant seeded with the cached fits; checked brackets: see _profile)
    assert res.n_fits < 60


def test_upper_limit_cl_changes_limit() -> None:
    model, data = build(two_bin_spec())
    assert upper_limit(model, data, cl=0.90).obs < upper_limit(model, data, cl=0.95).obs


def test_calculator_reuses_fits() -> None:
    model, data = build(two_bin_spec())
    calc = AsymptoticCalculator(model, data)
    calc.hypotest(1.0)
    n = calc.n_fits
    calc.hypotest(1.0)
    assert calc.n_fits == n
    # The Asimov data set: main bins are the background-only expectation.
    asimov = calc.asimov_data()
    assert asimov.shape == data.shape


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_our_errors() -> None:
    model, data = build(two_bin_spec())
    with pytest.raises(HepInputError, match="calctype"):
        hypotest(model, data, 1.0, calctype="bayes")
    with pytest.raises(HepInputError, match="test_stat"):
        hypotest(model, data, 1.0, test_stat="qq")
    with pytest.raises(HepInputError, match="cl must be in"):
        upper_limit(model, data, cl=95)
    with pytest.raises(HepInputError, match="data must be a 1-d array"):
        hypotest(model, data[:-1], 1.0)
    with pytest.raises(HepInputError, match="init must have shape"):
        hypotest(model, data, 1.0, init=[1.0])
    bounds = model.suggested_bounds()
    bounds[model.poi_index] = [-5.0, 10.0]
    with pytest.raises(HepInputError, match="qtilde needs the POI bounded below at 0"):
        hypotest(model, data, 1.0, bounds=bounds)
    # q accepts a negative POI range.
    assert 0.0 <= hypotest(model, data, 1.0, test_stat="q", bounds=bounds).cls_obs <= 1.0
    with pytest.raises(HepInputError, match="q0"):
        hypotest(model, data, 1.0, test_stat="q0")


def test_limit_outside_bounds_raises() -> None:
    from sigtune.hep._exceptions import HepError, HepFitWarning

    # the limit (~30) lies above the POI bound 10: found, with a warning (the POI is fixed in
    # every conditional fit, so its bound only limits the free fit) ...
    model, data = build(counting_spec(0.5, 50.0, 50.0))
    with pytest.warns(HepFitWarning, match="above the POI upper bound 10"):
        res = upper_limit(model, data)
    assert 10.0 < res.obs < 100.0
    # ... but not beyond 100 x the bound
    bounds = model.suggested_bounds()
    bounds[model.poi_index] = [0.0, 0.2]
    with pytest.raises(HepError, match="widen the POI bounds"):
        upper_limit(model, data, bounds=bounds)
