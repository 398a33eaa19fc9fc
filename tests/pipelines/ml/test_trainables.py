"""make_trainable: torch, Lightning, scikit-learn, LightGBM, XGBoost (tiny training + a small
Optuna study with per-epoch reporting each), Keras error path, save/load."""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml import (
    History,
    Trainable,
    compute_metric,
    load_trainable,
    make_hep_dataset,
    make_trainable,
    optuna_reporter,
    split_random,
)

DATA = make_hep_dataset(800, n_informative=3, n_correlated=0, n_noise=2, seed=21)
SPLITS = split_random(DATA, val_fraction=0.3, seed=2)

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _Crash(Exception):
    """Simulates a process dying in the middle of a training."""


def _study_objective(kind: str, options: dict[str, Any], suggest: Any, log: list[History]) -> Any:
    def objective(trial: optuna.Trial) -> float:
        t = make_trainable(kind, **options)
        h = t.fit(
            SPLITS.train, SPLITS.val, suggest(trial), report=optuna_reporter(trial, "val_loss")
        )
        log.append(h)
        if h.pruned:
            raise optuna.TrialPruned()
        return h.best("val_loss")

    return objective


def _run_study(
    kind: str, options: dict[str, Any], suggest: Any, n_trials: int, pruner: Any = None
) -> tuple[optuna.Study, list[History]]:
    log: list[History] = []
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruner or optuna.pruners.NopPruner()
    )
    study.optimize(_study_objective(kind, options, suggest, log), n_trials=n_trials)
    return study, log


def _check_study(study: optuna.Study, log: list[History]) -> None:
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == len(log)
    for trial, h in zip(trials, log, strict=True):
        assert trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        # one intermediate value per epoch, equal to the recorded validation loss
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(1, h.n_epochs + 1))
        np.testing.assert_allclose(
            [trial.intermediate_values[s] for s in steps], h.metrics["val_loss"]
        )
    assert np.isfinite(study.best_value)


def test_registry_errors() -> None:
    with pytest.raises(ConfigError, match="unknown trainable kind 'svm'"):
        make_trainable("svm")
    with pytest.raises(ConfigError, match="needs estimator"):
        make_trainable("sklearn")
    with pytest.raises(ConfigError, match=r"cannot import module 'sklearn\.nope'"):
        make_trainable("sklearn", estimator="sklearn.nope.Thing")
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        make_trainable("sklearn", estimator="sklearn.ensemble:Nope")
    with pytest.raises(ConfigError, match="invalid option"):
        make_trainable("lightgbm", bogus_option=1)
    with pytest.raises(ConfigError, match="needs module="):
        make_trainable("torch")


def test_keras_missing_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keras", None)  # import keras -> ImportError
    t = make_trainable("keras", builder=lambda n_in, n_out, p: None)
    with pytest.raises(ConfigError, match="needs Keras 3 and a backend"):
        t.fit(SPLITS.train, SPLITS.val, {})
    with pytest.raises(ConfigError, match="needs a model factory"):
        make_trainable("keras")


# ---------------------------------------------------------------------- scikit-learn
def test_sklearn_estimator_by_import_path(tmp_path: Path) -> None:
    t = make_trainable("sklearn", estimator="sklearn.ensemble.HistGradientBoostingClassifier")
    assert isinstance(t, Trainable)
    calls: list[int] = []
    h = t.fit(
        SPLITS.train, SPLITS.val, {"max_iter": 30}, report=lambda e, m: calls.append(e) or False
    )
    assert calls == [1] and h.n_epochs == 1 and h.best_epoch == 1
    assert h.metrics["val_auc"][0] > 0.8
    p = t.predict(SPLITS.val.X)
    assert compute_metric("auc", SPLITS.val.y, p) == pytest.approx(h.metrics["val_auc"][0])
    t.save(tmp_path / "sk")
    np.testing.assert_array_equal(load_trainable(tmp_path / "sk").predict(SPLITS.val.X), p)
    with pytest.raises(ConfigError, match="invalid parameter"):
        t.fit(SPLITS.train, SPLITS.val, {"max_iterz": 3})
    with pytest.raises(ConfigError, match="no predict_proba"):
        make_trainable("sklearn", estimator="sklearn.svm.LinearSVC").fit(
            SPLITS.train, SPLITS.val, {}
        )


def test_sklearn_small_study() -> None:
    study, log = _run_study(
        "sklearn",
        {"estimator": "sklearn.linear_model.LogisticRegression"},
        lambda tr: {"C": tr.suggest_float("C", 1e-3, 10.0, log=True)},
        n_trials=3,
    )
    _check_study(study, log)


