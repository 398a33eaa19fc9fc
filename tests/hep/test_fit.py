"""Maximum-likelihood fits against pyhf (reference numbers and live fits) and closed checks."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyhf
import pytest
from _generate import saddle_workspace, synthetic_workspace, workspaces
from _refs import CASES, REF, SBOTTOM
from _refs import case as _case
from _refs import case_model as _model
from _refs import pyhf_model as _pyhf_model
from hypothesis import HealthCheck, given, settings

import sigtune.hep as hep
from sigtune.hep import _model as model_module

TOL = 1e-6  # our -2 ln L at the minimum may exceed pyhf's by at most this much


@functools.cache
def _bkgonly(region: str) -> hep.Workspace:
    return hep.Workspace(SBOTTOM / region / "BkgOnly.json")


def _sbottom(point: dict[str, Any]) -> tuple[hep.Model, np.ndarray]:
    ws = _bkgonly(point["region"]).patched(SBOTTOM / point["patch"])
    model = ws.model()
    return model, ws.data(model)


def _numerical_hessian(
    model: hep.Model, data: np.ndarray, x: np.ndarray, idx: np.ndarray
) -> np.ndarray:
    eps = 1e-4
    n = len(idx)
    H = np.zeros((n, n))
    f = lambda z: model.twice_nll(z, data)  # noqa: E731
    for a, i in enumerate(idx):
        for b, j in enumerate(idx):
            ei = np.zeros_like(x)
            ej = np.zeros_like(x)
            ei[i] = eps
            ej[j] = eps
            H[a, b] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * eps * eps
            )
    return H


@pytest.mark.parametrize("name", CASES)
def test_unconditional_fit_matches_pyhf_reference(name: str) -> None:
    case = _case(name)
    model, data = _model(case)
    res = hep.fit(model, data)
    ref = case["pyhf_0_7_6"]["unconditional_fit"]
    assert res.converged
    assert res.twice_nll <= ref["twice_nll"] + TOL
    assert res.twice_nll == pytest.approx(ref["twice_nll"], abs=1e-3)
    assert res.mu == pytest.approx(ref["mu_hat"], abs=2e-3)
    assert res.nll == pytest.approx(res.twice_nll / 2)
    assert res.twice_nll == pytest.approx(model.twice_nll(res.bestfit, data), rel=1e-14)


@pytest.mark.parametrize("point", REF["points"], ids=[p["name"] for p in REF["points"]])
def test_sbottom_fit_matches_pyhf(point: dict[str, Any]) -> None:
    model, data = _sbottom(point)
    res = hep.fit(model, data)
    ref = point["pyhf_computed"]["unconditional_fit"]
    assert res.converged
    assert res.twice_nll <= ref["twice_nll"] + TOL
    assert res.mu == pytest.approx(ref["mu_hat"], abs=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "point", REF["additional_points"], ids=[p["name"] for p in REF["additional_points"]]
)
def test_sbottom_additional_fits(point: dict[str, Any]) -> None:
    model, data = _sbottom(point)
    res = hep.fit(model, data)
    ref = point["pyhf_computed"]["unconditional_fit"]
    assert res.converged
    assert res.twice_nll <= ref["twice_nll"] + TOL
    assert res.mu == pytest.approx(ref["mu_hat"], abs=5e-3)


@pytest.mark.parametrize(
    "name", ["2bin_histosys", "2bin_2channel_couplednorm", "1bin_lumi", "shapesys_nuisparfilter"]
)
@pytest.mark.parametrize("mu", [0.0, 1.0, 2.5])
def test_conditional_fit_matches_live_pyhf(name: str, mu: float) -> None:
    case = _case(name)
    model, data = _model(case)
    st = case["settings"]
    pmodel, pdata = _pyhf_model(case["workspace"], st["normsys_interp"], st["histosys_interp"])
    _, pyhf_twice_nll = pyhf.infer.mle.fixed_poi_fit(mu, pdata, pmodel, return_fitted_val=True)
    res = hep.fit(model, data, poi_value=mu)
    assert res.converged
    assert res.mu == mu
    assert res.errors[model.poi_index] == 0.0
    assert res.twice_nll <= float(pyhf_twice_nll) + TOL
    assert res.twice_nll == pytest.approx(float(pyhf_twice_nll), abs=1e-3)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=workspaces())
def test_random_workspace_fits_match_pyhf(spec: dict[str, Any]) -> None:
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    pmodel, pdata = _pyhf_model(spec)
    _, ref = pyhf.infer.mle.fit(pdata, pmodel, return_fitted_val=True)
    res = hep.fit(model, data)
    assert res.converged
    assert res.twice_nll <= float(ref) + TOL
    _, ref0 = pyhf.infer.mle.fixed_poi_fit(0.0, pdata, pmodel, return_fitted_val=True)
    res0 = hep.fit(model, data, poi_value=0.0)
    assert res0.twice_nll <= float(ref0) + TOL
    assert res0.twice_nll >= res.twice_nll - TOL


def test_uncertainties_match_numerical_hessian() -> None:
    case = _case("2bin_2channel_couplednorm")
    model, data = _model(case)
    res = hep.fit(model, data)
    free = np.flatnonzero(~model.suggested_fixed())
    H = _numerical_hessian(model, data, res.bestfit, free)
    cov = 2.0 * np.linalg.inv(H)
    np.testing.assert_allclose(res.errors[free], np.sqrt(np.diag(cov)), rtol=1e-4)
    np.testing.assert_allclose(res.covariance[np.ix_(free, free)], cov, rtol=1e-3, atol=1e-8)
    corr = res.correlation
    np.testing.assert_allclose(np.diag(corr), 1.0)
    np.testing.assert_allclose(corr, corr.T, atol=1e-12)
    assert np.all(np.abs(corr) <= 1 + 1e-12)


def test_arrowhead_covariance_equals_dense_inverse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_module, "_DENSE_MAX_PARS", 0)
    monkeypatch.setattr(model_module, "_JIT_MAX_PARS", 0)
    ws = hep.Workspace(synthetic_workspace(40, 6))
    model = ws.model()
    assert model.arrays.n_local == 40
    data = ws.data(model)
    res = hep.fit(model, data)
    assert res.converged
    consts = model._constants(data[None])
    _, _, HDD, HDL, HLL, _ = model._derivatives(res.bestfit[None], consts)
    P = model.n_pars
    H = np.zeros((P, P))
    d, loc = model.arrays.dense, model.arrays.local
    H[np.ix_(d, d)] = HDD[0]
    H[np.ix_(d, loc)] = HDL[0]
    H[np.ix_(loc, d)] = HDL[0].T
    H[loc, loc] = HLL[0]
    cov = 2.0 * np.linalg.inv(H)
    np.testing.assert_allclose(res.covariance, cov, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(res.errors, np.sqrt(np.diag(cov)), rtol=1e-8)


def test_fixed_parameters_and_bounds() -> None:
    case = _case("2bin_2channel_couplednorm")
    model, data = _model(case)
    free_fit = hep.fit(model, data)
    res = hep.fit(model, data, fixed={"coupled_normsys": 0.5})
    i = model.par_index("coupled_normsys")
    assert res.bestfit[i] == 0.5
    assert res.errors[i] == 0.0
    assert res.twice_nll >= free_fit.twice_nll - 1e-9
    by_index = hep.fit(model, data, fixed={i: 0.5})
    assert by_index.twice_nll == pytest.approx(res.twice_nll, abs=1e-9)
    mask = np.zeros(model.n_pars, bool)
    mask[i] = True
    by_mask = hep.fit(model, data, fixed=mask, init=np.where(mask, 0.5, model.suggested_init()))
    assert by_mask.twice_nll == pytest.approx(res.twice_nll, abs=1e-9)
    bounded = hep.fit(model, data, bounds={"mu": (0.0, 1.0)})
    assert bounded.mu == pytest.approx(1.0)  # unconstrained optimum is ~1.5
    assert bounded.twice_nll >= free_fit.twice_nll
    with pytest.raises(hep.HepFitError, match="unknown parameter 'nope'"):
        hep.fit(model, data, fixed={"nope": 1.0})
    with pytest.raises(hep.HepFitError, match="out of range"):
        hep.fit(model, data, fixed={99: 1.0})
    with pytest.raises(hep.HepFitError, match="low <= high"):
        hep.fit(model, data, bounds={"mu": (2.0, 1.0)})


def test_to_metrics() -> None:
    model, data = _model(_case("1bin_normsys"))
    res = hep.fit(model, data)
    metrics = res.to_metrics("fit/")
    assert metrics["fit/mu"] == res.mu
    assert metrics["fit/mu_err"] == res.mu_err > 0
    assert metrics["fit/nll"] == res.nll
    assert metrics["fit/twice_nll"] == res.twice_nll
    assert metrics["fit/converged"] == 1.0
    assert metrics["fit/edm"] == res.edm < 1e-6
    assert metrics["fit/time_ms"] > 0
    assert metrics["fit/bkg_norm"] == res.bestfit[model.par_index("bkg_norm")]
    assert "fit/bkg_norm_err" in metrics
    assert all(isinstance(v, float) for v in metrics.values())
    pulls = res.pulls(model)
    assert pulls["bkg_norm"] == pytest.approx(res.bestfit[model.par_index("bkg_norm")])


def test_fit_batch_of_toys_equals_single_fits() -> None:
    case = _case("2bin_2channel_coupledhistosys")
    model, _ = _model(case)
    rng = np.random.default_rng(0)
    expected = model.expected_data(model.suggested_init())
    toys = rng.poisson(expected, size=(16, model.n_data)).astype(float)
    toys[:, model.n_main :] = model.auxdata  # keep the auxdata fixed, as pyhf's toys do not
    batch = hep.fit_batch(model, toys)
    assert len(batch) == 16
    assert batch.converged.all()
    for b in range(16):
        single = hep.fit(model, toys[b])
        assert batch.twice_nll[b] == pytest.approx(single.twice_nll, abs=1e-7)
        assert batch[b].twice_nll == batch.twice_nll[b]
    cond = hep.fit_batch(model, toys, poi_value=np.linspace(0, 2, 16), uncertainties=True)
    np.testing.assert_array_equal(cond.mu, np.linspace(0, 2, 16))
    assert np.all(cond.errors[:, model.poi_index] == 0)
    for b in (0, 7, 15):
        single = hep.fit(model, toys[b], poi_value=float(cond.mu[b]))
        assert cond.twice_nll[b] == pytest.approx(single.twice_nll, abs=1e-7)
        np.testing.assert_allclose(cond.errors[b], single.errors, rtol=1e-6)


def test_fit_batch_of_stacked_models() -> None:
    specs = [synthetic_workspace(10, 2, seed=s) for s in range(8)]
    wss = [hep.Workspace(s) for s in specs]
    models = [w.model() for w in wss]
    datas = np.stack([w.data(m) for w, m in zip(wss, models, strict=True)])
    stacked = hep.stack_models(models)
    batch = hep.fit_batch(stacked, datas)
    assert batch.converged.all()
    for b, (m, d) in enumerate(zip(models, datas, strict=True)):
        single = hep.fit(m, d)
        assert batch.twice_nll[b] == pytest.approx(single.twice_nll, abs=1e-7)
        np.testing.assert_allclose(batch.bestfit[b], single.bestfit, atol=1e-5)
    with pytest.raises(hep.HepFitError, match="fit it with fit_batch"):
        hep.fit(stacked, datas[0])
    with pytest.raises(hep.HepFitError, match="holds 8 models"):
        hep.fit_batch(stacked, datas[:3])


@pytest.mark.parametrize("name", ["2bin_histosys", "1bin_shapesys", "2bin_2channel"])
def test_asimov_data_matches_pyhf(name: str) -> None:
    case = _case(name)
    model, data = _model(case)
    st = case["settings"]
    pmodel, pdata = _pyhf_model(case["workspace"], st["normsys_interp"], st["histosys_interp"])
    ref = pyhf.infer.calculators.generate_asimov_data(
        0.0,
        pdata,
        pmodel,
        pmodel.config.suggested_init(),
        pmodel.config.suggested_bounds(),
        pmodel.config.suggested_fixed(),
    )
    ours = hep.asimov_data(model, data, 0.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-4)
    # the Asimov data are the model's expectation at the conditional fit
    res = hep.fit(model, data, poi_value=0.0)
    np.testing.assert_allclose(ours, model.expected_data(res.bestfit), rtol=1e-12)
    # fitting the Asimov data with mu free returns mu = 0 (at its bound)
    assert hep.fit(model, ours).mu == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "name", ["2bin_2channel_coupledshapefactor", "shapesys_nuisparfilter", "1bin_lumi"]
)
def test_arrowhead_engine_fits_like_dense(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = _case(name)
    dense_model, data = _model(case)
    monkeypatch.setattr(model_module, "_DENSE_MAX_PARS", 0)
    monkeypatch.setattr(model_module, "_JIT_MAX_PARS", 0)
    arrow_model, _ = _model(case)
    assert dense_model.arrays.dense_layout and not arrow_model.arrays.dense_layout
    a, b = hep.fit(dense_model, data), hep.fit(arrow_model, data)
    assert a.twice_nll == pytest.approx(b.twice_nll, abs=1e-8)
    np.testing.assert_allclose(a.errors, b.errors, rtol=1e-5)


def test_large_model_uses_arrowhead_and_fits() -> None:
    ws = hep.Workspace(synthetic_workspace(300, 10))
    model = ws.model()
    assert not model.arrays.dense_layout
    assert model.arrays.n_local == 300
    res = hep.fit(model, ws.data(model))
    assert res.converged
    pmodel, pdata = _pyhf_model(ws.spec)
    assert res.twice_nll <= float(-2 * pmodel.logpdf(pmodel.config.suggested_init(), pdata)[0])
    grad = model._derivatives(res.bestfit[None], model._constants(ws.data(model)[None]))[1]
    assert np.abs(grad).max() < 1e-3


def test_fit_errors() -> None:
    model, data = _model(_case("1bin_normsys"))
    with pytest.raises(hep.HepFitError, match="data must have shape"):
        hep.fit(model, data[:1])
    with pytest.raises(hep.HepFitError, match="use fit_batch"):
        hep.fit(model, np.stack([data, data]))
    with pytest.raises(hep.HepFitError, match="init must have"):
        hep.fit(model, data, init=[1.0])
    with pytest.raises(hep.HepFitError, match="not finite at any starting point"):
        hep.fit(
            model,
            data,
            poi_value=0.0,
            fixed={"bkg_norm": None},
            bounds={"bkg_norm": (-5, 5)},
            init=[0.0, -1e6],
        )


@pytest.mark.parametrize("name", ["1bin_shapesys", "2bin_2channel_coupledshapefactor", "1bin_lumi"])
def test_fit_batch_without_alpha_parameters(name: str) -> None:
    """Batches of models whose rates do not depend on normsys/histosys (broadcasting path)."""
    model, data = _model(_case(name))
    rng = np.random.default_rng(4)
    toys = np.repeat(data[None], 12, axis=0)
    toys[:, : model.n_main] = rng.poisson(data[: model.n_main], size=(12, model.n_main))
    batch = hep.fit_batch(model, toys, uncertainties=True)
    for b in (0, 5, 11):
        single = hep.fit(model, toys[b])
        assert batch.twice_nll[b] == pytest.approx(single.twice_nll, abs=1e-7)
        np.testing.assert_allclose(batch.errors[b], single.errors, rtol=1e-4)


def test_fit_leaves_a_saddle_point() -> None:
    """Zero gradient and negative curvature at the start (symmetric histosys, data excess)."""
    spec = saddle_workspace()
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    i = model.par_index("shape")
    start = model.suggested_init()
    start[model.poi_index] = 0.0
    consts = model._constants(data[None])
    _, g, H, *_ = model._derivatives(start[None], consts)
    assert g[0, i] == pytest.approx(0.0, abs=1e-12)
    assert H[0, i, i] < 0  # a saddle: maximum along "shape"
    res = hep.fit(model, data, poi_value=0.0)
    grid = np.linspace(-5, 5, 20001)
    pars = np.repeat(start[None], grid.size, axis=0)
    pars[:, i] = grid
    best = model.twice_nll(pars, np.repeat(data[None], grid.size, axis=0)).min()
    assert res.converged
    assert abs(res.bestfit[i]) > 0.5
    assert res.twice_nll <= best + 1e-9
