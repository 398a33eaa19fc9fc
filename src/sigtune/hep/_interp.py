"""HistFactory interpolation codes with analytic first and second derivatives.

Multiplicative (normsys), with ``u = I+/I0`` and ``d = I-/I0``:

- code1: ``kappa = u**alpha`` for ``alpha >= 0``, ``d**(-alpha)`` below.
- code4: the same exponential for ``|alpha| >= 1``; for ``|alpha| < 1`` a polynomial
  ``1 + sum_{i=1..6} a_i alpha**i`` whose coefficients match the value, first and second
  derivative of the exponential at ``alpha = +-1`` (pyhf ``interpolators/code4``).

The multiplicative codes return the *log* of the factor and its two derivatives, which is what
the likelihood needs (products of factors become sums).

Additive (histosys), with ``D+ = I+ - I0`` and ``D- = I0 - I-``:

- code0: ``delta = alpha * D+`` for ``alpha >= 0``, ``alpha * D-`` below (piecewise linear).
- code4p: for ``|alpha| <= 1``
  ``delta = alpha*S + alpha**2 * (15 - 10 alpha**2 + 3 alpha**4) * A`` with
  ``S = (D+ + D-)/2``, ``A = (D+ - D-)/16``; linear (code0) outside.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "HISTOSYS_CODES",
    "NORMSYS_CODES",
    "code4_coefficients",
    "histosys_interp",
    "normsys_log_interp",
]

NORMSYS_CODES = ("code1", "code4")
HISTOSYS_CODES = ("code0", "code4p")


def _code4_matrix() -> np.ndarray:
    """Inverse of the 6x6 system fixing a_1..a_6 from f, f', f'' at alpha = +1 and -1."""
    rows = []
    for alpha in (1.0, -1.0):
        rows.append([alpha**i for i in range(1, 7)])
    for alpha in (1.0, -1.0):
        rows.append([i * alpha ** (i - 1) for i in range(1, 7)])
    for alpha in (1.0, -1.0):
        rows.append([i * (i - 1) * alpha ** (i - 2) for i in range(1, 7)])
    return np.linalg.inv(np.asarray(rows))


_CODE4_INV = _code4_matrix()


