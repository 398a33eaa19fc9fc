"""Shared fixtures of the binning pipeline tests."""

from __future__ import annotations

import numpy as np
import pytest

from sigtune.pipelines.binning import EventSample, Histograms, fill_histograms


def make_events(seed: int = 1, n: int = 4000) -> list[EventSample]:
    """Small weighted samples with a weight variation, a discriminant variation and an eta column."""
    rng = np.random.default_rng(seed)
    xs = np.clip(rng.normal(0.6, 0.1, n), 0.0, 1.0)
    xb = rng.exponential(0.4, n)
    xb = xb[xb < 1.0]
    ws = rng.uniform(0.001, 0.004, n)
    wb = rng.uniform(0.02, 0.06, xb.shape[0])
    sig = EventSample.from_arrays("signal", xs, ws, columns={"eta": rng.uniform(-3, 3, n)})
    bkg = EventSample.from_arrays(
        "background",
        xb,
        wb,
        columns={"eta": rng.normal(0, 1.5, xb.shape[0])},
        weight_variations={"bkg_w": (wb * (1.05 + 0.1 * xb), wb * (0.95 - 0.1 * xb))},
        discriminant_variations={"bkg_scale": (np.minimum(xb * 1.03, 1.0), xb * 0.97)},
    )
    return [sig, bkg]


@pytest.fixture(scope="module")
def events() -> list[EventSample]:
    return make_events()


@pytest.fixture(scope="module")
def fine(events: list[EventSample]) -> Histograms:
    return fill_histograms(events, np.linspace(0.0, 1.0, 201), signal=["signal"])
