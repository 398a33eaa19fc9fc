"""Reference numbers: pyhf's validation suite (ROOT-derived / pyhf-maintained) and the ATLAS sbottom
regression points (HEPData ins1748602). Provenance and tolerances: tests/data/histfactory/README.md.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sigtune.hep as hep
from sigtune.hep._infer import asymptotic_pvalues, discovery, expected_pvalues, hypotest

DATA = Path(__file__).resolve().parents[1] / "data" / "histfactory"
CASES = sorted(p.stem for p in (DATA / "validation" / "cases").glob("*.json"))
# pyhf itself passes these at 87-99 % of the stated tolerance (README): twice the tolerance allowed.
_LOOSE = {"2bin_histosys": 2.0, "1bin_shapesys_q0": 2.0, "2bin_2channel_coupledhistosys": 2.0}
# The reference numbers are pyhf's output, and pyhf's SLSQP minimiser stops up to ~5e-7 above the
# minimum of -2 ln L (test_validation_unconditional_fit shows ours is lower in every case). With
# exact minima the CLs values move by up to 1.2e-4 relative (2bin_2channel_couplednorm), more than
# the 1e-6 tolerances of pyhf's own regression test. End to end we therefore compare at
# max(stated tolerance, _MINIMISER_FLOOR); test_validation_case_at_pyhf_fit_points then checks the
# likelihood and the asymptotic formulas at the STATED tolerance, evaluated at pyhf's fit points,
# and test_*_equals_pyhf_with_exact_minimiser checks every case and sbottom point at the STATED
# tolerance against pyhf itself run with a tight minimiser tolerance (which moves pyhf away from
# its own reference numbers by what we differ from them).
_MINIMISER_FLOOR = 2e-4
# Cases whose reference numbers pyhf's history ties directly to ROOT (data README).
_ROOT_TIED = {"shapesys_nuisparfilter", "1bin_shapesys_q0"}


def _case(name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((DATA / "validation" / "cases" / f"{name}.json").read_text())
    return out


@cache
def _sbottom_reference() -> dict[str, Any]:
    out: dict[str, Any] = json.loads((DATA / "sbottom" / "reference.json").read_text())
    return out


def _sbottom_model(point: dict[str, Any]) -> tuple[Any, np.ndarray]:
    ws = hep.Workspace(DATA / "sbottom" / point["bkgonly"]).patched(
        DATA / "sbottom" / point["patch"]
    )
    model = ws.model(
        normsys_interp=point["settings"]["normsys_interp"],
        histosys_interp=point["settings"]["histosys_interp"],
    )
    return model, ws.data(model)


def test_all_ten_cases_present() -> None:
    assert len(CASES) == 10


@pytest.mark.parametrize("name", CASES)
def test_validation_case(name: str) -> None:
    case = _case(name)
    ws = hep.Workspace(case["workspace"])
    model = ws.model(
        normsys_interp=case["settings"]["normsys_interp"],
        histosys_interp=case["settings"]["histosys_interp"],
    )
    data = ws.data(model)
    test = case["test"]
    res = hypotest(model, data, test["poi_test"], test_stat=test["test_stat"])
    stated = case["tolerance"] * _LOOSE.get(name, 1.0)
    # The two cases tied directly to ROOT are held to their stated tolerance end to end; the
    # pyhf-rebaselined ones get the minimiser floor, justified case by case in
    # test_pyhf_minimiser_explains_the_remaining_difference.
    rtol = stated if name in _ROOT_TIED else max(stated, _MINIMISER_FLOOR)
    atol = case.get("tolerance_atol", 0.0)
    expected = case["expected"]
    assert res.pvalue_obs == pytest.approx(expected["obs"], rel=rtol, abs=atol)
    np.testing.assert_allclose(res.pvalue_exp, expected["exp"], rtol=rtol, atol=atol)
    # The expected band is ordered (-2 sigma first) and the median sits in the middle.
    assert list(res.pvalue_exp) == sorted(res.pvalue_exp)


def _pyhf_model(workspace: dict[str, Any], settings: dict[str, str]) -> tuple[Any, np.ndarray]:
    pyhf = pytest.importorskip("pyhf")
    pyhf.set_backend("numpy")
    pws = pyhf.Workspace(workspace)
    pmodel = pws.model(
        modifier_settings={
            "normsys": {"interpcode": settings["normsys_interp"]},
            "histosys": {"interpcode": settings["histosys_interp"]},
        }
    )
    return pmodel, np.asarray(pws.data(pmodel))


def _cls_at_pyhf_fit_points(
    model: Any, data: np.ndarray, pmodel: Any, pdata: np.ndarray, test: dict[str, Any]
) -> tuple[float, tuple[float, ...]]:
    """Our likelihood and asymptotic formulas evaluated at the five fit points pyhf found."""
    import logging

    pyhf = pytest.importorskip("pyhf")
    logging.getLogger("pyhf").setLevel(logging.ERROR)
    test_stat, mu = test["test_stat"], float(test["poi_test"])
    calc = pyhf.infer.calculators.AsymptoticCalculator(pdata, pmodel, test_stat=test_stat)
    calc.teststatistic(mu)
    fp = calc.fitted_pars
    asimov = np.asarray(model.expected_data(np.asarray(fp.asimov_pars)))

    def t(cond: Any, free: Any, d: np.ndarray) -> float:
        return max(
            float(model.twice_nll(np.asarray(cond), d))
            - float(model.twice_nll(np.asarray(free), d)),
            0.0,
        )

    mu_hat = float(fp.free_fit_to_data[model.poi_index])
    q = t(fp.fixed_poi_fit_to_data, fp.free_fit_to_data, data)
    if (test_stat == "q0" and mu_hat < mu) or (test_stat != "q0" and mu_hat > mu):
        q = 0.0
    qa = t(fp.fixed_poi_fit_to_asimov, fp.free_fit_to_asimov, asimov)
    clsb, _, cls = asymptotic_pvalues(q, qa, test_stat)
    clsb_exp, _, cls_exp = expected_pvalues(qa, test_stat)
    return (clsb, clsb_exp) if test_stat == "q0" else (cls, cls_exp)


@pytest.mark.parametrize("name", CASES)
def test_validation_case_at_pyhf_fit_points(name: str) -> None:
    """Stated tolerance: likelihood + asymptotics, with the minimiser taken out of the comparison."""
    case = _case(name)
    ws = hep.Workspace(case["workspace"])
    model = ws.model(
        normsys_interp=case["settings"]["normsys_interp"],
        histosys_interp=case["settings"]["histosys_interp"],
    )
    pmodel, pdata = _pyhf_model(case["workspace"], case["settings"])
    assert model.par_names == pmodel.config.par_names
    obs, exp = _cls_at_pyhf_fit_points(model, ws.data(model), pmodel, pdata, case["test"])
    rtol = case["tolerance"] * _LOOSE.get(name, 1.0)
    atol = case.get("tolerance_atol", 0.0)
    assert obs == pytest.approx(case["expected"]["obs"], rel=rtol, abs=atol)
    np.testing.assert_allclose(exp, case["expected"]["exp"], rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", CASES)
def test_validation_unconditional_fit(name: str) -> None:
    """-2 ln L at the minimum is at or below pyhf's (pyhf's SLSQP stops up to ~1e-6 early)."""
    case = _case(name)
    ws = hep.Workspace(case["workspace"])
    model = ws.model(
        normsys_interp=case["settings"]["normsys_interp"],
        histosys_interp=case["settings"]["histosys_interp"],
    )
    ref = case["pyhf_0_7_6"]["unconditional_fit"]
    res = hep.fit(model, ws.data(model))
    assert res.twice_nll <= ref["twice_nll"] + 1e-8
    assert res.twice_nll == pytest.approx(ref["twice_nll"], abs=1e-5)
    assert res.bestfit[model.poi_index] == pytest.approx(ref["mu_hat"], abs=2e-3)


def _sbottom_points() -> list[Any]:
    ref = _sbottom_reference()
    return [pytest.param(p, id=p["name"], marks=pytest.mark.slow) for p in ref["points"]]


@pytest.mark.parametrize("point", _sbottom_points())
def test_sbottom_regression(point: dict[str, Any]) -> None:
    model, data = _sbottom_model(point)
    res = hypotest(model, data, point["test"]["poi_test"], test_stat=point["test"]["test_stat"])
    tol = point["tolerance"]
    # Observed CLs: the stated tolerance. Expected band: see _MINIMISER_FLOOR (measured up to 5.4e-5).
    assert res.cls_obs == pytest.approx(point["expected"]["obs"], rel=tol["obs_rel"])
    np.testing.assert_allclose(
        res.cls_exp,
        point["expected"]["exp"],
        rtol=max(tol["exp_rtol"], _MINIMISER_FLOOR),
        atol=tol["exp_atol"],
    )


@pytest.mark.slow
def test_sbottom_regression_at_pyhf_fit_points() -> None:
    """Stated tolerances for obs and exp, with pyhf's fit points (one point: pyhf takes ~1.5 s)."""
    point = _sbottom_reference()["points"][0]
    model, data = _sbottom_model(point)
    bkg = json.loads((DATA / "sbottom" / point["bkgonly"]).read_text())
    patch = json.loads((DATA / "sbottom" / point["patch"]).read_text())
    import jsonpatch

    pmodel, pdata = _pyhf_model(jsonpatch.apply_patch(bkg, patch), point["settings"])
    assert model.par_names == pmodel.config.par_names
    obs, exp = _cls_at_pyhf_fit_points(model, data, pmodel, pdata, point["test"])
    tol = point["tolerance"]
    assert obs == pytest.approx(point["expected"]["obs"], rel=tol["obs_rel"])
    np.testing.assert_allclose(
        exp, point["expected"]["exp"], rtol=tol["exp_rtol"], atol=tol["exp_atol"]
    )


