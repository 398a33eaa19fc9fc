"""Training / validation / test splits: random, event-number based, and k-fold.

Every split is a :class:`Splits` of three :class:`~sigtune.pipelines.ml.EventData` plus the
index arrays into the original data, so the same split can be rebuilt and stored. Random splits
are reproducible from ``seed``; event-number splits depend only on the event numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._data import EventData

__all__ = ["Splits", "kfold_splits", "split_event_number", "split_random"]


@dataclass(frozen=True, eq=False)
class Splits:
    """One partition of the events into training, validation and test sets.

    Attributes:
        train: Training events.
        val: Validation events (early stopping, the tuned metric).
        test: Test events (may be empty).
        train_idx: Indices of ``train`` in the original data (sorted).
        val_idx: Indices of ``val`` in the original data (sorted).
        test_idx: Indices of ``test`` in the original data (sorted).
    """

    train: EventData
    val: EventData
    test: EventData
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray

    @classmethod
    def from_indices(
        cls, data: EventData, train_idx: np.ndarray, val_idx: np.ndarray, test_idx: np.ndarray
    ) -> Splits:
        """Build the three subsets of ``data`` from index arrays."""
        tr, va, te = (
            np.sort(np.asarray(i, dtype=np.int64)) for i in (train_idx, val_idx, test_idx)
        )
        return cls(data.subset(tr), data.subset(va), data.subset(te), tr, va, te)

    def to_dict(self) -> dict[str, list[int]]:
        """Index lists, JSON-serialisable."""
        return {
            "train": self.train_idx.tolist(),
            "val": self.val_idx.tolist(),
            "test": self.test_idx.tolist(),
        }


def split_random(
    data: EventData,
    *,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int | None = 0,
    stratify: bool = True,
) -> Splits:
    """Random split into training, validation and test sets.

    Args:
        data: The events.
        val_fraction: Fraction of events for validation, in ``(0, 1)``.
        test_fraction: Fraction for the test set, in ``[0, 1)``; ``val + test < 1``.
        seed: Seed of the permutation; the same seed gives the same split.
        stratify: Apply the fractions per class (keeps the class mix in every set).

    Raises:
        ConfigError: If the fractions are out of range or a set would be empty.
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(data.y == c) for c in range(data.n_classes)]
        if stratify
        else [np.arange(len(data))]
    )
    tr: list[np.ndarray] = []
    va: list[np.ndarray] = []
    te: list[np.ndarray] = []
    for g in groups:
        perm = rng.permutation(g)
        n_val = round(val_fraction * len(g))
        n_test = round(test_fraction * len(g))
        va.append(perm[:n_val])
        te.append(perm[n_val : n_val + n_test])
        tr.append(perm[n_val + n_test :])
    out = Splits.from_indices(data, np.concatenate(tr), np.concatenate(va), np.concatenate(te))
    if len(out.train) == 0 or len(out.val) == 0:
        raise ConfigError(
            f"split_random gives {len(out.train)} training and {len(out.val)} validation events "
            f"from {len(data)}: use more events or other fractions"
        )
    return out


def _folds(value: int | Sequence[int] | None, n_folds: int, name: str) -> set[int]:
    if value is None:
        return set()
    vals = {int(value)} if isinstance(value, (int, np.integer)) else {int(v) for v in value}
    bad = sorted(v for v in vals if not 0 <= v < n_folds)
    if bad:
        raise ConfigError(f"{name} {bad} outside [0, {n_folds})")
    return vals


def event_number_folds(data: EventData, n_folds: int, offset: int = 0) -> np.ndarray:
    """Fold index ``(event_number + offset) % n_folds`` of every event."""
    if int(n_folds) < 2:
        raise ConfigError(f"n_folds must be >= 2, got {n_folds}")
    return np.asarray(np.mod(data.event_number + int(offset), int(n_folds)), dtype=np.int64)


