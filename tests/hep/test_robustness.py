"""Issue 17: the engine is right on real and adversarial likelihoods, or says so.

Regression cases (each fails on the engine before the fix) and a property test on hard random
workspaces (``_generate.hard_workspace``) against pyhf, whose ``logpdf`` is the independent
evaluation of -2 ln L at our points.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _generate import hard_workspace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sigtune.hep as hep
from sigtune.hep import _fit, _jit
from sigtune.hep._infer import AsymptoticCalculator

pyhf = pytest.importorskip("pyhf")
logging.getLogger("pyhf").setLevel(logging.CRITICAL)

REAL = Path(__file__).resolve().parents[1] / "data" / "histfactory" / "real"


def _ewk_150_1() -> tuple[hep.Model, np.ndarray]:
    ws = hep.Workspace(REAL / "erjr_BkgOnly.json")
    ws = ws.patched(json.loads((REAL / "patch.ERJR_150p0_1p0.json").read_text()))
    model = ws.model()
    return model, ws.data(model)


def _check_at(model: hep.Model, data: np.ndarray, res: Any, **setup: Any) -> _fit.MinimumCheck:
    """check_minimum at a fit result, with fresh derivatives."""
    _, free, lo, hi = _fit._setup(model, 1, None, None, None, setup.get("poi_value"))
    consts = model._constants(np.asarray(data, float)[None])
    x = np.asarray(res.bestfit, float)[None]
    return _fit.check_minimum(model, x, model._derivatives(x, consts), free, lo, hi)


# ------------------------------------------------------------------ large-tau shapesys (real)


@pytest.mark.parametrize("jit", [True, False], ids=["compiled", "numpy"])
def test_ewk_150_1_reaches_the_lowest_minimum(jit: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # shapesys with sigma 0.001 on ~435 events: tau ~ 2e11. Before the fix, tau*gamma and the
    # constant cancelled to ~1e-4 absolute, the Newton step was over-damped, and the fit
    # returned -2 ln L 346.40 "converged" (edm 0.046); the lowest minimum is 272.412.
    if not jit:
        monkeypatch.setattr(_jit, "ENABLED", False)
    model, data = _ewk_150_1()
    assert float(model.arrays.pois_tau.max()) > 1e11
    res = hep.fit(model, data)
    assert res.twice_nll == pytest.approx(272.41223, abs=1e-4)
    assert res.converged and res.edm < _fit.EDM_CONV
    assert _check_at(model, data, res).ok
    # hypotest's mu-hat is the fit's (it used 0 where fit said 0.76)
    h = hep.hypotest(model, data, 1.0)
    assert h.mu_hat == pytest.approx(res.mu, abs=1e-4)


def test_large_tau_constraint_term_has_no_cancellation() -> None:
    # -2 ln L of a single shapesys constraint with tau = 1e12 at gamma = 1 + 1e-7: the exact
    # value of 2 (tau gamma - a ln gamma) + const (a = tau) changes by tau * u^2 = 1e-2 from
    # gamma = 1, which the uncentred formula loses in rounding (ulp of 2 tau ~ 2.4e-4).
    spec = {
        "channels": [
            {
                "name": "c",
                "samples": [
                    {"name": "s", "data": [1.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
                    {"name": "b", "data": [1e6], "modifiers": [{"name": "ss", "type": "shapesys", "data": [1e6 / 1e6**1]}]},
                ],
            }
        ],
        "observations": [{"name": "c", "data": [1e6]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }  # fmt: skip
    model = hep.Workspace(spec).model()
    data = hep.Workspace(spec).data(model)
    tau = float(model.arrays.pois_tau[0, 0])
    assert tau == pytest.approx(1e12)
    x = model.suggested_init()
    x1 = x.copy()
    x1[model.par_names.index("ss[0]")] = 1.0 + 1e-7
    d_main = float(model.twice_nll(x1, data) - model.twice_nll(x, data))
    # exact: main term 2(nu - n ln nu) with nu = 1 + 1e6 gamma and the constraint tau u^2
    nu0, nu1, n = 1.0 + 1e6, 1.0 + 1e6 * (1 + 1e-7), 1e6
    exact = 2 * (nu1 - nu0 - n * math.log1p((nu1 - nu0) / nu0)) + 2 * tau * (
        1e-7 - math.log1p(1e-7)
    )
    assert d_main == pytest.approx(exact, rel=1e-6)


# ------------------------------------------------------------------ convergence and restarts


def test_check_minimum_rejects_points_away_from_the_minimum() -> None:
    model, data = _ewk_150_1()
    res = hep.fit(model, data, uncertainties=False)
    assert _check_at(model, data, res).ok
    moved = np.array(res.bestfit, copy=True)
    moved[model.poi_index] += 0.05
    chk = _check_at(model, data, type("R", (), {"bestfit": moved})())
    assert not chk.ok
    assert chk.edm[0] > _fit.EDM_CONV


def _forced_failures(monkeypatch: pytest.MonkeyPatch, n_fail: int) -> list[int]:
    """Make the first ``n_fail`` minimisations report no minimum."""
    calls: list[int] = []
    real = _fit._fit_arrays

    def fake(*args: Any, **kwargs: Any) -> Any:
        x, f, edm, conv, n_iter, deriv = real(*args, **kwargs)
        calls.append(1)
        if len(calls) <= n_fail:
            conv = np.zeros_like(conv)
            edm = np.full_like(edm, 1.0)
        return x, f, edm, conv, n_iter, deriv

    monkeypatch.setattr(_fit, "_fit_arrays", fake)
    return calls


def test_restart_policy_warns_and_records_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = _ewk_150_1()
    monkeypatch.delenv("SIGTUNE_HEP_STRICT", raising=False)
    calls = _forced_failures(monkeypatch, 1)
    with pytest.warns(hep.HepFitWarning, match="first start did not converge"):
        res = hep.fit(model, data, uncertainties=False)
    assert res.converged and res.start == "perturbed-1" and res.n_fits == 2 == len(calls)
    assert res.twice_nll == pytest.approx(272.41223, abs=1e-4)


def test_not_converged_warns_and_strict_mode_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = _ewk_150_1()
    monkeypatch.delenv("SIGTUNE_HEP_STRICT", raising=False)
    _forced_failures(monkeypatch, 100)
    with pytest.warns(hep.HepFitWarning, match="did not converge after 3 starts"):
        res = hep.fit(model, data, uncertainties=False)
    assert not res.converged and res.n_fits == 1 + _fit.N_RESTARTS
    with pytest.raises(hep.HepFitError, match="did not converge"):
        hep.fit(model, data, uncertainties=False, strict=True)
    monkeypatch.setenv("SIGTUNE_HEP_STRICT", "1")
    with pytest.raises(hep.HepFitError, match="SIGTUNE_HEP_STRICT"):
        hep.fit(model, data, uncertainties=False)
    with pytest.raises(hep.HepFitError):
        hep.hypotest(model, data, 1.0)


# ------------------------------------------------------------------ starts of conditional fits


def _spec(channels: list[dict[str, Any]], obs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "channels": channels,
        "observations": obs,
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def test_non_finite_warm_start_falls_back_to_the_default_start() -> None:
    # 1 bin, a signal and a background with a shapefactor, 0 observed events: the free fit sends
    # the shapefactor to 0, so the warm start of the conditional fits sits where nu = 0; pyhf
    # answers, and so must we.
    spec = _spec(
        [
            {
                "name": "c",
                "samples": [
                    {"name": "s", "data": [2.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
                    {"name": "b", "data": [3.0], "modifiers": [{"name": "sf", "type": "shapefactor", "data": None}]},
                ],
            }
        ],
        [{"name": "c", "data": [0.0]}],
    )  # fmt: skip
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    res = hep.hypotest(model, data, 1.0, multistart=True)
    pws = pyhf.Workspace(spec)
    pm = pws.model()
    cls = pyhf.infer.hypotest(1.0, pws.data(pm), pm)
    if math.isfinite(float(cls)):
        assert res.cls_obs == pytest.approx(float(cls), rel=2e-3, abs=1e-6)
    assert math.isfinite(res.cls_obs)


def test_negative_yields_follow_pyhf() -> None:
    # A histosys pulls the background below 0. A bin with 0 observed events contributes nu
    # (finite, as pyhf's xlogy(0, nu) - nu); a bin with events and nu <= 0 is not finite.
    spec = _spec(
        [
            {
                "name": "c",
                "samples": [
                    {"name": "s", "data": [1.0, 1.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
                    {
                        "name": "b",
                        "data": [2.0, 2.0],
                        "modifiers": [
                            {"name": "h", "type": "histosys", "data": {"hi_data": [3.0, 3.0], "lo_data": [0.5, 0.5]}}
                        ],
                    },
                ],
            }
        ],
        [{"name": "c", "data": [0.0, 0.0]}],
    )  # fmt: skip
    ws = hep.Workspace(spec)
    pws = pyhf.Workspace(spec)
    for hcode in ("code0", "code4p"):
        model = ws.model(histosys_interp=hcode)
        pm = pws.model(
            modifier_settings={
                "histosys": {"interpcode": hcode},
                "normsys": {"interpcode": "code4"},
            }
        )
        data = ws.data(model)
        x = model.suggested_init()
        x[model.par_names.index("mu")] = 0.0
        x[model.par_names.index("h")] = -4.0  # b = 2 - 1.5 * 4 < 0
        nu = model.expected_data(x, include_auxdata=False)
        assert np.all(nu < 0)
        ours = float(model.twice_nll(x, data))
        theirs = float(-2.0 * pm.logpdf(x, np.asarray(pws.data(pm)))[0])
        assert math.isfinite(ours)
        assert ours == pytest.approx(theirs, rel=1e-10)
        # with observed events in a bin: not finite (pyhf: nan)
        d2 = np.array(data, copy=True)
        d2[0] = 1.0
        assert math.isinf(float(model.twice_nll(x, d2)))
        for jit in (True, False):
            old = _jit.ENABLED
            _jit.ENABLED = jit
            try:
                consts = model._constants(data[None])
                assert float(model._f(x[None], None, consts)[0]) == pytest.approx(ours, rel=1e-12)
            finally:
                _jit.ENABLED = old


def test_sbottom_limit_above_the_poi_bound_is_found_with_a_warning() -> None:
    ref = Path(__file__).resolve().parents[1] / "data" / "histfactory" / "sbottom" / "RegionC"
    ws = hep.Workspace(ref / "BkgOnly.json").patched(
        json.loads((ref / "patch.sbottom_1600_850_60.json").read_text())
    )
    model = ws.model(normsys_interp="code4", histosys_interp="code4p")
    data = ws.data(model)
    with pytest.warns(hep.HepFitWarning, match="above the POI upper bound 10"):
        res = hep.upper_limit(model, data)
    assert res.exp[4] > 10.0
    # the same limit with the bound widened, no warning
    bounds = model.suggested_bounds()
    bounds[model.poi_index] = [0.0, 50.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", hep.HepFitWarning)
        wide = hep.upper_limit(model, data, bounds=bounds)
    np.testing.assert_allclose(wide.exp, res.exp, rtol=1e-5)
    assert wide.obs == pytest.approx(res.obs, rel=1e-5)


# ------------------------------------------------------------------ property test vs pyhf


def _pyhf(spec: dict[str, Any]) -> tuple[Any, np.ndarray] | None:
    pyhf.set_backend("numpy")
    try:
        pws = pyhf.Workspace(spec)
        pm = pws.model()
        return pm, np.asarray(pws.data(pm))
    except Exception:
        return None


def _pyhf_fit(pm: Any, pd: np.ndarray, mu: float | None = None) -> float | None:
    try:
        if mu is None:
            _, f = pyhf.infer.mle.fit(pd, pm, return_fitted_val=True)
        else:
            _, f = pyhf.infer.mle.fixed_poi_fit(mu, pd, pm, return_fitted_val=True)
    except Exception:
        return None
    return float(f)


def _ours_not_above(ours: float, theirs: float | None) -> bool:
    return theirs is None or ours <= theirs + 1e-6 * (1.0 + abs(theirs))


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(seed=st.integers(0, 10_000))
def test_hard_workspaces_against_pyhf(seed: int) -> None:
    spec = hard_workspace(np.random.default_rng(seed))
    p = _pyhf(spec)
    if p is None:
        return  # pyhf cannot build it either (nothing to compare)
    pm, pd = p
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hep.HepFitWarning)
        res = hep.fit(model, data, uncertainties=False)
    # the independent evaluation of -2 ln L at our point
    assert res.twice_nll == pytest.approx(
        float(-2 * pm.logpdf(res.bestfit, pd)[0]), rel=1e-9, abs=1e-7
    )
    # our minimum is at or below pyhf's; converged only at a minimum
    assert _ours_not_above(res.twice_nll, _pyhf_fit(pm, pd))
    if res.converged:
        assert _check_at(model, data, res).ok
    # inference answers wherever pyhf does; the test statistics are differences of -2 ln L at
    # our points (pyhf's evaluation), and the Asimov-generating fit is at or below pyhf's
    try:
        pyhf.infer.hypotest(1.0, pd, pm, return_expected_set=True)
        pyhf_answers = True
    except Exception:
        pyhf_answers = False
    try:
        calc = AsymptoticCalculator(model, data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", hep.HepFitWarning)
            h = calc.hypotest(1.0)
    except hep.HepFitError:
        assert not pyhf_answers
        return
    gen = calc.observed.conditional(0.0)
    asimov = calc.asimov_data()
    assert _ours_not_above(gen.twice_nll, _pyhf_fit(pm, pd, 0.0))
    cond_a = calc.asimov.conditional(1.0)
    nll_a = float(-2 * pm.logpdf(cond_a.pars, asimov)[0]) - float(
        -2 * pm.logpdf(gen.pars, asimov)[0]
    )
    assert h.test_stat_asimov == pytest.approx(max(nll_a, 0.0), rel=1e-6, abs=1e-6)
    assert _ours_not_above(cond_a.twice_nll, _pyhf_fit(pm, asimov, 1.0))
    assert all(math.isfinite(v) for v in h.cls_exp)


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(seed=st.integers(0, 10_000))
def test_compiled_and_numpy_engines_reach_the_same_minima(seed: int) -> None:
    spec = hard_workspace(np.random.default_rng(seed))
    try:
        ws = hep.Workspace(spec)
        model = ws.model()
    except hep.HepWorkspaceError:
        return
    data = ws.data(model)
    out: list[tuple[float, float] | None] = []
    old = _jit.ENABLED
    try:
        for jit in (True, False):
            _jit.ENABLED = jit
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", hep.HepFitWarning)
                    free = hep.fit(model, data, uncertainties=False)
                    cond = hep.fit(model, data, poi_value=0.0, uncertainties=False)
                out.append((free.twice_nll, cond.twice_nll))
            except hep.HepFitError:
                out.append(None)
    finally:
        _jit.ENABLED = old
    a, b = out
    assert (a is None) == (b is None)  # both answer, or both say the likelihood is degenerate
    if a is not None and b is not None:
        assert a[0] == pytest.approx(b[0], rel=1e-9, abs=1e-6)
        assert a[1] == pytest.approx(b[1], rel=1e-9, abs=1e-6)


@pytest.mark.xfail(
    strict=True,
    reason="known defect of fit(): a second interior minimum (histosys alpha 0.50 vs 2.33) is "
    "not found from the one default start (no restart rule triggers on a converged interior "
    "minimum); the test statistics reach it (warm start from the free fit, and axis starts "
    "with multistart: test_axis_starts_reach_the_second_interior_minimum)",
)
def test_known_defect_second_interior_minimum() -> None:
    # hard_workspace seed 8: the conditional fit at mu = 0 from the suggested start converges to
    # -2 ln L 268.697 (edm 1e-12); pyhf (and our fit from pyhf's point) reach 265.505.
    spec = hard_workspace(np.random.default_rng(8))
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    res = hep.fit(model, data, poi_value=0.0, uncertainties=False)
    assert res.twice_nll <= 265.5054 + 1e-4


def test_axis_starts_reach_the_second_interior_minimum() -> None:
    # the same workspace through the profile likelihood (sigtune.hep._profile)
    from sigtune.hep._infer import AsymptoticCalculator, q0
    from sigtune.hep._profile import AXIS_STARTS_MAX_NPS, _fit_point, _Profile
    from sigtune.hep._validate import make_setup

    spec = hard_workspace(np.random.default_rng(8))
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    setup = make_setup(model, None, None, None)
    profile = _Profile(model, data, setup, multistart=True)
    axis = profile.axis_starts()
    # 3 constrained nuisance parameters (hs, ns, the shapesys gamma) x 4 shifts; gamma's -2
    # and -1 sigma lie inside its bounds too
    assert 3 <= len(axis) // 4 <= AXIS_STARTS_MAX_NPS and len(axis) == 12
    default, _ = _fit_point(model, data, setup, poi_value=0.0)
    assert default.twice_nll == pytest.approx(268.6972, abs=1e-3)  # the defect above
    best, n = _fit_point(
        model, data, setup, starts=[("init", setup.init), *axis], poi_value=0.0, all_starts=True
    )
    assert best.twice_nll == pytest.approx(265.5054, abs=1e-3)
    assert best.start.startswith("axis hs +")
    assert n == 13
    # multistart: the free and conditional fits run them; the result equals the plain one here
    # (the warm start from the free fit already reaches 265.505) and pyhf's q0
    plain = AsymptoticCalculator(model, data, test_stat="q0")
    multi = AsymptoticCalculator(model, data, test_stat="q0", multistart=True)
    hp, hm = plain.hypotest(0.0), multi.hypotest(0.0)
    assert multi.observed.conditional(0.0).twice_nll == pytest.approx(265.5054, abs=1e-3)
    assert hm.test_stat_obs == pytest.approx(hp.test_stat_obs, abs=1e-6)
    assert hm.n_fits > hp.n_fits
    pm = pyhf.Workspace(spec).model()
    pd = pyhf.Workspace(spec).data(pm)
    cfg = pm.config
    ref = pyhf.infer.test_statistics.q0(
        0.0, pd, pm, cfg.suggested_init(), cfg.suggested_bounds(), cfg.suggested_fixed()
    )
    assert q0(model, data) == pytest.approx(float(ref), rel=1e-6)
