"""Event weights for training: per-class normalisation and OPTIMA's ``max_event_weight`` cap.

Training weights are derived from the physics weights and used only to fit a model; the original
:class:`~sigtune.pipelines.ml.EventData` (with the physics weights) is kept for evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._data import EventData

__all__ = ["cap_event_weights", "normalize_class_weights", "scale_to_yields", "training_weights"]


def normalize_class_weights(
    data: EventData, *, class_weights: Sequence[float] | Mapping[int, float] | None = None
) -> EventData:
    """Rescale weights so every class has the same total weight (times ``class_weights``).

    Class ``c`` gets the factor ``f_c = (N / K) * cw_c / sum_{i in c} w_i`` so that the mean
    training weight is 1 when all ``cw_c = 1`` (N events, K classes). Classes without events
    are left alone.

    Args:
        data: Events (their weights are the physics weights).
        class_weights: Optional relative weight per class (list or ``{class: factor}``).

    Returns:
        A copy with normalised weights.

    Raises:
        ConfigError: If a class has a non-positive total weight or a class weight is negative.
    """
    cw = _class_factors(class_weights, data.n_classes)
    sums = data.class_weight_sums()
    counts = data.class_counts()
    n_present = int(np.count_nonzero(counts))
    if n_present == 0:
        return data
    factor = np.ones(data.n_classes)
    for c in range(data.n_classes):
        if counts[c] == 0:
            continue
        if sums[c] <= 0:
            raise ConfigError(
                f"class {c} has total weight {sums[c]:.4g} <= 0: cannot normalise its weights"
            )
        factor[c] = len(data) / n_present * cw[c] / sums[c]
    return data.with_weights(data.w * factor[data.y])


def cap_event_weights(data: EventData, max_event_weight: float) -> EventData:
    """Split events whose relative weight exceeds ``max_event_weight`` (OPTIMA's option).

    The relative weight of an event is its weight divided by the mean weight of its class.
    An event above the cap is replaced by 2^m copies with weight ``w / 2^m``, with the smallest
    m that brings the relative weight to at most the cap ("duplicated with halved weight until
    under the cap"). Totals per class are unchanged; the copies keep the event number, so
    event-number based splits never separate them. Apply this to the TRAINING split only.

    Args:
        data: Events (typically the training split, weights already normalised or not).
        max_event_weight: The cap on the relative weight, > 1 is sensible; must be > 0.

    Returns:
        Events with the heavy ones split; untouched events keep their original order, copies are
        appended at the end.

    Raises:
        ConfigError: If ``max_event_weight`` is not positive.
    """
    if not max_event_weight > 0:
        raise ConfigError(f"max_event_weight must be > 0, got {max_event_weight}")
    means = np.zeros(data.n_classes)
    counts = data.class_counts()
    sums = data.class_weight_sums()
    present = counts > 0
    means[present] = sums[present] / counts[present]
    mean_per_event = means[data.y]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(mean_per_event > 0, np.abs(data.w) / mean_per_event, 0.0)
    over = rel > max_event_weight
    if not np.any(over):
        return data
    # smallest m with rel / 2^m <= cap
    m = np.zeros(len(data), dtype=np.int64)
    m[over] = np.ceil(np.log2(rel[over] / max_event_weight) - 1e-12).astype(np.int64)
    m[over] = np.maximum(m[over], 1)
    copies = np.left_shift(1, m)
    idx = np.concatenate([np.flatnonzero(~over), np.repeat(np.flatnonzero(over), copies[over])])
    out = data.subset(idx)
    return out.with_weights(out.w / copies[idx])


def training_weights(
    data: EventData,
    *,
    normalize: bool = True,
    class_weights: Sequence[float] | Mapping[int, float] | None = None,
    max_event_weight: float | None = None,
) -> EventData:
    """The events to train on: class-normalised weights, then the ``max_event_weight`` cap.

    Args:
        data: The training split with physics weights.
        normalize: Equalise the total weight of the classes (mean weight 1).
        class_weights: Relative class factors applied with the normalisation.
        max_event_weight: Optional cap on the relative event weight (see :func:`cap_event_weights`).

    Returns:
        A new :class:`EventData`; ``data`` is unchanged.
    """
    out = normalize_class_weights(data, class_weights=class_weights) if normalize else data
    if max_event_weight is not None:
        out = cap_event_weights(out, max_event_weight)
    return out


def scale_to_yields(subset: EventData, reference: EventData) -> EventData:
    """Scale a subset's weights per class so its totals equal the reference's expected yields.

    With physics weights normalised to the full sample, a validation split holding a fraction f
    of the events has yields f times too small; this restores them (factor
    ``sum_ref,c / sum_subset,c`` per class ``c``) -- what the significance metric needs.

    Raises:
        ConfigError: If a class with events in the subset has zero total weight there.
    """
    ref = reference.class_weight_sums()
    sub = subset.class_weight_sums()
    factor = np.ones(subset.n_classes)
    for c in range(subset.n_classes):
        if np.any(subset.y == c):
            if sub[c] == 0:
                raise ConfigError(f"class {c} has total weight 0 in the subset: cannot scale")
            factor[c] = ref[c] / sub[c]
    return subset.with_weights(subset.w * factor[subset.y])


def _class_factors(
    class_weights: Sequence[float] | Mapping[int, float] | None, n_classes: int
) -> np.ndarray:
    cw = np.ones(n_classes)
    if class_weights is None:
        return cw
    if isinstance(class_weights, Mapping):
        for k, v in class_weights.items():
            if not 0 <= int(k) < n_classes:
                raise ConfigError(f"class_weights key {k} outside [0, {n_classes})")
            cw[int(k)] = float(v)
    else:
        vals = list(class_weights)
        if len(vals) != n_classes:
            raise ConfigError(f"class_weights needs {n_classes} values, got {len(vals)}")
        cw[:] = vals
    if np.any(cw < 0):
        raise ConfigError(f"class_weights must be >= 0, got {cw.tolist()}")
    return cw