# ---------------------------------------------------------------------- boosted trees
@pytest.mark.parametrize("kind", ["lightgbm", "xgboost"])
def test_boosting_reports_every_iteration_and_prunes(kind: str, tmp_path: Path) -> None:
    params = {"num_boost_round": 15, "learning_rate": 0.2, "max_depth": 3}
    t = make_trainable(kind)
    seen: list[int] = []
    h = t.fit(SPLITS.train, SPLITS.val, params, report=lambda e, m: seen.append(e) or False)
    assert seen == list(range(1, 16)) and h.n_epochs == 15
    assert {"loss", "val_loss", "auc", "val_auc"} <= set(h.metrics)
    assert h.metrics["val_loss"][-1] < h.metrics["val_loss"][0]
    p = t.predict(SPLITS.val.X)
    assert compute_metric("auc", SPLITS.val.y, p) > 0.8
    # the stored loss is the weighted log-loss of the best iteration's predictions
    from sigtune.pipelines.ml import normalize_class_weights

    vw = normalize_class_weights(SPLITS.val)
    assert compute_metric("weighted_loss", vw.y, p, vw.w) == pytest.approx(
        h.best("val_loss"), rel=1e-4
    )
    t.save(tmp_path / kind)
    np.testing.assert_allclose(load_trainable(tmp_path / kind).predict(SPLITS.val.X), p, rtol=1e-6)
    pruned = make_trainable(kind).fit(SPLITS.train, SPLITS.val, params, report=lambda e, m: e == 4)
    assert pruned.pruned and pruned.n_epochs == 4
    stopped = make_trainable(kind, patience=2, monitor="val_auc").fit(
        SPLITS.train, SPLITS.val, {**params, "num_boost_round": 200, "learning_rate": 0.8}
    )
    assert stopped.stop_reason == "early_stopping" and stopped.n_epochs < 200


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost"])
def test_boosting_small_study_with_pruner(kind: str) -> None:
    study, log = _run_study(
        kind,
        {},
        lambda tr: {
            "num_boost_round": 12,
            "learning_rate": tr.suggest_float("learning_rate", 0.01, 0.5, log=True),
        },
        n_trials=4,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=2),
    )
    _check_study(study, log)


# ---------------------------------------------------------------------- torch / lightning
def _torch_factory(n_in: int, n_out: int, params: Mapping[str, Any]) -> Any:
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(n_in, int(params.get("hidden", 8))),
        torch.nn.Tanh(),
        torch.nn.Linear(int(params.get("hidden", 8)), n_out),
    )


