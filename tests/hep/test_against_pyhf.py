"""Property-based comparison with pyhf on random workspaces covering every modifier type.

The workspaces come from hep C's generator (tests/hep/_generate.py): normfactor, shapefactor,
lumi, normsys, histosys, staterror and shapesys, shared names across samples and channels. pyhf's
SLSQP minimiser stops up to ~1e-6 in -2 ln L above the minimum, so the comparisons allow relative
differences of a few 1e-4 (see docs/hep.md, "Validation").
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytest
from _generate import workspaces
from hypothesis import HealthCheck, given, settings

import sigtune.hep as hep
from sigtune.hep._infer import discovery, hypotest, upper_limit

pyhf = pytest.importorskip("pyhf")
logging.getLogger("pyhf").setLevel(logging.ERROR)

_SETTINGS = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _both(spec: dict[str, Any]) -> tuple[Any, np.ndarray, Any, np.ndarray]:
    ws = hep.Workspace(spec)
    model = ws.model()
    pyhf.set_backend("numpy")
    pws = pyhf.Workspace(spec)
    pmodel = pws.model()
    assert model.par_names == pmodel.config.par_names
    return model, ws.data(model), pmodel, np.asarray(pws.data(pmodel))


def _close(ours: float, theirs: float, rel: float, abs_: float) -> bool:
    return math.isclose(ours, theirs, rel_tol=rel, abs_tol=abs_)


@pytest.mark.slow
@_SETTINGS
@given(spec=workspaces(max_bins=3))
def test_fit_z0_and_cls_agree_with_pyhf(spec: dict[str, Any]) -> None:
    model, data, pmodel, pdata = _both(spec)

    # Fit: our minimum is at least as low as pyhf's (pyhf stops early by up to ~1e-6).
    ours_fit = hep.fit(model, data, uncertainties=False)
    _, p_twice_nll = pyhf.infer.mle.fit(pdata, pmodel, return_fitted_val=True)
    assert ours_fit.twice_nll <= float(p_twice_nll) + 1e-6
    assert ours_fit.twice_nll == pytest.approx(float(p_twice_nll), abs=1e-4)

    # Discovery: Z0 observed and the expected p0 band.
    disc = discovery(model, data)
    p0, p0_exp = pyhf.infer.hypotest(0.0, pdata, pmodel, test_stat="q0", return_expected_set=True)
    z0_pyhf = float(-_ndtri(float(p0)))
    assert _close(disc.z0_obs, z0_pyhf, 1e-3, 3e-3), (disc.z0_obs, z0_pyhf)
    np.testing.assert_allclose(disc.p0_exp_band, np.asarray(p0_exp, float), rtol=2e-3, atol=1e-6)

    # CLs at mu = 1 (qtilde): observed and expected band.
    res = hypotest(model, data, 1.0)
    cls, cls_exp = pyhf.infer.hypotest(1.0, pdata, pmodel, return_expected_set=True)
    if math.isnan(float(cls)):
        # pyhf divides 0 by 0 without sensitivity (q_A = 0); CLs is 1 by definition there.
        assert res.cls_obs == 1.0
    else:
        assert _close(res.cls_obs, float(cls), 2e-3, 1e-5), (res.cls_obs, float(cls))
        np.testing.assert_allclose(res.cls_exp, np.asarray(cls_exp, float), rtol=2e-3, atol=1e-6)


@pytest.mark.slow
@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=workspaces(max_bins=3))
def test_upper_limits_are_pyhf_cls_roots(spec: dict[str, Any]) -> None:
    """pyhf's CLs at our observed limit, and its expected median CLs at our median limit, are 0.05.

    (pyhf's own root finding, ~20 hypotests per limit, is too slow for CI; evaluating pyhf's CLs at
    our roots is the same check at a tenth of the cost.)
    """
    model, data, pmodel, pdata = _both(spec)
    bounds = model.suggested_bounds()
    bounds[model.poi_index] = [0.0, 50.0]  # the random signals are weak
    ours = upper_limit(model, data, bounds=bounds)
    pbounds = [tuple(b) for b in bounds.tolist()]
    cls_obs = pyhf.infer.hypotest(ours.obs, pdata, pmodel, par_bounds=pbounds)
    assert float(cls_obs) == pytest.approx(0.05, rel=2e-3)
    _, cls_exp = pyhf.infer.hypotest(
        ours.exp[2], pdata, pmodel, par_bounds=pbounds, return_expected_set=True
    )
    assert float(cls_exp[2]) == pytest.approx(0.05, rel=2e-3)
    assert list(ours.exp) == sorted(ours.exp)


def _ndtri(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(p))
