"""The dense-layout paths against the general ones (random workspaces): the compiled row
Newton (:func:`sigtune.hep._jit.minimize`) against the batched NumPy iteration."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _generate import synthetic_workspace, workspaces
from hypothesis import HealthCheck, given, settings

import sigtune.hep as hep
from sigtune.hep import _fit
from sigtune.hep._interp import (
    code4_coefficients,
    code4_power_matrix,
    histosys_interp,
    histosys_interp_fast,
    normsys_log_interp,
    normsys_log_interp_fast,
)


def _both(model: hep.Model, data: np.ndarray, poi_value: float | None) -> tuple[Any, Any]:
    x0, free, lo, hi = _fit._setup(model, 1, None, None, None, poi_value)
    consts = model._constants(data[None])
    fast = _fit._minimize_jit(model, x0, consts, free, lo, hi)
    general = _fit._minimize_general(model, x0, consts, free, lo, hi)
    return fast, general


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=workspaces())
def test_single_row_newton_equals_general(spec: dict[str, Any]) -> None:
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    if not model.arrays.dense_layout or model.arrays.kink.any():
        return  # not a fast-path model (large or with interpolation kinks)
    for poi_value in (None, 0.0):
        fast, general = _both(model, data, poi_value)
        # same minimum value (parameters may differ along flat directions, e.g. a
        # normfactor at its bound whose sample is degenerate with another one); both stop once
        # the edm (nll units) is below 1e-9, i.e. within 2e-9 of the minimum in -2 ln L each
        np.testing.assert_allclose(fast.f, general.f, rtol=0, atol=4e-9)
        assert bool(fast.converged[0]) == bool(general.converged[0])


@pytest.mark.parametrize("shape", [(10, 2), (30, 6)])
@pytest.mark.parametrize("poi_value", [None, 0.0, 2.0])
def test_single_row_newton_equals_general_synthetic(
    shape: tuple[int, int], poi_value: float | None
) -> None:
    ws = hep.Workspace(synthetic_workspace(*shape))
    model = ws.model()
    data = ws.data(model)
    assert model.arrays.dense_layout
    fast, general = _both(model, data, poi_value)
    np.testing.assert_allclose(fast.f, general.f, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.x, general.x, rtol=1e-7, atol=1e-7)
    assert fast.converged[0] and general.converged[0]
    assert fast.n_iter[0] == general.n_iter[0]


@pytest.mark.parametrize("shape", [(10, 2), (30, 6)])
def test_single_row_errors_equal_arrowhead(shape: tuple[int, int]) -> None:
    ws = hep.Workspace(synthetic_workspace(*shape))
    model = ws.model()
    data = ws.data(model)
    res = hep.fit(model, data)
    x0, free, _, _ = _fit._setup(model, 1, res.bestfit, None, None, None)
    arrow = model._arrow
    assert not arrow.arrays.dense_layout
    deriv = arrow._derivatives(x0, arrow._constants(data[None]))
    errors, factory = _fit._errors_and_cov(arrow, deriv, free, True)
    np.testing.assert_allclose(res.errors, errors[0], rtol=1e-6)
    np.testing.assert_allclose(res.covariance, factory(), rtol=1e-6, atol=1e-12)


def test_lazy_arrowhead_layout_matches_dense() -> None:
    ws = hep.Workspace(synthetic_workspace(10, 2))
    model = ws.model()
    assert model._arrow_cache is None
    arrow = model._arrow
    assert model._arrow is arrow and arrow._arrow is arrow
    data = ws.data(model)
    x = model.suggested_init()[None] * 1.01
    consts = model._constants(data[None])
    f1, g1 = model._derivatives(x, consts)[:2]
    f2, g2 = arrow._derivatives(x, consts)[:2]
    np.testing.assert_allclose(f1, f2, rtol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-9, atol=1e-9)
    stacked = hep.stack_models([model, model])
    assert stacked._arrow.arrays.nom.shape[0] == 2


@pytest.mark.parametrize("scale", [0.3, 0.999, 1.0])
def test_interp_inside_fast_path(scale: float) -> None:
    rng = np.random.default_rng(1)
    alpha = scale * np.array([[-1.0, -0.4, 0.0, 0.7, 1.0]]).T  # (I, 1)
    hi = rng.uniform(1.01, 1.3, (5, 3))
    lo = rng.uniform(0.7, 0.99, (5, 3))
    coef = code4_coefficients(hi, lo)
    ref = normsys_log_interp(alpha, np.log(hi), np.log(lo), coef)
    got = normsys_log_interp_fast(
        alpha[None], np.log(hi)[None], np.log(lo)[None], code4_power_matrix(coef)[None]
    )
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g[0], np.broadcast_to(r, g[0].shape), rtol=1e-10, atol=1e-12)
    dp = rng.normal(size=(5, 4))
    dm = rng.normal(size=(5, 4))
    ref = histosys_interp(alpha, dp, dm, "code4p")
    got = histosys_interp_fast(
        alpha[None],
        dp[None],
        dm[None],
        (0.5 * (dp + dm))[None],
        (0.0625 * (dp - dm))[None],
        "code4p",
    )
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g[0], np.broadcast_to(r, g[0].shape), rtol=1e-10, atol=1e-12)


def test_single_row_with_every_parameter_fixed() -> None:
    ws = hep.Workspace(synthetic_workspace(10, 2))
    model = ws.model()
    data = ws.data(model)
    res = hep.fit(model, data, fixed=np.ones(model.n_pars, bool))
    assert res.converged
    np.testing.assert_array_equal(res.bestfit, model.suggested_init())
    assert res.twice_nll == pytest.approx(float(model.twice_nll(model.suggested_init(), data)))
