"""Toy-based hypothesis tests: sampling, seeding, batching, and agreement with asymptotics."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from scipy import special
from test_infer import counting_spec, two_bin_spec

import sigtune.hep._toys as toys_mod
from sigtune.hep._infer import hypotest
from sigtune.hep._toys import aux_layout, sample_toys, toy_hypotest
from sigtune.hep._validate import HepInputError
from sigtune.hep._workspace import Workspace


def _build(spec: dict[str, Any]) -> tuple[Any, np.ndarray]:
    ws = Workspace(spec)
    model = ws.model()
    return model, ws.data(model)


def test_aux_layout_matches_expected_auxdata() -> None:
    model, _ = _build(two_bin_spec())
    layout = aux_layout(model)
    pars = model.suggested_init() + 0.1
    exp_aux = model.expected_data(pars)[model.n_main :]
    gauss = ~layout.poisson
    # Gaussian auxdata expect the parameter value; shapesys ones tau * gamma with tau = 1/width^2.
    np.testing.assert_allclose(exp_aux[gauss], pars[layout.par_index[gauss]])
    widths = np.array([model.constraint_width(int(i)) for i in layout.par_index[layout.poisson]])
    np.testing.assert_allclose(
        exp_aux[layout.poisson], pars[layout.par_index[layout.poisson]] / widths**2
    )
    assert int(layout.poisson.sum()) == 2  # the two shapesys bins


def test_sampled_toys_follow_the_model() -> None:
    model, _ = _build(two_bin_spec())
    pars = model.suggested_init()
    n = 20000
    toys = sample_toys(model, pars, n, np.random.default_rng(1))
    expected = model.expected_data(pars)
    assert toys.shape == (n, expected.size)
    layout = aux_layout(model)
    # Means within 5 standard errors; Poisson parts are integers, Gaussian aux have width sigma.
    mean_err = np.sqrt(np.maximum(expected, 1.0) / n)
    gauss_idx = model.n_main + np.flatnonzero(~layout.poisson)
    mean_err[gauss_idx] = layout.sigma[~layout.poisson] / np.sqrt(n)
    assert np.all(np.abs(toys.mean(axis=0) - expected) < 5 * mean_err)
    pois_idx = np.r_[np.arange(model.n_main), model.n_main + np.flatnonzero(layout.poisson)]
    assert np.all(toys[:, pois_idx] == np.round(toys[:, pois_idx]))
    assert toys[:, gauss_idx].std(axis=0) == pytest.approx(layout.sigma[~layout.poisson], rel=0.05)


def test_toys_are_reproducible_and_fitted_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = _build(counting_spec(10.0, 50.0, 55.0))
    calls: list[int] = []
    real = toys_mod.fit_batch

    def counting(model_: Any, batch: Any, **kwargs: Any) -> Any:
        calls.append(len(batch))
        return real(model_, batch, **kwargs)

    monkeypatch.setattr(toys_mod, "fit_batch", counting)
    a = toy_hypotest(model, data, 1.0, n_toys=200, seed=7)
    # Two batched calls (free and conditional fits) over the toys of both hypotheses.
    assert calls == [400, 400]
    b = toy_hypotest(model, data, 1.0, n_toys=200, seed=7)
    c = toy_hypotest(model, data, 1.0, n_toys=200, seed=8)
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != c.to_dict()
    assert a.calctype == "toys" and a.n_toys == 200 and np.isnan(a.test_stat_asimov)


def test_toys_reproducible_in_a_subprocess() -> None:
    code = (
        "import sys; sys.path.insert(0, 'tests/hep');"
        "from test_toys import _build; from test_infer import counting_spec;"
        "from sigtune.hep._toys import toy_hypotest;"
        "m, d = _build(counting_spec(10.0, 50.0, 55.0));"
        "print(repr(toy_hypotest(m, d, 1.0, n_toys=100, seed=3).cls_obs))"
    )
    model, data = _build(counting_spec(10.0, 50.0, 55.0))
    here = toy_hypotest(model, data, 1.0, n_toys=100, seed=3).cls_obs
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout.strip()) == here


@pytest.mark.slow
def test_toys_agree_with_asymptotics_at_large_counts() -> None:
    # 400 background events: the asymptotic formulas hold; toys agree within MC uncertainty.
    model, data = _build(counting_spec(40.0, 400.0, 410.0))
    n_toys = 3000
    toys = hypotest(model, data, 1.0, calctype="toys", n_toys=n_toys, seed=11)
    asym = hypotest(model, data, 1.0)
    err = np.sqrt(asym.clsb_obs * (1 - asym.clsb_obs) / n_toys)
    assert toys.clsb_obs == pytest.approx(asym.clsb_obs, abs=5 * err + 2e-3)
    assert toys.cls_obs == pytest.approx(asym.cls_obs, rel=0.15)
    assert toys.cls_exp[2] == pytest.approx(asym.cls_exp[2], rel=0.15)
    assert toys.test_stat_obs == pytest.approx(asym.test_stat_obs, rel=1e-9)


@pytest.mark.slow
def test_toy_discovery_p0_matches_asymptotic_formula() -> None:
    model, data = _build(counting_spec(40.0, 400.0, 450.0))
    res = hypotest(model, data, 0.0, test_stat="q0", calctype="toys", n_toys=3000, seed=5)
    p0 = float(special.ndtr(-np.sqrt(res.test_stat_obs)))
    err = np.sqrt(p0 * (1 - p0) / 3000)
    assert res.clsb_obs == pytest.approx(p0, abs=5 * err + 2e-3)
    assert res.pvalue_obs == res.clsb_obs


def test_toys_bad_input() -> None:
    model, data = _build(counting_spec(10.0, 50.0, 55.0))
    with pytest.raises(HepInputError, match="n_toys must be >= 10"):
        toy_hypotest(model, data, 1.0, n_toys=5)
    with pytest.raises(HepInputError, match="q0"):
        toy_hypotest(model, data, 1.0, test_stat="q0")
