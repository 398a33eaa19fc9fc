"""Training weights: class normalisation, max_event_weight splitting, yield scaling."""

from __future__ import annotations

import numpy as np
import pytest

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml import (
    EventData,
    cap_event_weights,
    make_hep_dataset,
    normalize_class_weights,
    scale_to_yields,
    training_weights,
)


def _data(w: list[float], y: list[int]) -> EventData:
    n = len(w)
    return EventData(
        np.arange(n, dtype=float).reshape(-1, 1),
        np.array(y),
        np.array(w),
        np.arange(n) + 10,
        ("x",),
        2,
    )


def test_normalisation_equalises_classes_with_mean_one() -> None:
    d = make_hep_dataset(500, seed=0)
    out = normalize_class_weights(d)
    sums = out.class_weight_sums()
    np.testing.assert_allclose(sums, [len(d) / 2, len(d) / 2])
    np.testing.assert_allclose(out.w.mean(), 1.0)
    # shapes within a class are kept
    m = d.y == 1
    np.testing.assert_allclose(out.w[m] / d.w[m], (out.w[m] / d.w[m])[0])
    # the original is untouched
    np.testing.assert_allclose(d.class_weight_sums(), [1000.0, 50.0])
    cw = normalize_class_weights(d, class_weights=[1.0, 3.0]).class_weight_sums()
    np.testing.assert_allclose(cw[1] / cw[0], 3.0)
    with pytest.raises(ConfigError, match="total weight"):
        normalize_class_weights(_data([1.0, -2.0, 1.0], [1, 1, 0]))
    with pytest.raises(ConfigError, match="needs 2 values"):
        normalize_class_weights(d, class_weights=[1.0])


def test_cap_splits_heavy_events_by_halving() -> None:
    # class 0 mean weight = (1 + 1 + 10) / 3 = 4 -> relative weights 0.25, 0.25, 2.5
    # class 1 mean weight = 2 -> relative weights 0.5, 1.5 (under the cap)
    d = _data([1.0, 1.0, 10.0, 1.0, 3.0], [0, 0, 0, 1, 1])
    out = cap_event_weights(d, max_event_weight=1.0)
    # 2.5 -> 1.25 -> 0.625: two halvings, 4 copies of weight 2.5
    assert len(out) == 3 + 4 + 2  # 3 untouched, 4 copies of event 12, 2 copies of event 14
    heavy = out.event_number == 12
    assert heavy.sum() == 4
    np.testing.assert_allclose(out.w[heavy], 2.5)
    # class-1 event with relative weight 1.5 -> 2 copies of 1.5
    assert (out.event_number == 14).sum() == 2
    np.testing.assert_allclose(out.w[out.event_number == 14], 1.5)
    np.testing.assert_allclose(out.class_weight_sums(), d.class_weight_sums())
    # untouched events first, in order, then the copies
    np.testing.assert_array_equal(out.event_number[:3], [10, 11, 13])
    # every piece is under the cap relative to the original class mean
    means = np.array([4.0, 2.0])
    assert np.all(out.w / means[out.y] <= 1.0 + 1e-12)


def test_cap_is_noop_under_the_cap_and_validates() -> None:
    d = make_hep_dataset(300, weight_spread=0.1, seed=1)
    same = cap_event_weights(d, 100.0)
    assert same is d
    with pytest.raises(ConfigError, match="max_event_weight"):
        cap_event_weights(d, 0.0)


def test_training_weights_pipeline_and_yield_scaling() -> None:
    d = make_hep_dataset(1000, weight_spread=1.0, seed=2)
    tw = training_weights(d, max_event_weight=2.0)
    assert len(tw) > len(d)  # heavy events were split
    np.testing.assert_allclose(tw.class_weight_sums(), [500.0, 500.0])
    norm = training_weights(d)
    class_mean = norm.class_weight_sums() / norm.class_counts()
    assert np.all(tw.w / class_mean[tw.y] <= 2.0 + 1e-9)
    assert np.any(norm.w / class_mean[norm.y] > 2.0)  # the cap did something
    sub = d.subset(np.arange(200))
    scaled = scale_to_yields(sub, d)
    np.testing.assert_allclose(scaled.class_weight_sums(), d.class_weight_sums())
    raw = training_weights(d, normalize=False)
    np.testing.assert_array_equal(raw.w, d.w)