# A spread of the 33 additional points (three regions, CLs from 7e-11 to 0.98, mu_hat at 0 and > 0).
# 27 of the 33 agree with pyhf within 1e-3 (obs and exp); the other six (RegionA_300_205_60,
# RegionA_500_400_60, RegionB_1300_850_60, RegionC_500_400_60, RegionC_700_450_60,
# RegionC_1100_250_60) have conditional fits with several local minima where pyhf and we end in
# different ones (our unconditional minima are lower than pyhf's at all 33) -- see docs/hep.md.
_ADDITIONAL = [
    "RegionA_1000_995_60",
    "RegionA_1000_530_400",
    "RegionA_1600_1550_60",
    "RegionB_300_205_60",
    "RegionB_500_400_60",
    "RegionB_900_850_60",
    "RegionB_1000_530_400",
    "RegionC_1000_995_60",
    "RegionC_1300_850_60",
]


def _additional_points() -> list[Any]:
    by_name = {p["name"]: p for p in _sbottom_reference()["additional_points"]}
    return [pytest.param(by_name[n], id=n, marks=pytest.mark.slow) for n in _ADDITIONAL]


@pytest.mark.parametrize("point", _additional_points())
def test_sbottom_additional_points_against_pyhf(point: dict[str, Any]) -> None:
    model, data = _sbottom_model(point)
    ref = point["pyhf_computed"]
    res = hypotest(model, data, 1.0, test_stat="qtilde")
    # pyhf-computed values carry pyhf's minimiser tolerance: compare at 1e-3 relative.
    assert res.cls_obs == pytest.approx(ref["CLs_obs"], rel=1e-3, abs=1e-12)
    np.testing.assert_allclose(res.cls_exp, ref["CLs_exp"], rtol=1e-3, atol=1e-12)
    fit = hep.fit(model, data)
    assert fit.twice_nll <= ref["unconditional_fit"]["twice_nll"] + 1e-6
    assert fit.twice_nll == pytest.approx(ref["unconditional_fit"]["twice_nll"], abs=1e-4)


