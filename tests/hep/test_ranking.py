"""Impact ranking: closed forms for a one-bin model, ordering, and bad input."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from test_infer import two_bin_spec

import sigtune.hep as hep
from sigtune.hep._ranking import ranking
from sigtune.hep._validate import HepInputError
from sigtune.hep._workspace import Workspace

S, B, N = 20.0, 100.0, 130.0
HI, LO, STAT = 1.08, 0.95, 4.0  # normsys hi/lo factors, absolute staterror on B


def one_bin_spec() -> dict[str, Any]:
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [S],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "bkg",
                        "data": [B],
                        "modifiers": [
                            {"name": "norm", "type": "normsys", "data": {"hi": HI, "lo": LO}},
                            {"name": "staterror_SR", "type": "staterror", "data": [STAT]},
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [N]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def test_one_bin_impacts_closed_form() -> None:
    # One bin, mu free: the fit puts every constrained NP at its auxdata (alpha = 0, gamma = 1) and
    # mu_hat = (N - B) / S. Fixing an NP moves mu so that the bin is still matched exactly:
    # mu = (N - B * kappa) / S, and profiling mu out leaves each NP with its pre-fit width.
    ws = Workspace(one_bin_spec())
    model = ws.model()
    res = ranking(model, ws.data(model))
    mu_hat = (N - B) / S
    assert res.mu_hat == pytest.approx(mu_hat, abs=1e-6)
    by_name = {e.name: e for e in res.entries}
    assert set(by_name) == {"norm", "staterror_SR[0]"}
    norm = by_name["norm"]
    assert norm.prefit_width == 1.0
    assert norm.prefit_up == pytest.approx(-B * (HI - 1) / S, abs=1e-5)
    assert norm.prefit_down == pytest.approx(-B * (LO - 1) / S, abs=1e-5)
    assert norm.postfit_width == pytest.approx(1.0, rel=1e-4)
    assert norm.postfit_up == pytest.approx(norm.prefit_up, abs=1e-3)
    stat = by_name["staterror_SR[0]"]
    sigma = STAT / B
    assert stat.prefit_width == pytest.approx(sigma, rel=1e-12)
    assert stat.prefit_up == pytest.approx(-B * sigma / S, abs=1e-5)
    assert stat.prefit_down == pytest.approx(B * sigma / S, abs=1e-5)
    # Ranked by total impact = RMS of the post-fit impacts.
    assert [e.name for e in res.entries] == ["norm", "staterror_SR[0]"]
    for e in res.entries:
        assert e.total_impact == pytest.approx(
            math.sqrt((e.postfit_up**2 + e.postfit_down**2) / 2), rel=1e-12
        )
    assert res.top(1) == (norm,)
    assert res.names() == ["norm", "staterror_SR[0]"]


def test_impacts_match_direct_refits() -> None:
    ws = Workspace(two_bin_spec())
    model = ws.model()
    data = ws.data(model)
    res = ranking(model, data)
    nominal = hep.fit(model, data)
    assert res.mu_hat == pytest.approx(nominal.bestfit[model.poi_index], abs=1e-6)
    impacts = [abs(e.total_impact) for e in res.entries]
    assert impacts == sorted(impacts, reverse=True)
    # shapesys x2, normsys, histosys: every constrained parameter is ranked.
    assert len(res.entries) == 4
    e = res.entries[0]
    init = nominal.bestfit.copy()
    init[e.index] = e.theta_hat + e.postfit_width
    direct = hep.fit(model, data, init=init, fixed=[e.index])
    assert e.postfit_up == pytest.approx(direct.bestfit[model.poi_index] - res.mu_hat, abs=1e-5)
    # Shapesys pre-fit width is 1/sqrt(tau) = unc / nominal.
    sys0 = next(x for x in res.entries if x.name == "uncorr_bkguncrt[0]")
    assert sys0.prefit_width == pytest.approx(3.0 / 50.0, rel=1e-12)
    assert np.isfinite(res.mu_err) and res.mu_err > 0


def test_ranking_subset_and_errors() -> None:
    ws = Workspace(two_bin_spec())
    model = ws.model()
    data = ws.data(model)
    res = ranking(model, data, parameters=["norm"])
    assert res.names() == ["norm"]
    with pytest.raises(HepInputError, match="unknown parameter"):
        ranking(model, data, parameters=["nope"])
    with pytest.raises(HepInputError, match="unconstrained"):
        ranking(model, data, parameters=["mu"])
    assert res.to_dict()["entries"][0]["name"] == "norm"


def test_ranking_warns_when_the_poi_sits_at_its_bound(caplog: pytest.LogCaptureFixture) -> None:
    spec = {
        "channels": [
            {
                "name": "sr",
                "samples": [
                    {
                        "name": "sig",
                        "data": [5.0, 5.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "bkg",
                        "data": [50.0, 60.0],
                        "modifiers": [
                            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "sr", "data": [40.0, 45.0]}],  # deficit: mu_hat = 0
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    with caplog.at_level("WARNING", logger="sigtune.hep._ranking"):
        at_bound = hep.ranking(model, data)
    assert at_bound.mu_hat == pytest.approx(0.0, abs=1e-6)
    assert "sits at its bound" in caplog.text
    bounds = model.suggested_bounds()
    bounds[model.poi_index] = (-10.0, 10.0)
    caplog.clear()
    with caplog.at_level("WARNING", logger="sigtune.hep._ranking"):
        free = hep.ranking(model, data, bounds=bounds)
    assert "sits at its bound" not in caplog.text
    assert free.mu_hat < 0 and abs(free.entries[0].total_impact) > 0