def code4_coefficients(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Polynomial coefficients ``a_1..a_6`` of code4 for relative variations ``hi``, ``lo``.

    Args:
        hi: ``I+/I0`` (> 0), any shape.
        lo: ``I-/I0`` (> 0), same shape.

    Returns:
        Array of shape ``hi.shape + (6,)``.
    """
    lu, ld = np.log(hi), np.log(lo)
    b = np.stack([hi - 1.0, lo - 1.0, hi * lu, -lo * ld, hi * lu * lu, lo * ld * ld], axis=-1)
    return np.asarray(b @ _CODE4_INV.T)


def normsys_log_interp(
    alpha: np.ndarray,
    log_hi: np.ndarray,
    log_lo: np.ndarray,
    coeffs: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ln kappa(alpha)`` and its first two derivatives for code1 (``coeffs=None``) or code4.

    Args:
        alpha: Nuisance parameter values, broadcastable against ``log_hi``.
        log_hi: ``ln(I+/I0)``.
        log_lo: ``ln(I-/I0)``.
        coeffs: ``code4_coefficients(hi, lo)`` for code4, ``None`` for code1.

    Returns:
        ``(ln kappa, d ln kappa / d alpha, d2 ln kappa / d alpha2)``, broadcast shape.
    """
    pos = alpha >= 0.0
    slope = np.where(pos, log_hi, -log_lo)
    lk = alpha * slope
    if coeffs is None:
        return lk, slope, np.zeros_like(lk)
    inside = np.abs(alpha) < 1.0
    a = np.where(inside, alpha, 0.0)
    c = coeffs
    # Horner for p, p', p''
    p = 1.0 + a * (
        c[..., 0]
        + a * (c[..., 1] + a * (c[..., 2] + a * (c[..., 3] + a * (c[..., 4] + a * c[..., 5]))))
    )
    dp = c[..., 0] + a * (
        2 * c[..., 1]
        + a * (3 * c[..., 2] + a * (4 * c[..., 3] + a * (5 * c[..., 4] + a * 6 * c[..., 5])))
    )
    d2p = 2 * c[..., 1] + a * (
        6 * c[..., 2] + a * (12 * c[..., 3] + a * (20 * c[..., 4] + a * 30 * c[..., 5]))
    )
    g = dp / p
    lk = np.where(inside, np.log(p), lk)
    d1 = np.where(inside, g, slope)
    d2 = np.where(inside, d2p / p - g * g, 0.0)
    return lk, d1, d2


def histosys_interp(
    alpha: np.ndarray, d_plus: np.ndarray, d_minus: np.ndarray, code: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Additive histosys shift and its first two derivatives.

    Args:
        alpha: Nuisance parameter values, broadcastable against ``d_plus``.
        d_plus: ``I+ - I0``.
        d_minus: ``I0 - I-``.
        code: ``"code0"`` or ``"code4p"``.

    Returns:
        ``(delta, d delta / d alpha, d2 delta / d alpha2)``.
    """
    slope = np.where(alpha >= 0.0, d_plus, d_minus)
    delta = alpha * slope
    if code == "code0":
        return delta, slope, np.zeros_like(delta)
    inside = np.abs(alpha) <= 1.0
    a = np.where(inside, alpha, 0.0)
    s = 0.5 * (d_plus + d_minus)
    asym = 0.0625 * (d_plus - d_minus)
    a2 = a * a
    poly = a2 * (15.0 + a2 * (-10.0 + 3.0 * a2))
    dpoly = a * (30.0 + a2 * (-40.0 + 18.0 * a2))
    d2poly = 30.0 + a2 * (-120.0 + 90.0 * a2)
    delta = np.where(inside, a * s + poly * asym, delta)
    d1 = np.where(inside, s + dpoly * asym, slope)
    d2 = np.where(inside, d2poly * asym, 0.0)
    return delta, d1, d2


_POW7 = np.arange(7.0)
# rows: value, first and second derivative of the code4p polynomial a^2 (15 - 10 a^2 + 3 a^4)
# as coefficients of the powers a^0..a^6
_CODE4P_POLY = np.array(
    [
        [0.0, 0.0, 15.0, 0.0, -10.0, 0.0, 3.0],
        [0.0, 30.0, 0.0, -40.0, 0.0, 18.0, 0.0],
        [30.0, 0.0, -120.0, 0.0, 90.0, 0.0, 0.0],
    ]
).T


def code4_power_matrix(coeffs: np.ndarray) -> np.ndarray:
    """Stack the code4 polynomial and its two derivatives as rows over the powers ``a^0..a^6``.

    Args:
        coeffs: ``code4_coefficients`` output, shape ``(..., C, 6)``.

    Returns:
        Shape ``(..., 3 * C, 7)``: rows ``[p | p' | p'']`` per channel, for a matrix product with
        the power vector ``[1, a, ..., a^6]``.
    """
    c = coeffs
    zero = np.zeros((*c.shape[:-1], 1))
    one = np.ones((*c.shape[:-1], 1))
    k = np.arange(1.0, 7.0)
    p = np.concatenate([one, c], axis=-1)
    dp = np.concatenate([c * k, zero], axis=-1)
    d2p = np.concatenate([c[..., 1:] * (k[1:] * k[:-1]), zero, zero], axis=-1)
    return np.concatenate([p, dp, d2p], axis=-2)


def normsys_log_interp_fast(
    alpha: np.ndarray, log_hi: np.ndarray, log_lo: np.ndarray, power_matrix: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same as :func:`normsys_log_interp` with ``alpha`` of shape ``(B, I, 1)`` and code4 given
    by :func:`code4_power_matrix` (fewer array operations for the likelihood's hot loop)."""
    if power_matrix is not None and float(np.abs(alpha).max(initial=0.0)) < 1.0:
        # every alpha inside the polynomial region: the same values, fewer operations
        pw = alpha[..., None] ** _POW7
        vals = (power_matrix @ pw.transpose(0, 1, 3, 2))[..., 0]
        n_c = log_hi.shape[-1]
        p, dp, d2p = vals[..., :n_c], vals[..., n_c : 2 * n_c], vals[..., 2 * n_c :]
        g = dp / p
        return np.log(p), g, d2p / p - g * g
    slope = np.where(alpha >= 0.0, log_hi, -log_lo)
    if power_matrix is None:
        return alpha * slope, slope, np.zeros_like(slope)
    inside = np.abs(alpha) < 1.0
    a = np.where(inside, alpha, 0.0)
    pw = a[..., None] ** _POW7  # (B, I, 1, 7)
    vals = (power_matrix @ pw.transpose(0, 1, 3, 2))[..., 0]  # (B, I, 3C)
    n_c = log_hi.shape[-1]
    p, dp, d2p = vals[..., :n_c], vals[..., n_c : 2 * n_c], vals[..., 2 * n_c :]
    g = dp / p
    lk = np.where(inside, np.log(p), alpha * slope)
    d1 = np.where(inside, g, slope)
    d2 = np.where(inside, d2p / p - g * g, 0.0)
    return lk, d1, d2


def histosys_interp_fast(
    alpha: np.ndarray,
    d_plus: np.ndarray,
    d_minus: np.ndarray,
    sym: np.ndarray,
    asym: np.ndarray,
    code: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same as :func:`histosys_interp` with precomputed ``sym = (D+ + D-)/2`` and
    ``asym = (D+ - D-)/16``; ``alpha`` has shape ``(B, I, 1)``."""
    if code != "code0" and float(np.abs(alpha).max(initial=0.0)) <= 1.0:
        # every alpha inside the polynomial region: the same values, fewer operations
        poly = (alpha[..., None] ** _POW7) @ _CODE4P_POLY
        c0, c1, c2 = poly[..., 0], poly[..., 1], poly[..., 2]
        return alpha * sym + c0 * asym, sym + c1 * asym, c2 * asym
    slope = np.where(alpha >= 0.0, d_plus, d_minus)
    if code == "code0":
        return alpha * slope, slope, np.zeros_like(slope)
    inside = np.abs(alpha) <= 1.0
    a = np.where(inside, alpha, 0.0)
    poly = (a[..., None] ** _POW7) @ _CODE4P_POLY  # (B, I, 1, 3)
    c0, c1, c2 = poly[..., 0], poly[..., 1], poly[..., 2]
    delta = np.where(inside, a * sym + c0 * asym, alpha * slope)
    d1 = np.where(inside, sym + c1 * asym, slope)
    d2 = np.where(inside, c2 * asym, 0.0)
    return delta, d1, d2
