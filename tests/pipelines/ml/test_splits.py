"""Random, event-number and k-fold splits: disjoint, complete, reproducible."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml import (
    Splits,
    kfold_splits,
    make_hep_dataset,
    split_event_number,
    split_random,
)

DATA = make_hep_dataset(1000, n_noise=1, n_correlated=0, seed=2)


def _assert_partition(s: Splits, n: int, *, with_test: bool = True) -> None:
    sets = [set(s.train_idx.tolist()), set(s.val_idx.tolist()), set(s.test_idx.tolist())]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sets[0] | sets[1] | sets[2] == set(range(n))
    assert len(s.train) == len(s.train_idx) and len(s.val) == len(s.val_idx)
    assert (len(s.test) > 0) == with_test


@pytest.mark.parametrize("offset", [0, 3])
def test_event_number_split_disjoint_complete_and_by_formula(offset: int) -> None:
    s = split_event_number(DATA, n_folds=5, offset=offset, val_fold=0, test_fold=[1, 2])
    _assert_partition(s, len(DATA))
    fold = (DATA.event_number + offset) % 5
    np.testing.assert_array_equal(
        np.sort(s.val.event_number), np.sort(DATA.event_number[fold == 0])
    )
    assert set(((s.test.event_number + offset) % 5).tolist()) == {1, 2}
    assert set(((s.train.event_number + offset) % 5).tolist()) == {3, 4}


def test_event_number_split_ignores_row_order() -> None:
    perm = np.random.default_rng(0).permutation(len(DATA))
    shuffled = DATA.subset(perm)
    a = split_event_number(DATA, n_folds=3, val_fold=1)
    b = split_event_number(shuffled, n_folds=3, val_fold=1)
    assert set(a.val.event_number.tolist()) == set(b.val.event_number.tolist())
    assert set(a.train.event_number.tolist()) == set(b.train.event_number.tolist())
    assert len(a.test) == 0


def test_event_number_split_errors() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        split_event_number(DATA, n_folds=3, val_fold=0, test_fold=0)
    with pytest.raises(ConfigError, match="outside"):
        split_event_number(DATA, n_folds=3, val_fold=3)
    with pytest.raises(ConfigError, match="no training events"):
        split_event_number(DATA, n_folds=2, val_fold=0, test_fold=1)
    with pytest.raises(ConfigError, match="n_folds"):
        split_event_number(DATA, n_folds=1)


def test_random_split_fractions_stratified_reproducible() -> None:
    a = split_random(DATA, val_fraction=0.2, test_fraction=0.3, seed=7)
    b = split_random(DATA, val_fraction=0.2, test_fraction=0.3, seed=7)
    c = split_random(DATA, val_fraction=0.2, test_fraction=0.3, seed=8)
    _assert_partition(a, len(DATA))
    np.testing.assert_array_equal(a.val_idx, b.val_idx)
    np.testing.assert_array_equal(a.test_idx, b.test_idx)
    assert not np.array_equal(a.val_idx, c.val_idx)
    assert abs(len(a.val) - 200) <= 2 and abs(len(a.test) - 300) <= 2
    frac = DATA.y.mean()
    for part in (a.train, a.val, a.test):
        assert abs(part.y.mean() - frac) < 0.01  # stratified


def test_random_split_errors() -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        split_random(DATA, val_fraction=0.0)
    with pytest.raises(ConfigError, match="< 1"):
        split_random(DATA, val_fraction=0.6, test_fraction=0.5)


def test_random_split_reproducible_in_a_subprocess() -> None:
    code = (
        "from sigtune.pipelines.ml import make_hep_dataset, split_random;"
        "d = make_hep_dataset(1000, n_noise=1, n_correlated=0, seed=2);"
        "print(split_random(d, val_fraction=0.2, test_fraction=0.3, seed=7).val_idx[:20].tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = split_random(DATA, val_fraction=0.2, test_fraction=0.3, seed=7).val_idx[:20].tolist()
    assert out.stdout.strip() == str(here)


def test_kfold_fixed_test_set() -> None:
    splits = kfold_splits(DATA, k=4, test="fixed", test_fraction=0.2, seed=1)
    assert len(splits) == 4
    test0 = splits[0].test_idx
    assert abs(len(test0) - 200) <= 2
    vals = []
    for s in splits:
        _assert_partition(s, len(DATA))
        np.testing.assert_array_equal(s.test_idx, test0)
        vals.append(s.val_idx)
    all_val = np.concatenate(vals)
    assert len(all_val) == len(set(all_val.tolist())) == len(DATA) - len(test0)
    again = kfold_splits(DATA, k=4, test="fixed", test_fraction=0.2, seed=1)
    for s, t in zip(splits, again, strict=True):
        np.testing.assert_array_equal(s.val_idx, t.val_idx)


def test_kfold_rotating_tests_every_event_once() -> None:
    splits = kfold_splits(DATA, k=5, test="rotating", seed=3)
    tested = np.concatenate([s.test_idx for s in splits])
    assert sorted(tested.tolist()) == list(range(len(DATA)))
    for i, s in enumerate(splits):
        _assert_partition(s, len(DATA))
        np.testing.assert_array_equal(s.val_idx, splits[(i + 1) % 5].test_idx)
    with pytest.raises(ConfigError, match="k >= 3"):
        kfold_splits(DATA, k=2, test="rotating")


def test_kfold_by_event_number() -> None:
    splits = kfold_splits(DATA, k=3, test="fixed", by="event_number")
    assert set((splits[0].test.event_number % 4).tolist()) == {3}
    for i, s in enumerate(splits):
        _assert_partition(s, len(DATA))
        assert set((s.val.event_number % 4).tolist()) == {i}
    none = kfold_splits(DATA, k=3, test="none", seed=0)
    for s in none:
        _assert_partition(s, len(DATA), with_test=False)
    with pytest.raises(ConfigError, match="test must be"):
        kfold_splits(DATA, k=3, test="bogus")  # type: ignore[arg-type]