def test_torch_module_factory(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    t = make_trainable("torch", module=_torch_factory, metrics=["auc"])
    h = t.fit(SPLITS.train, SPLITS.val, {"hidden": 6, "max_epochs": 4, "learning_rate": 0.02})
    assert h.n_epochs == 4 and h.metrics["val_auc"][-1] > 0.75
    t.save(tmp_path / "m")
    back = load_trainable(tmp_path / "m")  # factory importable from this test module
    np.testing.assert_allclose(back.predict(SPLITS.val.X), t.predict(SPLITS.val.X), rtol=1e-6)
    with pytest.raises(ConfigError, match=r"must return a torch.nn.Module"):
        make_trainable("torch", module=lambda a, b, c: "nope").fit(SPLITS.train, SPLITS.val, {})


def _lightning_factory(n_in: int, n_out: int, params: Mapping[str, Any]) -> Any:
    import lightning as L
    import torch
    import torch.nn.functional as F

    class Net(L.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = _torch_factory(n_in, n_out, params)
            self.lr = float(params.get("learning_rate", 0.02))

        def forward(self, x: Any) -> Any:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y, w = batch
            logits = self(x).reshape(-1)
            return (
                F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none") * w
            ).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    return Net()


@pytest.mark.slow
def test_lightning_training_resume_and_study(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    seen: list[int] = []
    t = make_trainable("lightning", module=_lightning_factory, metrics=["auc"])
    h = t.fit(
        SPLITS.train, SPLITS.val, {"max_epochs": 3}, report=lambda e, m: seen.append(e) or False
    )
    assert seen == [1, 2, 3] and h.n_epochs == 3
    assert h.metrics["val_auc"][-1] > 0.75
    p = t.predict(SPLITS.val.X)
    assert compute_metric("auc", SPLITS.val.y, p) == pytest.approx(h.best("val_auc"), abs=1e-6)
    t.save(tmp_path / "model")
    np.testing.assert_allclose(
        load_trainable(tmp_path / "model").predict(SPLITS.val.X), p, rtol=1e-6
    )
    pruned = make_trainable("lightning", module=_lightning_factory).fit(
        SPLITS.train, SPLITS.val, {"max_epochs": 5}, report=lambda e, m: e == 2
    )
    assert pruned.pruned and pruned.n_epochs == 2
    # checkpointing: an interrupted run resumes after the last saved epoch, with the same
    # history as an uninterrupted one; a finished run is not retrained
    ck = tmp_path / "ck"
    params = {"max_epochs": 3}
    full = make_trainable("lightning", module=_lightning_factory).fit(
        SPLITS.train, SPLITS.val, params
    )

    def crash(epoch: int, metrics: Mapping[str, float]) -> bool:
        if epoch == 2:
            raise _Crash  # (Lightning turns KeyboardInterrupt into a graceful stop)
        return False

    with pytest.raises(_Crash):
        make_trainable("lightning", module=_lightning_factory).fit(
            SPLITS.train, SPLITS.val, params, report=crash, checkpoint_dir=ck
        )
    assert (ck / "last.ckpt").exists()
    resumed_epochs: list[int] = []
    resumed = make_trainable("lightning", module=_lightning_factory).fit(
        SPLITS.train,
        SPLITS.val,
        params,
        checkpoint_dir=ck,
        report=lambda e, m: resumed_epochs.append(e) or False,
    )
    assert resumed_epochs == [2, 3]
    assert resumed.metrics == full.metrics
    again: list[int] = []
    second = make_trainable("lightning", module=_lightning_factory).fit(
        SPLITS.train,
        SPLITS.val,
        params,
        checkpoint_dir=ck,
        report=lambda e, m: again.append(e) or False,
    )
    assert again == [] and second.metrics == full.metrics
    study, log = _run_study(
        "lightning",
        {"module": _lightning_factory},
        lambda tr: {
            "max_epochs": 2,
            "learning_rate": tr.suggest_float("learning_rate", 1e-3, 0.1, log=True),
        },
        n_trials=2,
    )
    _check_study(study, log)


def test_mlp_pruned_study_spends_fewer_epochs() -> None:
    """A pruned MLP search trains fewer epochs than the same search without pruning."""
    pytest.importorskip("torch")

    def suggest(tr: optuna.Trial) -> dict[str, Any]:
        return {
            "num_layers": 1,
            "units": 8,
            "max_epochs": 6,
            "patience": None,
            "learning_rate": tr.suggest_float("learning_rate", 1e-4, 0.05, log=True),
        }

    full, log_full = _run_study("mlp", {"metrics": []}, suggest, n_trials=6)
    pruned, log_pruned = _run_study(
        "mlp",
        {"metrics": []},
        suggest,
        n_trials=6,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    _check_study(pruned, log_pruned)
    epochs_full = sum(h.n_epochs for h in log_full)
    epochs_pruned = sum(h.n_epochs for h in log_pruned)
    assert epochs_full == 36
    assert any(h.pruned for h in log_pruned)
    assert epochs_pruned < epochs_full
    assert pruned.best_value == pytest.approx(full.best_value, rel=0.05)


# ---------------------------------------------------------------------- Keras loop (fake keras)
class _FakeKerasModel:
    """Just enough of keras.Model: logistic regression trained by full-batch gradient steps."""

    def __init__(self, n_in: int, n_out: int) -> None:
        self.W = np.zeros((n_in, n_out))
        self.b = np.zeros(n_out)
        self.optimizer: Any = None
        self.compiled = False
        self.fit_calls: list[tuple[int, int]] = []

    def compile(self, optimizer: Any, loss: str) -> None:
        self.optimizer, self.loss, self.compiled = optimizer, loss, True

    def predict(self, X: np.ndarray, verbose: int = 0) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(X @ self.W + self.b)))

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        sample_weight: np.ndarray,
        epochs: int,
        initial_epoch: int,
        **_: Any,
    ) -> None:
        self.fit_calls.append((initial_epoch, epochs))
        for _ in range(epochs - initial_epoch):
            err = (self.predict(X)[:, 0] - y) * sample_weight / len(y)
            self.W -= self.optimizer.learning_rate * (X.T @ err)[:, None]
            self.b -= self.optimizer.learning_rate * err.sum()

    def get_weights(self) -> list[np.ndarray]:
        return [self.W.copy(), self.b.copy()]

    def set_weights(self, ws: list[np.ndarray]) -> None:
        self.W, self.b = ws[0].copy(), ws[1].copy()

    def save_weights(self, path: str) -> None:
        Path(path).write_bytes(pickle.dumps(self.get_weights()))

    def load_weights(self, path: str) -> None:
        self.set_weights(pickle.loads(Path(path).read_bytes()))

    def save(self, path: str) -> None:
        Path(path).write_bytes(pickle.dumps(self))


def _fake_keras() -> Any:
    mod = types.ModuleType("keras")
    mod.__version__ = "3.6.0"  # type: ignore[attr-defined]
    mod.utils = types.SimpleNamespace(set_random_seed=lambda seed: None)  # type: ignore[attr-defined]
    mod.optimizers = types.SimpleNamespace(Adam=lambda **kw: types.SimpleNamespace(**kw))  # type: ignore[attr-defined]
    mod.models = types.SimpleNamespace(load_model=lambda p: pickle.loads(Path(p).read_bytes()))  # type: ignore[attr-defined]
    return mod


def test_keras_loop_with_a_stand_in_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The epoch loop, reporting, pruning, checkpoints and save/load of the Keras trainable,
    run against a minimal stand-in for the keras module (exact checkpoint-resume checks that
    do not depend on a Keras backend; test_keras_backend.py runs real Keras 3)."""
    monkeypatch.setitem(sys.modules, "keras", _fake_keras())
    built: list[_FakeKerasModel] = []

    def builder(n_in: int, n_out: int, params: Mapping[str, Any]) -> _FakeKerasModel:
        built.append(_FakeKerasModel(n_in, n_out))
        return built[-1]

    params = {"max_epochs": 5, "learning_rate": 0.5, "one_minus_Adam_beta_2": 0.01}
    seen: list[int] = []
    t = make_trainable("keras", builder=builder, metrics=["auc"])
    h = t.fit(SPLITS.train, SPLITS.val, params, report=lambda e, m: seen.append(e) or False)
    model = built[-1]
    assert model.loss == "binary_crossentropy" and model.optimizer.beta_2 == pytest.approx(0.99)
    assert model.fit_calls == [(e - 1, e) for e in range(1, 6)]
    assert seen == [1, 2, 3, 4, 5] and h.n_epochs == 5
    assert h.metrics["val_loss"][-1] < h.metrics["val_loss"][0]
    assert h.metrics["val_auc"][-1] > 0.75
    p = t.predict(SPLITS.val.X)
    assert p.shape == (len(SPLITS.val),)
    assert compute_metric("auc", SPLITS.val.y, p) == pytest.approx(h.best("val_auc"))
    pruned = make_trainable("keras", builder=builder).fit(
        SPLITS.train, SPLITS.val, params, report=lambda e, m: e == 2
    )
    assert pruned.pruned and pruned.n_epochs == 2

    def crash(epoch: int, metrics: Mapping[str, float]) -> bool:
        if epoch == 4:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        make_trainable("keras", builder=builder, metrics=["auc"]).fit(
            SPLITS.train, SPLITS.val, params, report=crash, checkpoint_dir=tmp_path / "ck"
        )
    resumed = make_trainable("keras", builder=builder, metrics=["auc"]).fit(
        SPLITS.train, SPLITS.val, params, checkpoint_dir=tmp_path / "ck"
    )
    assert built[-1].fit_calls == [(3, 4), (4, 5)]
    np.testing.assert_allclose(resumed.metrics["val_loss"], h.metrics["val_loss"], rtol=1e-12)
    t.save(tmp_path / "saved")
    back = load_trainable(tmp_path / "saved")
    np.testing.assert_allclose(back.predict(SPLITS.val.X), p)


class _MeanModel:
    """A user trainable: predicts the training signal fraction (enough to test the registry)."""

    kind = "mean_model"

    def __init__(self, **options: object) -> None:
        self.p = 0.0

    def fit(self, train, val, params, *, report=None, checkpoint_dir=None):  # type: ignore[no-untyped-def]
        self.p = float(np.mean(train.y))

    def predict(self, X):  # type: ignore[no-untyped-def]
        return np.full(len(X), self.p)

    def save(self, path) -> None:  # type: ignore[no-untyped-def]
        import json

        path.mkdir(parents=True, exist_ok=True)
        (path / "trainable.json").write_text(json.dumps({"kind": self.kind, "p": self.p}))

    @classmethod
    def load(cls, path, meta):  # type: ignore[no-untyped-def]
        obj = cls()
        obj.p = float(meta["p"])
        return obj


def test_user_trainable_registers_and_loads(tmp_path: Path) -> None:
    from sigtune.pipelines.ml import TRAINABLES, register_trainable

    register_trainable("mean_model", _MeanModel, overwrite=True)
    try:
        assert "mean_model" in TRAINABLES and "mlp" in TRAINABLES  # built-ins appear too
        t = make_trainable("mean_model")
        t.fit(SPLITS.train, SPLITS.val, {})
        t.save(tmp_path / "m")
        back = load_trainable(tmp_path / "m")
        assert isinstance(back, _MeanModel)
        np.testing.assert_array_equal(back.predict(SPLITS.val.X), t.predict(SPLITS.val.X))
        with pytest.raises(ConfigError, match="already registered"):
            register_trainable("mean_model", _MeanModel)
        with pytest.raises(ConfigError, match="no `load` classmethod"):
            register_trainable("no_load", lambda **o: _MeanModel(), overwrite=True)
    finally:
        del TRAINABLES["mean_model"]
    with pytest.raises(ConfigError, match="unknown trainable kind"):
        load_trainable(tmp_path / "m")
