"""Closed-form Asimov significances against the reference numbers of Cowan et al. and limits."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sigtune.hep._closed_form import z_asimov, z_asimov_bins
from sigtune.hep._validate import HepInputError


@pytest.mark.parametrize(
    ("s", "b", "sigma_b", "expected", "abs_tol"),
    [
        (25.0, 50.0, None, 3.289, 5e-4),  # hep-formulas.md (s/sqrt(b) would be 3.54)
        (50.0, 100.0, 7.0, 3.72, 5e-3),
        (25.0, 50.0, 7.0, 2.256, 5e-4),
    ],
)
def test_reference_values(
    s: float, b: float, sigma_b: float | None, expected: float, abs_tol: float
) -> None:
    assert z_asimov(s, b, sigma_b) == pytest.approx(expected, abs=abs_tol)


def test_matches_direct_formula() -> None:
    s, b, sb = 13.0, 41.0, 5.5
    direct = math.sqrt(2 * ((s + b) * math.log(1 + s / b) - s))
    assert z_asimov(s, b) == pytest.approx(direct, rel=1e-14)
    v = sb**2
    direct_unc = math.sqrt(
        2
        * (
            (s + b) * math.log((s + b) * (b + v) / (b * b + (s + b) * v))
            - b * b / v * math.log(1 + v * s / (b * (b + v)))
        )
    )
    assert z_asimov(s, b, sb) == pytest.approx(direct_unc, rel=1e-12)


def test_small_signal_limit_is_s_over_sqrt_b() -> None:
    # Z_A -> s / sqrt(b) for s << b (and log1p keeps the precision there).
    s, b = 1e-6, 1e4
    assert z_asimov(s, b) == pytest.approx(s / math.sqrt(b), rel=1e-6)
    # With uncertainty: s / sqrt(b + sigma_b^2).
    assert z_asimov(s, b, 30.0) == pytest.approx(s / math.sqrt(b + 900.0), rel=1e-5)


def test_vanishing_uncertainty_recovers_no_uncertainty() -> None:
    s = np.array([3.0, 10.0, 0.5])
    b = np.array([20.0, 5.0, 1.0])
    np.testing.assert_allclose(z_asimov_bins(s, b, 1e-5), z_asimov_bins(s, b), rtol=1e-6)
    np.testing.assert_allclose(z_asimov_bins(s, b, 0.0), z_asimov_bins(s, b), rtol=0)


def test_uncertainty_reduces_significance_monotonically() -> None:
    zs = [z_asimov(20.0, 40.0, sb) for sb in (0.0, 1.0, 3.0, 10.0, 30.0)]
    assert all(a > b for a, b in itertools.pairwise(zs))


def test_bins_add_in_quadrature() -> None:
    s = np.array([5.0, 12.0, 0.0, 30.0])
    b = np.array([10.0, 40.0, 3.0, 100.0])
    sb = np.array([1.0, 4.0, 0.5, 12.0])
    per_bin = z_asimov_bins(s, b, sb)
    assert per_bin.shape == (4,)
    assert per_bin[2] == 0.0
    assert z_asimov(s, b, sb) == pytest.approx(math.sqrt(float(np.sum(per_bin**2))), rel=1e-14)
    for i in range(4):
        assert per_bin[i] == pytest.approx(z_asimov(s[i], b[i], sb[i]), rel=1e-14)


def test_scalar_input_gives_0d_array() -> None:
    out = z_asimov_bins(25.0, 50.0)
    assert out.shape == ()


@pytest.mark.parametrize(
    ("s", "b", "sigma_b", "match"),
    [
        (-1.0, 10.0, None, "s must be >= 0"),
        (1.0, 0.0, None, "b must be > 0"),
        (1.0, -2.0, None, "b must be > 0"),
        (1.0, 10.0, -1.0, "sigma_b must be >= 0"),
        (float("nan"), 10.0, None, "must be finite"),
    ],
)
def test_bad_input_raises(s: float, b: float, sigma_b: float | None, match: str) -> None:
    with pytest.raises(HepInputError, match=match):
        z_asimov(s, b, sigma_b)
    assert issubclass(HepInputError, ValueError)
