"""A generator of a HEP-like binary classification dataset (no downloads needed).

Variables, named by role so tests and examples can check what a selection kept:

* ``inf_0 .. inf_{n_informative-1}``: informative, kinematic-like. They cycle through three
  shapes: a mass-like peak for signal on a falling background (``inf_0``, ``inf_3``, ...), a
  transverse-momentum-like gamma distribution, harder for signal (``inf_1``, ...), and an
  angle-like |Δη| that is narrower for signal (``inf_2``, ...).
* ``corr_0 ..``: correlated copies (smeared functions of an informative variable).
* ``noise_0 ..``: identical for signal and background (Gaussian, exponential, uniform).

Class 1 is signal. Weights are expected yields: signal weights sum to ``signal_yield``,
background weights to ``background_yield``, with a log-normal event-by-event spread; a fraction
of events can get negative weights (as from NLO generators). Event numbers are unique and
shuffled with respect to the row order.
"""

from __future__ import annotations

import numpy as np

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._data import EventData

__all__ = ["make_hep_dataset"]


def make_hep_dataset(
    n_events: int = 10_000,
    *,
    n_informative: int = 4,
    n_correlated: int = 2,
    n_noise: int = 4,
    signal_fraction: float = 0.5,
    separation: float = 1.0,
    signal_yield: float = 50.0,
    background_yield: float = 1000.0,
    weight_spread: float = 0.3,
    negative_weight_fraction: float = 0.0,
    seed: int | None = 0,
) -> EventData:
    """Generate a seeded signal/background dataset.

    Args:
        n_events: Number of events.
        n_informative: Informative variables (>= 1).
        n_correlated: Variables correlated with the informative ones (>= 0).
        n_noise: Pure-noise variables (>= 0).
        signal_fraction: Fraction of signal events (class 1) in ``(0, 1)``.
        separation: Scales how different signal and background are (0 = identical).
        signal_yield: Sum of the signal weights (expected events).
        background_yield: Sum of the background weights.
        weight_spread: Sigma of the log-normal per-event weight spread (0 = equal weights).
        negative_weight_fraction: Fraction of events whose weight is negated (then the yields are
            restored by rescaling), in ``[0, 0.5)``.
        seed: Seed; the same seed gives identical data.

    Returns:
        The events, features ordered informative, correlated, noise.

    Raises:
        ConfigError: For out-of-range arguments.
    """
    if int(n_events) < 2:
        raise ConfigError(f"n_events must be >= 2, got {n_events}")
    if int(n_informative) < 1 or int(n_correlated) < 0 or int(n_noise) < 0:
        raise ConfigError("n_informative must be >= 1, n_correlated and n_noise >= 0")
    if not 0 < signal_fraction < 1:
        raise ConfigError(f"signal_fraction must be in (0, 1), got {signal_fraction}")
    if separation < 0 or weight_spread < 0:
        raise ConfigError("separation and weight_spread must be >= 0")
    if not 0 <= negative_weight_fraction < 0.5:
        raise ConfigError(
            f"negative_weight_fraction must be in [0, 0.5), got {negative_weight_fraction}"
        )
    if signal_yield <= 0 or background_yield <= 0:
        raise ConfigError("signal_yield and background_yield must be > 0")
    rng = np.random.default_rng(seed)
    n = int(n_events)
    y = (rng.random(n) < signal_fraction).astype(np.int64)
    if y.min() == y.max():  # tiny samples: make sure both classes exist
        y[0], y[1] = 0, 1
    sig = y == 1
    k = float(separation)

    cols: list[np.ndarray] = []
    names: list[str] = []
    for i in range(int(n_informative)):
        shape = i % 3
        width = 1.0 + 0.15 * (i // 3)  # later variables of a shape are a bit weaker
        if shape == 0:  # mass-like: peak on a falling spectrum
            bkg = 40.0 + rng.exponential(60.0, n)
            peak = rng.normal(125.0, 15.0 * width, n)
            v = np.where(sig & (rng.random(n) < min(1.0, 0.75 * k)), peak, bkg)
        elif shape == 1:  # pT-like: harder for signal
            scale = np.where(sig, 30.0 * (1.0 + 0.8 * k / width), 30.0)
            v = 20.0 + rng.gamma(2.0, scale)
        else:  # |Δη|-like: narrower for signal
            sigma = np.where(sig, 1.6 / (1.0 + 0.9 * k / width), 1.6)
            v = np.abs(rng.normal(0.0, sigma))
        cols.append(v)
        names.append(f"inf_{i}")
    for j in range(int(n_correlated)):
        src = cols[j % int(n_informative)]
        spread = float(np.std(src)) or 1.0
        v = src * (1.0 + 0.1 * rng.normal(size=n)) + 0.5 * spread * rng.normal(size=n)
        cols.append(v)
        names.append(f"corr_{j}")
    for j in range(int(n_noise)):
        kind = j % 3
        if kind == 0:
            v = rng.normal(0.0, 1.0, n)
        elif kind == 1:
            v = rng.exponential(50.0, n)
        else:
            v = rng.uniform(-np.pi, np.pi, n)
        cols.append(v)
        names.append(f"noise_{j}")

    w = np.exp(rng.normal(0.0, weight_spread, n)) if weight_spread > 0 else np.ones(n)
    if negative_weight_fraction > 0:
        w = np.where(rng.random(n) < negative_weight_fraction, -w, w)
    for cls_mask, total in ((sig, signal_yield), (~sig, background_yield)):
        w[cls_mask] *= total / w[cls_mask].sum()
    event_number = rng.permutation(n).astype(np.int64) + 100_000
    return EventData(
        X=np.column_stack(cols),
        y=y,
        w=w,
        event_number=event_number,
        features=tuple(names),
        n_classes=2,
    )
