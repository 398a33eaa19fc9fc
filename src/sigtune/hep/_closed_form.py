"""Closed-form Asimov discovery significances (Cowan, Cranmer, Gross, Vitells, arXiv:1007.1727).

For a counting experiment with expected signal ``s`` and background ``b`` the median discovery
significance under the signal-plus-background hypothesis is (Eq. 97 of arXiv:1007.1727)

.. math::

    Z_A = \\sqrt{2\\,[(s + b)\\ln(1 + s/b) - s]} .

With an absolute background uncertainty :math:`\\sigma_b`, constrained by an auxiliary Poisson
measurement :math:`m \\sim \\mathrm{Pois}(\\tau b)` with :math:`\\tau = b / \\sigma_b^2`, the profile
likelihood gives (Eq. 20 of Cowan's "Discovery sensitivity for a counting experiment with background
uncertainty", 2012, which follows from Sec. 5 of arXiv:1007.1727)

.. math::

    Z_A = \\sqrt{2\\left[(s+b)\\ln\\frac{(s+b)(b+\\sigma_b^2)}{b^2+(s+b)\\sigma_b^2}
          - \\frac{b^2}{\\sigma_b^2}\\ln\\left(1+\\frac{\\sigma_b^2 s}{b(b+\\sigma_b^2)}\\right)\\right]} .

Independent bins add in quadrature, :math:`Z = \\sqrt{\\sum_i Z_i^2}`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sigtune.hep._exceptions import HepInputError

__all__ = ["z_asimov", "z_asimov_bins"]


def _as_array(name: str, value: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise HepInputError(f"{name} must be finite, but got {value!r}.")
    return arr


def z_asimov_bins(
    s: ArrayLike, b: ArrayLike, sigma_b: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Per-bin Asimov discovery significance :math:`Z_{A,i}`.

    Args:
        s: Expected signal per bin (>= 0), scalar or array.
        b: Expected background per bin (> 0), broadcastable with ``s``.
        sigma_b: Absolute background uncertainty per bin (>= 0), or None for no uncertainty.
            A bin with ``sigma_b == 0`` uses the formula without uncertainty.

    Returns:
        The per-bin significances, with the broadcast shape of the inputs (0-d for scalars).

    Raises:
        HepError: (also a ValueError) if ``s < 0``, ``b <= 0``, ``sigma_b < 0`` or a value is not finite.

    Example:
        >>> round(float(z_asimov_bins(25.0, 50.0)), 3)
        3.289
    """
    s_arr = _as_array("s", s)
    b_arr = _as_array("b", b)
    if np.any(s_arr < 0):
        raise HepInputError(f"signal yields s must be >= 0, but got {s!r}.")
    if np.any(b_arr <= 0):
        raise HepInputError(
            f"background yields b must be > 0 (Z_A diverges for b = 0), but got {b!r}; "
            "merge or drop empty-background bins first."
        )
    # (s + b) ln(1 + s/b) - s, written with log1p so that s << b keeps its precision.
    no_unc = (s_arr + b_arr) * np.log1p(s_arr / b_arr) - s_arr
    if sigma_b is None:
        twice = 2.0 * no_unc
    else:
        sig = _as_array("sigma_b", sigma_b)
        if np.any(sig < 0):
            raise HepInputError(f"sigma_b must be >= 0, but got {sigma_b!r}.")
        s_arr, b_arr, sig, no_unc = np.broadcast_arrays(s_arr, b_arr, sig, no_unc)
        var = sig**2
        safe_var = np.where(var > 0, var, 1.0)
        # ln[(s+b)(b+v) / (b^2 + (s+b) v)] = ln(1 + s b / (b^2 + (s+b) v))
        term1 = (s_arr + b_arr) * np.log1p(s_arr * b_arr / (b_arr**2 + (s_arr + b_arr) * var))
        term2 = b_arr**2 / safe_var * np.log1p(safe_var * s_arr / (b_arr * (b_arr + safe_var)))
        twice = 2.0 * np.where(var > 0, term1 - term2, no_unc)
    # Rounding can make a vanishing argument slightly negative.
    out: NDArray[np.float64] = np.sqrt(np.clip(twice, 0.0, None))
    return out


def z_asimov(s: ArrayLike, b: ArrayLike, sigma_b: ArrayLike | None = None) -> float:
    """Asimov discovery significance summed over bins, :math:`Z_A = \\sqrt{\\sum_i Z_{A,i}^2}`.

    Args:
        s: Expected signal per bin (>= 0), scalar or array.
        b: Expected background per bin (> 0).
        sigma_b: Absolute background uncertainty per bin (>= 0), or None.

    Returns:
        The combined significance as a float.

    Raises:
        HepError: (also a ValueError) on invalid yields, see :func:`z_asimov_bins`.

    Example:
        >>> round(z_asimov(50.0, 100.0, 7.0), 2)
        3.72
    """
    per_bin = z_asimov_bins(s, b, sigma_b)
    total: Any = np.sqrt(np.sum(per_bin**2))
    return float(total)
