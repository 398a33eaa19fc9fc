"""Evaluation: weighted ROC against scikit-learn, plots and metrics table on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._data import EventData
from sigtune.pipelines.ml._evaluate import evaluate, roc_curve


def _events(n: int, n_classes: int, seed: int) -> tuple[EventData, np.ndarray]:
    """Events with two inputs and a 'model output' that separates the classes imperfectly."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.normal(size=(n, 2)) + y[:, None] * 0.8
    w = rng.exponential(1.0, n)
    w[rng.random(n) < 0.1] *= -1.0  # some negative weights, as from NLO generators
    data = EventData(X, y, w, np.arange(n), ("a", "b"), n_classes)
    return data, X


def _binary_model(X: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(X[:, 0] + X[:, 1] - 0.8)))


def _softmax_model(X: np.ndarray) -> np.ndarray:
    logits = np.stack([-(X[:, 0] + X[:, 1]), 0.0 * X[:, 0], X[:, 0] + X[:, 1] - 1.6], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_roc_matches_sklearn_and_ignores_negative_weights() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    pos = rng.random(n) < 0.4
    scores = np.round(rng.normal(size=n) + pos, 2)  # rounding creates ties
    w = rng.exponential(1.0, n)
    w[rng.random(n) < 0.15] *= -1.0
    roc = roc_curve(scores, pos, w)
    keep = w >= 0
    fpr, tpr, _ = sk_roc_curve(
        pos[keep], scores[keep], sample_weight=w[keep], drop_intermediate=False
    )
    np.testing.assert_allclose(roc.fpr, fpr, atol=1e-12)
    np.testing.assert_allclose(roc.tpr, tpr, atol=1e-12)
    assert roc.auc == pytest.approx(roc_auc_score(pos[keep], scores[keep], sample_weight=w[keep]))
    # including negative weights would change the answer: the filter matters
    assert roc.auc != pytest.approx(roc_auc_score(pos, scores, sample_weight=np.abs(w)), abs=1e-6)


def test_roc_rejects_one_class() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_curve(np.array([0.1, 0.2]), np.array([True, True]))


def test_evaluate_binary_writes_files(tmp_path: Path) -> None:
    splits = {name: _events(600, 2, seed)[0] for seed, name in enumerate(("train", "val", "test"))}
    res = evaluate(_binary_model, splits, tmp_path / "eval", metrics=("auc", "accuracy"))
    names = {p.name for p in res.files}
    assert {"roc.png", "outputs_stacked.png", "outputs_train_val_test.png", "metrics.csv"} <= names
    for p in res.files:
        assert p.is_file() and p.stat().st_size > 0
    assert set(res.metrics) == {"train", "val", "test"}
    assert set(res.metrics["test"]) == {"auc", "accuracy"}
    test = splits["test"]
    keep = test.w >= 0
    p = _binary_model(test.X)
    oracle = roc_auc_score(test.y[keep], p[keep], sample_weight=test.w[keep])
    assert res.roc["signal"].auc == pytest.approx(oracle)
    table = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert table["test"]["auc"] == pytest.approx(res.metrics["test"]["auc"])
    assert 0.6 < res.metrics["test"]["auc"] < 1.0


def test_evaluate_multiclass_one_vs_rest(tmp_path: Path) -> None:
    splits = {name: _events(900, 3, seed)[0] for seed, name in enumerate(("train", "val", "test"))}
    res = evaluate(
        _softmax_model, splits, tmp_path, metrics=("accuracy",), class_names=["b", "x", "s"]
    )
    assert set(res.roc) == {"b", "x", "s"}
    test = splits["test"]
    keep = test.w >= 0
    p = _softmax_model(test.X)
    for c, name in enumerate(["b", "x", "s"]):
        oracle = roc_auc_score(test.y[keep] == c, p[keep, c], sample_weight=test.w[keep])
        assert res.roc[name].auc == pytest.approx(oracle)


def test_evaluate_transform_is_applied(tmp_path: Path) -> None:
    splits = {name: _events(400, 2, seed)[0] for seed, name in enumerate(("train", "val", "test"))}
    seen: list[float] = []

    def model(X: np.ndarray) -> np.ndarray:
        seen.append(float(X[0, 0]))
        return _binary_model(X)

    evaluate(model, splits, tmp_path, metrics=("auc",), transform=lambda X: X + 100.0)
    assert seen and all(v > 50 for v in seen)


def test_evaluate_needs_test_split(tmp_path: Path) -> None:
    data, _ = _events(100, 2, 0)
    with pytest.raises(ConfigError, match="test"):
        evaluate(_binary_model, {"train": data}, tmp_path)
    with pytest.raises(ConfigError, match="class_names"):
        evaluate(_binary_model, {"test": data}, tmp_path, class_names=["only"])
