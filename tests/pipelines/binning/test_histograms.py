"""Fine histograms, snapping and re-binning (conservation of yields and sumw2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigtune.pipelines.binning import (
    BinningError,
    EventSample,
    Histograms,
    Template,
    fill_histograms,
)


def test_fill_matches_numpy_histogram(events: list[EventSample], fine: Histograms) -> None:
    edges = fine.edges
    for s in events:
        t = fine[s.name]
        counts, _ = np.histogram(s.discriminant, bins=edges, weights=s.weight)
        sumw2, _ = np.histogram(s.discriminant, bins=edges, weights=s.weight**2)
        np.testing.assert_allclose(t.counts, counts, rtol=1e-12)
        np.testing.assert_allclose(t.sumw2, sumw2, rtol=1e-12)
    bkg = events[1]
    up_w, _ = np.histogram(bkg.discriminant, bins=edges, weights=bkg.variations["bkg_w"].up)
    up_x, _ = np.histogram(bkg.variations["bkg_scale"].up, bins=edges, weights=bkg.weight)
    np.testing.assert_allclose(fine["background"].variations["bkg_w"][0], up_w, rtol=1e-12)
    np.testing.assert_allclose(fine["background"].variations["bkg_scale"][0], up_x, rtol=1e-12)


def _all_rows(h: Histograms) -> np.ndarray:
    rows = []
    for t in h.templates:
        rows += [t.counts, t.sumw2]
        for up, down in t.variations.values():
            rows += [up, down]
    return np.vstack(rows)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 199), min_size=0, max_size=30, unique=True))
def test_rebin_conserves_every_quantity(fine: Histograms, inner: list[int]) -> None:
    idx = np.array(sorted({0, 200, *inner}))
    merged = fine.rebin_indices(idx)
    assert merged.n_bins == idx.shape[0] - 1
    np.testing.assert_allclose(merged.edges, fine.edges[idx])
    a, b = _all_rows(fine), _all_rows(merged)
    np.testing.assert_allclose(b.sum(axis=1), a.sum(axis=1), rtol=1e-12)
    # every merged bin is the sum of its fine bins
    for k in range(merged.n_bins):
        np.testing.assert_allclose(b[:, k], a[:, idx[k] : idx[k + 1]].sum(axis=1), rtol=1e-12)


def test_rebin_inside_range_conserves_the_range(fine: Histograms) -> None:
    merged = fine.rebin([0.2, 0.5, 0.8])
    i0, i1 = 40, 160
    np.testing.assert_allclose(
        merged.total("all").sum(), fine.total("all")[i0:i1].sum(), rtol=1e-12
    )
    np.testing.assert_allclose(
        merged.total_sumw2("background").sum(),
        fine.total_sumw2("background")[i0:i1].sum(),
        rtol=1e-12,
    )


def test_snap_goes_to_nearest_boundary_and_dedupes(fine: Histograms) -> None:
    # fine width 0.005: 0.2012 -> 0.200, 0.2038 -> 0.205, duplicates collapse
    idx = fine.snap([0.2012, 0.2038, 0.2040, 0.7, 1.4])
    np.testing.assert_allclose(fine.edges[idx], [0.2, 0.205, 0.7, 1.0])
    with pytest.raises(BinningError, match="collapse"):
        fine.snap([0.3001, 0.3002])


def test_bad_inputs_raise_binning_error() -> None:
    t = Template.from_arrays("s", [1.0, 2.0])
    with pytest.raises(BinningError, match="strictly increasing"):
        Histograms.from_templates(
            [0.0, 0.0, 1.0], [t, Template.from_arrays("b", [1.0, 1.0])], ["s"]
        )
    with pytest.raises(BinningError, match="2 bins but the edges define 3"):
        Histograms.from_templates([0, 1, 2, 3], [t, Template.from_arrays("b", [1, 1])], ["s"])
    with pytest.raises(BinningError, match="background"):
        Histograms.from_templates([0, 1, 2], [t], ["s"])
    with pytest.raises(BinningError, match="not among"):
        Histograms.from_templates([0, 1, 2], [t, Template.from_arrays("b", [1, 1])], ["x"])
    with pytest.raises(BinningError, match="NaN"):
        Template.from_arrays("s", [1.0, np.nan])
    h = Histograms.from_templates([0, 1, 2], [t, Template.from_arrays("b", [1, 1])], ["s"])
    with pytest.raises(BinningError, match="strictly increasing"):
        h.rebin_indices([0, 0, 2])


def test_events_outside_range_and_last_edge() -> None:
    s = EventSample.from_arrays("s", [0.0, 0.5, 1.0, 1.5, -0.1], [1, 2, 3, 4, 5])
    b = EventSample.from_arrays("b", [0.25, 0.75], [1, 1])
    h = fill_histograms([s, b], [0.0, 0.5, 1.0], signal=["s"])
    np.testing.assert_allclose(h["s"].counts, [1.0, 5.0])  # 1.0 sits in the closed last bin
    np.testing.assert_allclose(h["s"].sumw2, [1.0, 13.0])