@pytest.mark.slow
def test_sbottom_discovery_against_pyhf() -> None:
    point = _sbottom_reference()["points"][0]
    model, data = _sbottom_model(point)
    res = discovery(model, data)
    ref = point["pyhf_computed"]["discovery_q0"]
    # mu_hat sits at its bound 0: q0 = 0 and p0 = 0.5 exactly (README).
    assert res.q0_obs == pytest.approx(0.0, abs=1e-6)
    assert res.p0_obs == pytest.approx(0.5, abs=1e-3)
    np.testing.assert_allclose(res.p0_exp_band, ref["p0_exp"], rtol=1e-3)


@pytest.mark.parametrize("name", sorted(set(CASES) - _ROOT_TIED))
def test_pyhf_minimiser_explains_the_remaining_difference(name: str) -> None:
    """Where we are further from a pyhf-rebaselined number than its stated tolerance, every fit
    entering the test statistic reaches a -2 ln L at least as low as pyhf's fit at the same POI:
    the difference comes from pyhf's minimiser stopping early, not from our likelihood."""
    case = _case(name)
    ws = hep.Workspace(case["workspace"])
    model = ws.model(
        normsys_interp=case["settings"]["normsys_interp"],
        histosys_interp=case["settings"]["histosys_interp"],
    )
    data = ws.data(model)
    test = case["test"]
    res = hypotest(model, data, test["poi_test"], test_stat=test["test_stat"])
    stated = case["tolerance"] * _LOOSE.get(name, 1.0)
    expected = case["expected"]
    devs = [abs(res.pvalue_obs - expected["obs"]) / abs(expected["obs"])]
    devs += [abs(a - b) / abs(b) for a, b in zip(res.pvalue_exp, expected["exp"], strict=True)]
    if max(devs) <= stated:
        return  # within the stated tolerance: nothing to explain

    import logging

    pyhf = pytest.importorskip("pyhf")
    logging.getLogger("pyhf").setLevel(logging.ERROR)
    pmodel, pdata = _pyhf_model(case["workspace"], case["settings"])
    calc = pyhf.infer.calculators.AsymptoticCalculator(pdata, pmodel, test_stat=test["test_stat"])
    calc.teststatistic(float(test["poi_test"]))
    fp = calc.fitted_pars
    mu_asimov = 1.0 if test["test_stat"] == "q0" else 0.0
    checks = [
        (float(test["poi_test"]), np.asarray(fp.fixed_poi_fit_to_data)),
        (mu_asimov, np.asarray(fp.asimov_pars)),
    ]
    for mu, pyhf_pars in checks:
        ours = hep.fit(model, data, poi_value=mu, uncertainties=False).twice_nll
        theirs = float(model.twice_nll(pyhf_pars, data))
        assert ours <= theirs + 1e-9, (name, mu, ours, theirs)
    ours_free = hep.fit(model, data, uncertainties=False).twice_nll
    assert ours_free <= float(model.twice_nll(np.asarray(fp.free_fit_to_data), data)) + 1e-9


