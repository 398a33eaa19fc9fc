"""Cross-validation: folds, aggregation against numpy/scipy, saved models, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import median_abs_deviation

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._cv import TrainableSpec, aggregate, as_factory, cross_validate
from sigtune.pipelines.ml._generate import make_hep_dataset
from sigtune.pipelines.ml._trainables import load_trainable

LOGREG = {
    "kind": "sklearn",
    "estimator": "sklearn.linear_model.LogisticRegression",
    "metrics": ["auc"],
}


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return make_hep_dataset(1500, n_informative=3, n_correlated=1, n_noise=2, seed=4)


def test_aggregate_matches_numpy_and_scipy() -> None:
    values = [0.31, 0.29, 0.35, 0.30, 0.52]
    mean, std = aggregate(values, "mean")
    assert mean == pytest.approx(np.mean(values))
    assert std == pytest.approx(np.std(values, ddof=1))
    med, mad = aggregate(values, "median")
    assert med == pytest.approx(0.31)
    assert mad == pytest.approx(median_abs_deviation(values, scale=1.0))
    assert aggregate([0.4], "mean") == (0.4, 0.0)
    with pytest.raises(ConfigError, match="aggregate"):
        aggregate(values, "mode")  # type: ignore[arg-type]


def test_cross_validate_folds_metrics_and_files(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = cross_validate(
        data,
        {"C": 1.0},
        trainable=LOGREG,
        k=3,
        test="fixed",
        seed=1,
        out_dir=tmp_path / "cv",
        metrics=("balanced_loss", "weighted_loss", "auc"),
    )
    assert len(res.folds) == 3
    # validation folds are disjoint, together with the fixed test set they cover every event once
    val = np.concatenate([f.split.val_idx for f in res.folds])
    test = res.folds[0].split.test_idx
    assert len(np.unique(val)) == len(val)
    assert sorted(np.concatenate([val, test]).tolist()) == list(range(len(data)))
    for f in res.folds:
        np.testing.assert_array_equal(f.split.test_idx, test)
        # val_balanced_loss is the trainable's own val_loss (same class-normalised weights);
        # weighted_loss uses the physics weights, as in evaluation/ (one name, one number)
        assert f.metrics["val_balanced_loss"] == pytest.approx(f.history["val_loss"][0], rel=1e-9)
        w = f.split.val.w
        p = f.model.predict(f.split.val.X)
        y = f.split.val.y
        ref = -np.sum(w * np.log(np.where(y == 1, p, 1 - p))) / w.sum()
        assert f.metrics["val_weighted_loss"] == pytest.approx(ref, rel=1e-6)
        assert 0.6 < f.metrics["test_auc"] <= 1.0
    for name in ("val_weighted_loss", "test_auc"):
        vals = [f.metrics[name] for f in res.folds]
        assert res.center[name] == pytest.approx(np.mean(vals))
        assert res.spread[name] == pytest.approx(np.std(vals, ddof=1))
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert summary["center"]["test_auc"] == pytest.approx(res.center["test_auc"])
    # each fold: its model with config and scaling, and fold.json with the split recipe
    for f in res.folds:
        assert f.path is not None
        meta = json.loads((f.path / "model" / "trainable.json").read_text())
        assert meta["scaler"]["mean"] is not None and meta["params"]["C"] == 1.0
        fold = json.loads((f.path / "fold.json").read_text())
        assert fold["split"]["method"] == "kfold" and fold["split"]["fold"] == f.fold
        assert {"k", "seed", "test_fraction", "by", "event_numbers"} <= set(fold["split"])
        assert "val" not in fold["split"]  # no index lists: the folds are re-derived
        assert fold["training"] == "early_stopping"
        loaded = load_trainable(f.path / "model")
        np.testing.assert_allclose(loaded.predict(data.X[:50]), f.model.predict(data.X[:50]))


def test_cross_validate_resumes_from_saved_folds(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = cross_validate(data, {"C": 0.5}, trainable=LOGREG, k=3, how="median", out_dir=tmp_path)
    calls = []

    def factory(seed: int | None = None):  # type: ignore[no-untyped-def]
        calls.append(seed)
        return as_factory(LOGREG)(seed=seed)

    # remove one fold: only that one is retrained
    for p in (tmp_path / "fold_1").rglob("*"):
        if p.is_file():
            p.unlink()
    again = cross_validate(data, {"C": 0.5}, trainable=factory, k=3, how="median", out_dir=tmp_path)
    assert calls == [1]
    assert again.center == pytest.approx(first.center)
    assert again.aggregate == "median"
    vals = [f.metrics["test_auc"] for f in again.folds]
    assert again.spread["test_auc"] == pytest.approx(median_abs_deviation(vals, scale=1.0))
    # other hyperparameters in the same folder: nothing stale is reused
    calls.clear()
    cross_validate(data, {"C": 2.0}, trainable=factory, k=3, out_dir=tmp_path)
    assert calls == [0, 1, 2]


def test_rotating_test_set_covers_every_event(data) -> None:  # type: ignore[no-untyped-def]
    spec = TrainableSpec("sklearn", {k: v for k, v in LOGREG.items() if k != "kind"})
    res = cross_validate(data, {}, trainable=spec, k=3, test="rotating")
    tested = np.concatenate([f.split.test_idx for f in res.folds])
    assert sorted(tested.tolist()) == list(range(len(data)))


def test_bad_trainable_and_aggregate(data) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="kind"):
        cross_validate(data, {}, trainable={"estimator": "x"}, k=2)
    with pytest.raises(ConfigError, match="aggregate"):
        cross_validate(data, {}, trainable=LOGREG, k=2, how="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="trainable"):
        as_factory(42)


def test_fixed_epochs_train_exactly_that_many_epochs(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """CV trains the epochs trial selection chose (no early stopping) and records it."""
    spec = {"kind": "mlp", "metrics": [], "patience": 1, "batch_size": 256}
    res = cross_validate(
        data, {"num_layers": 1, "units": 4}, trainable=spec, k=2, epochs=3, out_dir=tmp_path
    )
    assert res.training == "fixed_epochs:3"
    for f in res.folds:
        assert len(f.history["val_loss"]) == 3 and f.metrics["epochs"] == 3
        assert json.loads((f.path / "fold.json").read_text())["training"] == "fixed_epochs:3"
    # early stopping instead: the saved folds are not reused
    calls = []

    def factory(seed: int | None = None):  # type: ignore[no-untyped-def]
        calls.append(seed)
        return as_factory(spec)(seed=seed)

    cross_validate(data, {"num_layers": 1, "units": 4}, trainable=factory, k=2, out_dir=tmp_path)
    assert calls == [0, 1]
