"""Interpolation codes against slow scalar loops, pyhf's interpolators and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sigtune.hep._interp import (
    code4_coefficients,
    code4_power_matrix,
    histosys_interp,
    histosys_interp_fast,
    normsys_log_interp,
    normsys_log_interp_fast,
)

ALPHAS = np.array([-3.0, -1.5, -1.0, -0.999, -0.6, -0.1, 0.0, 0.05, 0.4, 0.999, 1.0, 1.2, 2.7])


def _slow_code1(alpha: float, hi: float, lo: float) -> float:
    return hi**alpha if alpha >= 0 else lo ** (-alpha)


def _slow_code4(alpha: float, hi: float, lo: float) -> float:
    if abs(alpha) >= 1:
        return _slow_code1(alpha, hi, lo)
    # solve the 6x6 conditions directly for this one (hi, lo)
    rows, rhs = [], []
    for a0, val, d1, d2 in (
        (1.0, hi, hi * math.log(hi), hi * math.log(hi) ** 2),
        (-1.0, lo, -lo * math.log(lo), lo * math.log(lo) ** 2),
    ):
        rows += [
            [a0**i for i in range(1, 7)],
            [i * a0 ** (i - 1) for i in range(1, 7)],
            [i * (i - 1) * a0 ** (i - 2) for i in range(1, 7)],
        ]
        rhs += [val - 1.0, d1, d2]
    coef = np.linalg.solve(np.array(rows), np.array(rhs))
    return 1.0 + sum(c * alpha ** (i + 1) for i, c in enumerate(coef))


def _slow_code0(alpha: float, nom: float, up: float, dn: float) -> float:
    return alpha * (up - nom) if alpha >= 0 else alpha * (nom - dn)


def _slow_code4p(alpha: float, nom: float, up: float, dn: float) -> float:
    if abs(alpha) > 1:
        return _slow_code0(alpha, nom, up, dn)
    dplus, dminus = up - nom, nom - dn
    s, a = 0.5 * (dplus + dminus), (dplus - dminus) / 16.0
    return alpha * s + alpha**2 * (15 - 10 * alpha**2 + 3 * alpha**4) * a


@pytest.mark.parametrize("code", ["code1", "code4"])
@pytest.mark.parametrize(("hi", "lo"), [(1.2, 0.85), (1.05, 1.02), (0.9, 0.7), (2.5, 0.3)])
def test_normsys_matches_slow_loop(code: str, hi: float, lo: float) -> None:
    coef = code4_coefficients(np.array([hi]), np.array([lo])) if code == "code4" else None
    lk, _, _ = normsys_log_interp(ALPHAS[:, None], np.log([hi]), np.log([lo]), coef)
    slow = _slow_code4 if code == "code4" else _slow_code1
    expected = [slow(a, hi, lo) for a in ALPHAS]
    np.testing.assert_allclose(np.exp(lk[:, 0]), expected, rtol=1e-12)


@pytest.mark.parametrize("code", ["code0", "code4p"])
def test_histosys_matches_slow_loop(code: str) -> None:
    nom, up, dn = np.array([10.0, 5.0, 3.0]), np.array([12.0, 5.5, 2.0]), np.array([9.0, 4.0, 3.5])
    delta, _, _ = histosys_interp(ALPHAS[:, None], up - nom, nom - dn, code)
    slow = _slow_code4p if code == "code4p" else _slow_code0
    expected = [[slow(a, n, u, d) for n, u, d in zip(nom, up, dn, strict=True)] for a in ALPHAS]
    np.testing.assert_allclose(delta, expected, rtol=1e-12, atol=1e-12)


def test_against_pyhf_interpolators() -> None:
    pyhf = pytest.importorskip("pyhf")
    rng = np.random.default_rng(3)
    nom = rng.uniform(5, 20, 6)
    up = nom * rng.uniform(1.0, 1.3, 6)
    dn = nom * rng.uniform(0.7, 1.05, 6)
    hsets = [[[dn.tolist(), nom.tolist(), up.tolist()]]]
    alphas = [ALPHAS.tolist()]  # (n_systematics, batch)
    for pyhf_code, ours in (("4p", "code4p"), (0, "code0")):
        interp = pyhf.interpolators.get(pyhf_code)(hsets)
        ref = np.asarray(interp(pyhf.tensorlib.astensor(alphas)))[0, 0, :, :]
        delta, _, _ = histosys_interp(ALPHAS[:, None], up - nom, nom - dn, ours)
        np.testing.assert_allclose(delta, ref, rtol=1e-10, atol=1e-10)
    rel_hi, rel_lo = up / nom, dn / nom
    hsets = [[[rel_lo.tolist(), [1.0] * 6, rel_hi.tolist()]]]
    for pyhf_code, code in ((1, "code1"), (4, "code4")):
        interp = pyhf.interpolators.get(pyhf_code)(hsets)
        ref = np.asarray(interp(pyhf.tensorlib.astensor(alphas)))[0, 0, :, :]
        coef = code4_coefficients(rel_hi, rel_lo) if code == "code4" else None
        lk, _, _ = normsys_log_interp(ALPHAS[:, None], np.log(rel_hi), np.log(rel_lo), coef)
        np.testing.assert_allclose(np.exp(lk), ref, rtol=1e-10)


@pytest.mark.parametrize("code", ["code1", "code4"])
def test_normsys_derivatives_finite_differences(code: str) -> None:
    hi, lo = np.array([1.3, 1.07]), np.array([0.8, 1.02])
    coef = code4_coefficients(hi, lo) if code == "code4" else None
    a = np.array([-2.0, -0.7, -0.2, 0.3, 0.8, 1.6])[:, None]
    eps = 1e-6
    _, d1, d2 = normsys_log_interp(a, np.log(hi), np.log(lo), coef)
    fp = normsys_log_interp(a + eps, np.log(hi), np.log(lo), coef)
    fm = normsys_log_interp(a - eps, np.log(hi), np.log(lo), coef)
    np.testing.assert_allclose(d1, (fp[0] - fm[0]) / (2 * eps), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(d2, (fp[1] - fm[1]) / (2 * eps), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("code", ["code0", "code4p"])
def test_histosys_derivatives_finite_differences(code: str) -> None:
    dp, dm = np.array([2.0, -0.5]), np.array([1.0, 0.7])
    a = np.array([-2.0, -0.7, -0.2, 0.3, 0.8, 1.6])[:, None]
    eps = 1e-6
    _, d1, d2 = histosys_interp(a, dp, dm, code)
    fp = histosys_interp(a + eps, dp, dm, code)
    fm = histosys_interp(a - eps, dp, dm, code)
    np.testing.assert_allclose(d1, (fp[0] - fm[0]) / (2 * eps), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(d2, (fp[1] - fm[1]) / (2 * eps), rtol=1e-5, atol=1e-6)


def test_code4_smooth_at_boundaries() -> None:
    """Value, first and second derivative are continuous at alpha = +-1."""
    hi, lo = np.array([1.4]), np.array([0.75])
    coef = code4_coefficients(hi, lo)
    for edge in (1.0, -1.0):
        inside = normsys_log_interp(np.array([[edge * (1 - 1e-9)]]), np.log(hi), np.log(lo), coef)
        outside = normsys_log_interp(np.array([[edge * (1 + 1e-9)]]), np.log(hi), np.log(lo), coef)
        for k in range(3):
            np.testing.assert_allclose(inside[k], outside[k], atol=1e-6)
    # code4p: value and first derivative continuous, second derivative 0 at the edge
    for edge in (1.0, -1.0):
        i = histosys_interp(
            np.array([edge * (1 - 1e-9)]), np.array([2.0]), np.array([0.5]), "code4p"
        )
        o = histosys_interp(
            np.array([edge * (1 + 1e-9)]), np.array([2.0]), np.array([0.5]), "code4p"
        )
        np.testing.assert_allclose(i[0], o[0], atol=1e-7)
        np.testing.assert_allclose(i[1], o[1], atol=1e-6)
        np.testing.assert_allclose(i[2], 0.0, atol=1e-6)


@pytest.mark.parametrize("code", ["code1", "code4"])
def test_fast_normsys_equals_reference(code: str) -> None:
    rng = np.random.default_rng(0)
    hi, lo = rng.uniform(1.01, 1.4, (3, 2)), rng.uniform(0.6, 1.05, (3, 2))
    coef = code4_coefficients(hi, lo) if code == "code4" else None
    power = code4_power_matrix(coef) if coef is not None else None
    alpha = rng.uniform(-2.5, 2.5, (5, 3, 1))
    ref = normsys_log_interp(alpha, np.log(hi), np.log(lo), coef)
    fast = normsys_log_interp_fast(alpha, np.log(hi), np.log(lo), power)
    for r, f in zip(ref, fast, strict=True):
        np.testing.assert_allclose(f, r, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("code", ["code0", "code4p"])
def test_fast_histosys_equals_reference(code: str) -> None:
    rng = np.random.default_rng(1)
    dp, dm = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    alpha = rng.uniform(-2.5, 2.5, (5, 3, 1))
    ref = histosys_interp(alpha, dp, dm, code)
    fast = histosys_interp_fast(alpha, dp, dm, 0.5 * (dp + dm), (dp - dm) / 16.0, code)
    for r, f in zip(ref, fast, strict=True):
        np.testing.assert_allclose(f, r, rtol=1e-12, atol=1e-13)