def _pyhf_exact_hypotest(
    workspace: dict[str, Any], settings: dict[str, str], poi: float, test_stat: str
) -> np.ndarray:
    """pyhf's own hypotest with its SLSQP minimiser run to a tight tolerance (1e-12)."""
    import logging

    pyhf = pytest.importorskip("pyhf")
    logging.getLogger("pyhf").setLevel(logging.ERROR)
    pmodel, pdata = _pyhf_model(workspace, settings)
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    try:
        obs, exp = pyhf.infer.hypotest(
            poi, pdata, pmodel, test_stat=test_stat, return_expected_set=True
        )
    finally:
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())
    return np.array([float(obs), *(float(e) for e in exp)])


@pytest.mark.parametrize("name", CASES)
def test_validation_case_equals_pyhf_with_exact_minimiser(name: str) -> None:
    """The oracle behind the 2e-4 floor: pyhf itself, minimising to 1e-12 instead of its default,
    moves away from its re-baselined reference numbers by what we differ from them and agrees
    with our numbers within the STATED tolerance, in every case."""
    case = _case(name)
    ws = hep.Workspace(case["workspace"])
    model = ws.model(
        normsys_interp=case["settings"]["normsys_interp"],
        histosys_interp=case["settings"]["histosys_interp"],
    )
    test = case["test"]
    res = hypotest(model, ws.data(model), test["poi_test"], test_stat=test["test_stat"])
    ours = np.array([res.pvalue_obs, *res.pvalue_exp])
    exact = _pyhf_exact_hypotest(
        case["workspace"], case["settings"], float(test["poi_test"]), test["test_stat"]
    )
    stated = case["tolerance"] * _LOOSE.get(name, 1.0)
    np.testing.assert_allclose(ours, exact, rtol=stated, atol=case.get("tolerance_atol", 0.0))


@pytest.mark.slow
@pytest.mark.parametrize("point", _sbottom_points())
def test_sbottom_regression_equals_pyhf_with_exact_minimiser(point: dict[str, Any]) -> None:
    """As above for the ATLAS sbottom regression points (pyhf needs ~4 s per point at 1e-12):
    observed and expected CLs within the stated tolerances of pyhf's regression test."""
    import jsonpatch

    model, data = _sbottom_model(point)
    res = hypotest(model, data, 1.0, test_stat="qtilde")
    spec = jsonpatch.apply_patch(
        json.loads((DATA / "sbottom" / point["bkgonly"]).read_text()),
        json.loads((DATA / "sbottom" / point["patch"]).read_text()),
    )
    exact = _pyhf_exact_hypotest(spec, point["settings"], 1.0, "qtilde")
    tol = point["tolerance"]
    assert res.cls_obs == pytest.approx(exact[0], rel=tol["obs_rel"])
    np.testing.assert_allclose(res.cls_exp, exact[1:], rtol=tol["exp_rtol"], atol=tol["exp_atol"])
