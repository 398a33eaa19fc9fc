"""Model construction and likelihood against pyhf's reference numbers and pyhf itself."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _generate import arrowhead_model, random_workspace, synthetic_workspace, workspaces
from _refs import CASES, REF, SBOTTOM
from _refs import case as _case
from _refs import case_model as _model
from _refs import pyhf_model as _pyhf_model
from hypothesis import HealthCheck, given, settings

import sigtune.hep as hep


def _random_pars(model: hep.Model, rng: np.random.Generator) -> np.ndarray:
    lo, hi = model.suggested_bounds().T
    init = model.suggested_init()
    width = np.minimum(hi - lo, 2.0) * 0.4
    x = init + rng.uniform(-1, 1, model.n_pars) * width
    return np.clip(x, lo + 1e-3 * (hi - lo), hi)


def test_case_count() -> None:
    assert len(CASES) == 10


@pytest.mark.parametrize("name", CASES)
def test_model_checks(name: str) -> None:
    case = _case(name)
    checks = case["model_checks"]
    model, data = _model(case)
    assert model.parameters == checks["par_order"]
    assert model.n_pars == checks["n_pars"]
    np.testing.assert_array_equal(model.suggested_init(), checks["suggested_init"])
    np.testing.assert_array_equal(model.suggested_bounds(), checks["suggested_bounds"])
    assert model.suggested_fixed().tolist() == checks["suggested_fixed"]
    np.testing.assert_allclose(model.auxdata, checks["auxdata"], rtol=1e-12)
    np.testing.assert_allclose(data, checks["data_vector"], rtol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_twice_nll_at_suggested_init(name: str) -> None:
    case = _case(name)
    model, data = _model(case)
    expected = case["pyhf_0_7_6"]["twice_nll_at_suggested_init"]
    assert model.twice_nll(model.suggested_init(), data) == pytest.approx(expected, rel=1e-8)
    assert model.logpdf(model.suggested_init(), data) == pytest.approx(-expected / 2, rel=1e-8)


def _sbottom(point: dict[str, Any]) -> tuple[hep.Model, np.ndarray]:
    ws = hep.Workspace(SBOTTOM / point["bkgonly"]).patched(SBOTTOM / point["patch"])
    model = ws.model()
    return model, ws.data(model)


@pytest.mark.parametrize("point", REF["points"], ids=[p["name"] for p in REF["points"]])
def test_sbottom_twice_nll_at_init(point: dict[str, Any]) -> None:
    model, data = _sbottom(point)
    computed = point["pyhf_computed"]
    assert model.n_pars == computed["n_pars"]
    assert model.twice_nll(model.suggested_init(), data) == pytest.approx(
        computed["twice_nll_at_suggested_init"], rel=1e-8
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "point", REF["additional_points"], ids=[p["name"] for p in REF["additional_points"]]
)
def test_sbottom_additional_twice_nll_at_init(point: dict[str, Any]) -> None:
    model, data = _sbottom(point)
    assert model.twice_nll(model.suggested_init(), data) == pytest.approx(
        point["pyhf_computed"]["twice_nll_at_suggested_init"], rel=1e-8
    )


@pytest.mark.parametrize("name", CASES)
def test_expected_data_and_nll_match_pyhf_at_random_points(name: str) -> None:
    case = _case(name)
    model, data = _model(case)
    st = case["settings"]
    pmodel, pdata = _pyhf_model(case["workspace"], st["normsys_interp"], st["histosys_interp"])
    np.testing.assert_allclose(data, pdata)
    rng = np.random.default_rng(7)
    pars = np.stack([_random_pars(model, rng) for _ in range(5)])
    ours = model.expected_data(pars)
    theirs = np.stack([pmodel.expected_data(p) for p in pars])
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    np.testing.assert_allclose(
        model.twice_nll(pars, data),
        [-2 * float(pmodel.logpdf(p, pdata)[0]) for p in pars],
        rtol=1e-10,
    )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=workspaces())
def test_random_workspaces_match_pyhf(spec: dict[str, Any]) -> None:
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    pmodel, pdata = _pyhf_model(spec)
    assert model.par_names == list(pmodel.config.par_names)
    np.testing.assert_allclose(data, pdata)
    np.testing.assert_array_equal(model.suggested_fixed(), pmodel.config.suggested_fixed())
    np.testing.assert_allclose(model.suggested_bounds(), pmodel.config.suggested_bounds())
    rng = np.random.default_rng(1)
    for _ in range(3):
        pars = _random_pars(model, rng)
        np.testing.assert_allclose(
            model.expected_data(pars), pmodel.expected_data(pars), rtol=1e-10
        )
        assert model.twice_nll(pars, data) == pytest.approx(
            -2 * float(pmodel.logpdf(pars, pdata)[0]), rel=1e-10
        )


def _full_hessian(model: hep.Model, H: tuple[np.ndarray, ...]) -> np.ndarray:
    HDD, HDL, HLL = H
    P = model.n_pars
    out = np.zeros((P, P))
    d, loc = model.arrays.dense, model.arrays.local
    out[np.ix_(d, d)] = HDD[0]
    out[np.ix_(d, loc)] = HDL[0]
    out[np.ix_(loc, d)] = HDL[0].T
    out[loc, loc] = HLL[0]
    return out


def _check_derivatives(model: hep.Model, data: np.ndarray, pars: np.ndarray) -> None:
    consts = model._constants(data[None])
    f, g, HDD, HDL, HLL, _ = model._derivatives(pars[None], consts)
    assert f[0] == pytest.approx(model.twice_nll(pars, data), rel=1e-12)
    H = _full_hessian(model, (HDD, HDL, HLL))
    eps = 1e-6
    for i in range(model.n_pars):
        e = np.zeros(model.n_pars)
        e[i] = eps
        up = model._derivatives((pars + e)[None], consts)
        dn = model._derivatives((pars - e)[None], consts)
        num_g = (up[0][0] - dn[0][0]) / (2 * eps)
        num_h = (up[1][0] - dn[1][0]) / (2 * eps)
        assert g[0, i] == pytest.approx(num_g, rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(H[i], num_h, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=workspaces())
def test_analytic_gradient_and_hessian(spec: dict[str, Any]) -> None:
    ws = hep.Workspace(spec)
    for codes in (("code4", "code4p"), ("code1", "code0")):
        kwargs = {"normsys_interp": codes[0], "histosys_interp": codes[1]}
        for model in (ws.model(**kwargs), arrowhead_model(ws, **kwargs)):
            pars = _random_pars(model, np.random.default_rng(5))
            _check_derivatives(model, ws.data(model), pars)


@pytest.mark.parametrize("name", CASES)
def test_derivatives_on_cases(name: str) -> None:
    case = _case(name)
    model, data = _model(case)
    _check_derivatives(model, data, _random_pars(model, np.random.default_rng(2)))
    st = case["settings"]
    arrow = arrowhead_model(
        hep.Workspace(case["workspace"]),
        normsys_interp=st["normsys_interp"],
        histosys_interp=st["histosys_interp"],
    )
    _check_derivatives(arrow, data, _random_pars(arrow, np.random.default_rng(2)))


def test_derivatives_with_poi_at_zero() -> None:
    """A linear factor at exactly 0 (mu = 0) must not break the product derivatives."""
    spec = random_workspace(np.random.default_rng(11), n_channels=2)
    ws = hep.Workspace(spec)
    model = ws.model()
    pars = _random_pars(model, np.random.default_rng(0))
    assert model.poi_index is not None
    pars[model.poi_index] = 0.0
    consts = model._constants(ws.data(model)[None])
    _, g, *_ = model._derivatives(pars[None], consts)
    assert np.all(np.isfinite(g))
    _check_derivatives(
        model, ws.data(model), np.where(np.arange(model.n_pars) == model.poi_index, 1e-3, pars)
    )


def test_arrowhead_split_of_synthetic_model() -> None:
    ws = hep.Workspace(synthetic_workspace(50, 6))
    assert ws.model()._dense_engine  # small: dense engine by default
    model = arrowhead_model(ws)
    # one staterror gamma per bin goes to the diagonal block; mu + 6 alphas stay dense
    assert model.arrays.n_local == 50
    assert model.arrays.n_dense == 7
    _check_derivatives(model, ws.data(model), _random_pars(model, np.random.default_rng(4)))


def test_batched_evaluation_equals_loop() -> None:
    case = _case("2bin_2channel_coupledhistosys")
    model, data = _model(case)
    rng = np.random.default_rng(3)
    pars = np.stack([_random_pars(model, rng) for _ in range(4)])
    datas = np.stack([data * rng.uniform(0.9, 1.1, data.shape) for _ in range(4)])
    batched = model.twice_nll(pars, datas)
    assert batched.shape == (4,)
    for b in range(4):
        assert batched[b] == pytest.approx(model.twice_nll(pars[b], datas[b]), rel=1e-13)
    assert model.expected_data(pars).shape == (4, model.n_data)
    assert model.expected_data(pars[0], include_auxdata=False).shape == (model.n_main,)


def test_expected_auxdata() -> None:
    case = _case("1bin_shapesys")
    model, _ = _model(case)
    pars = model.suggested_init()
    pars[1] = 1.1
    aux = model.expected_data(pars)[model.n_main :]
    tau = case["model_checks"]["auxdata"][0]
    assert aux[0] == pytest.approx(1.1 * tau)


def test_constraint_width() -> None:
    model, _ = _model(_case("1bin_shapesys"))
    tau = model.auxdata[0]
    assert model.constraint_width(1) == pytest.approx(1 / np.sqrt(tau))
    assert model.constraint_width(0) is None  # the normfactor
    model, _ = _model(_case("1bin_lumi"))
    assert model.constraint_width(model.par_index("lumi")) == pytest.approx(0.1)
    with pytest.raises(hep.HepWorkspaceError, match="out of range"):
        model.constraint_width(99)


def test_staterror_width_combines_samples() -> None:
    spec = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "a",
                        "data": [10.0, 20.0],
                        "modifiers": [{"name": "stat", "type": "staterror", "data": [1.0, 2.0]}],
                    },
                    {
                        "name": "b",
                        "data": [30.0, 0.0],
                        "modifiers": [
                            {"name": "stat", "type": "staterror", "data": [3.0, 0.0]},
                            {"name": "mu", "type": "normfactor", "data": None},
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [40.0, 20.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    model = hep.Workspace(spec).model()
    i0 = model.par_index("stat[0]")
    assert model.constraint_width(i0) == pytest.approx(np.sqrt(1.0 + 9.0) / 40.0)
    assert model.constraint_width(i0 + 1) == pytest.approx(2.0 / 20.0)


def test_bad_shapes_raise() -> None:
    model, data = _model(_case("1bin_lumi"))
    with pytest.raises(hep.HepWorkspaceError, match="parameter array must have shape"):
        model.twice_nll(np.zeros(5), data)
    with pytest.raises(hep.HepFitError, match="data must have shape"):
        model.twice_nll(model.suggested_init(), data[:-1])
    with pytest.raises(hep.HepFitError, match="must be >= 0"):
        model.twice_nll(model.suggested_init(), -data)
    with pytest.raises(hep.HepFitError, match="must be finite"):
        model.twice_nll(model.suggested_init(), data * np.nan)
    # Gaussian auxdata (here lumi's) may be negative, e.g. in Asimov data or toys
    shifted = data.copy()
    shifted[model.n_main :] = -0.5
    assert np.isfinite(model.twice_nll(model.suggested_init(), shifted))


def test_stack_models() -> None:
    rng = np.random.default_rng(8)
    specs = [synthetic_workspace(10, 2, seed=s) for s in range(3)]
    workspaces_ = [hep.Workspace(s) for s in specs]
    models = [w.model() for w in workspaces_]
    stacked = hep.stack_models(models)
    assert stacked.batch_size == 3
    datas = np.stack([w.data(m) for w, m in zip(workspaces_, models, strict=True)])
    pars = np.stack([_random_pars(models[0], rng) for _ in range(3)])
    np.testing.assert_allclose(
        stacked.twice_nll(pars, datas),
        [m.twice_nll(p, d) for m, p, d in zip(models, pars, datas, strict=True)],
        rtol=1e-12,
    )
    other = hep.Workspace(synthetic_workspace(11, 2)).model()
    with pytest.raises(hep.HepWorkspaceError, match="differs in structure"):
        hep.stack_models([models[0], other])


@pytest.mark.parametrize("alpha", [-1.7, 1.4])
def test_derivatives_in_the_extrapolation_region(alpha: float) -> None:
    spec = random_workspace(np.random.default_rng(21), n_channels=2)
    ws = hep.Workspace(spec)
    model = ws.model()
    pars = model.suggested_init()
    for name in model.parameters:
        if set(model.param_types(name)) & {"normsys", "histosys"}:
            pars[model.par_slice(name)] = alpha
    _check_derivatives(model, ws.data(model), pars)