def split_event_number(
    data: EventData,
    *,
    n_folds: int,
    offset: int = 0,
    val_fold: int | Sequence[int] = 0,
    test_fold: int | Sequence[int] | None = None,
) -> Splits:
    """Split by event number: event ``i`` is in fold ``(event_number_i + offset) % n_folds``.

    Events in ``val_fold`` go to validation, those in ``test_fold`` to the test set, the rest to
    training. The assignment depends only on the event number, so an event always lands in the
    same set whatever the file order (the convention used for analysis MVAs).

    Args:
        data: The events.
        n_folds: Number of folds N (>= 2).
        offset: Added to the event number before the modulo.
        val_fold: Fold(s) used for validation.
        test_fold: Fold(s) used for testing (none by default).

    Raises:
        ConfigError: If folds overlap, are out of range, or leave no training events.
    """
    fold = event_number_folds(data, n_folds, offset)
    vf = _folds(val_fold, n_folds, "val_fold")
    tf = _folds(test_fold, n_folds, "test_fold")
    if not vf:
        raise ConfigError("val_fold must name at least one fold")
    if vf & tf:
        raise ConfigError(f"val_fold and test_fold overlap: {sorted(vf & tf)}")
    if len(vf | tf) >= n_folds:
        raise ConfigError(f"val_fold and test_fold use all {n_folds} folds: no training events")
    is_val = np.isin(fold, sorted(vf))
    is_test = np.isin(fold, sorted(tf))
    is_train = ~(is_val | is_test)
    return Splits.from_indices(
        data, np.flatnonzero(is_train), np.flatnonzero(is_val), np.flatnonzero(is_test)
    )


def kfold_splits(
    data: EventData,
    *,
    k: int,
    test: Literal["fixed", "rotating", "none"] = "fixed",
    seed: int | None = 0,
    test_fraction: float = 0.2,
    by: Literal["random", "event_number"] = "random",
    offset: int = 0,
) -> list[Splits]:
    """k-fold splits for cross-validation.

    * ``test="fixed"``: a test set (``test_fraction`` of the events, or with ``by="event_number"``
      fold ``k`` of ``k + 1`` event-number folds) is held out once; the rest is cut into ``k``
      folds and fold ``i`` validates split ``i``.
    * ``test="rotating"``: the events are cut into ``k`` folds (``k >= 3``); split ``i`` tests
      on fold ``i``, validates on fold ``(i + 1) % k`` and trains on the others, so every event
      is tested exactly once.
    * ``test="none"``: ``k`` folds, fold ``i`` validates split ``i``, empty test sets.

    Folds are assigned by a seeded random permutation (stratified by class) or, with
    ``by="event_number"``, by ``(event_number + offset) % n`` (``n = k + 1`` with a fixed test
    set, which is fold ``k``; else ``n = k``).

    Raises:
        ConfigError: For invalid ``k``, ``test`` or ``by``.
    """
    if int(k) < 2:
        raise ConfigError(f"k must be >= 2, got {k}")
    k = int(k)
    if test not in ("fixed", "rotating", "none"):
        raise ConfigError(f"test must be 'fixed', 'rotating' or 'none', got {test!r}")
    if by not in ("random", "event_number"):
        raise ConfigError(f"by must be 'random' or 'event_number', got {by!r}")
    if test == "rotating" and k < 3:
        raise ConfigError("test='rotating' needs k >= 3 (a test, a validation and a training fold)")
    n = len(data)
    all_idx = np.arange(n)
    test_idx = np.empty(0, dtype=np.int64)
    pool = all_idx
    if test == "fixed":
        if by == "event_number":
            fold = event_number_folds(data, k + 1, offset)
            test_idx = np.flatnonzero(fold == k)
            pool = np.flatnonzero(fold != k)
        else:
            if not 0 < test_fraction < 1:
                raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
            first = split_random(data, val_fraction=test_fraction, seed=seed)
            test_idx, pool = first.val_idx, first.train_idx
    if by == "event_number" and test == "fixed":
        fold_of = event_number_folds(data, k + 1, offset)[pool]  # folds 0..k-1, test is fold k
    else:
        fold_of = _assign_folds(data, pool, k, by=by, seed=seed, offset=offset)
    folds = [pool[fold_of == i] for i in range(k)]
    out: list[Splits] = []
    for i in range(k):
        if test == "rotating":
            te, va = folds[i], folds[(i + 1) % k]
            tr = np.concatenate([folds[j] for j in range(k) if j not in (i, (i + 1) % k)])
        else:
            te, va = test_idx, folds[i]
            tr = np.concatenate([folds[j] for j in range(k) if j != i])
        out.append(Splits.from_indices(data, tr, va, te))
    return out


def _assign_folds(
    data: EventData, pool: np.ndarray, k: int, *, by: str, seed: int | None, offset: int
) -> np.ndarray:
    if by == "event_number":
        return np.asarray(np.mod(data.event_number[pool] + int(offset), k), dtype=np.int64)
    from sklearn.model_selection import StratifiedKFold

    # stratified by class: balanced folds, each with the class mix of the pool
    y = data.y[pool]
    fold_of = np.empty(len(pool), dtype=np.int64)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=None if seed is None else seed + 1)
    for i, (_, val) in enumerate(skf.split(np.zeros((len(pool), 1)), y)):
        fold_of[val] = i
    return fold_of
