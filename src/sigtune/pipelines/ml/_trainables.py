"""Trainables: one interface over the built-in MLP, user PyTorch / Lightning / Keras models,
scikit-learn estimators, LightGBM and XGBoost.

Every trainable has ``fit(train, val, params, *, report=None, checkpoint_dir=None) -> History``,
``predict(X) -> probabilities`` and ``save(path)`` (a directory with ``trainable.json``);
:func:`load_trainable` reads it back (the registry, :mod:`._registry`, dispatches on the saved
``kind`` to the class's ``load`` classmethod). ``report(epoch, metrics)`` is called after every epoch
(boosting iteration for LightGBM / XGBoost) and returns an :class:`EpochAction`: continue, stop
(the history is marked pruned; a bare True still means stop), and -- for the torch trainables
(``mlp``, ``torch``), which Population Based Training uses -- checkpoint now, or load a checkpoint
and continue with new hyperparameters. :func:`optuna_reporter` builds a stop/continue reporter
from an Optuna trial.

Heavy libraries are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._data import EventData
from sigtune.pipelines.ml._history import (
    EarlyStopping,
    EpochAction,
    History,
    Reporter,
    as_conditions,
    import_object,
    report_stops,
)
from sigtune.pipelines.ml._metrics import MetricLike, Monitor, compute_metric, get_metric
from sigtune.pipelines.ml._registry import (
    TRAINABLES,
    load_trainable,
    make_trainable,
    register_trainable,
)
from sigtune.pipelines.ml._scaling import InputScaler
from sigtune.pipelines.ml._weights import normalize_class_weights, training_weights

__all__ = [
    "TRAINABLES",
    "Trainable",
    "load_trainable",
    "make_trainable",
    "optuna_reporter",
    "register_trainable",
]

log = logging.getLogger(__name__)


@runtime_checkable
class Trainable(Protocol):
    """What every trainable provides (see the module docstring)."""

    def fit(
        self,
        train: EventData,
        val: EventData,
        params: Mapping[str, Any],
        *,
        report: Reporter | None = None,
        checkpoint_dir: Path | None = None,
    ) -> History:
        """Train; returns the per-epoch history."""
        ...

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Signal probability ``(n,)`` (binary) or class probabilities ``(n, k)``."""
        ...

    def save(self, path: Path) -> None:
        """Save model, configuration and input scaling into directory ``path``."""
        ...


def optuna_reporter(trial: Any, metric: str = "val_loss") -> Reporter:
    """A ``report`` callback for :meth:`Trainable.fit` that feeds an Optuna pruner.

    Calls ``trial.report(metrics[metric], epoch)`` and returns :meth:`EpochAction.stop` when
    ``trial.should_prune()`` (else continue); the objective then raises ``optuna.TrialPruned``
    when ``history.pruned`` is True.
    """

    def report(epoch: int, metrics: Mapping[str, float]) -> EpochAction:
        if metric not in metrics:
            raise ConfigError(f"reported metric {metric!r} not recorded; have {sorted(metrics)}")
        trial.report(float(metrics[metric]), int(epoch))
        return EpochAction.stop() if trial.should_prune() else EpochAction.proceed()

    return report


# ---------------------------------------------------------------------- common base
class _Base:
    """Shared option handling: scaling, weights, metrics, monitor, overtraining conditions."""

    kind = "base"

    def __init__(
        self,
        *,
        monitor: Any = "val_loss",
        metrics: Sequence[MetricLike] = ("auc",),
        overtraining_conditions: Sequence[Any] = (),
        scaling: Mapping[str, Mapping[str, Any]] | InputScaler | None = None,
        normalize_weights: bool = True,
        class_weights: Sequence[float] | Mapping[int, float] | None = None,
        max_event_weight: float | None = None,
        n_threads: int = 1,
        seed: int | None = 0,
        patience: int | None = None,
        overtraining_patience: int | None = None,
    ) -> None:
        self.monitor = Monitor.parse(monitor)
        self.metrics = [get_metric(m) for m in metrics]
        self.conditions = as_conditions(overtraining_conditions)
        self.scaling = scaling
        self.normalize_weights = bool(normalize_weights)
        self.class_weights = class_weights
        self.max_event_weight = max_event_weight
        if int(n_threads) < 1:
            raise ConfigError(f"n_threads must be >= 1, got {n_threads}")
        self.n_threads = int(n_threads)
        self.seed = seed
        self.patience = patience
        self.overtraining_patience = overtraining_patience
        self.scaler_: InputScaler | None = None
        self.features_: tuple[str, ...] | None = None
        self.n_classes_: int | None = None
        self.history_: History | None = None
        self.params_: dict[str, Any] = {}

    def _prepare(
        self, train: EventData, val: EventData
    ) -> tuple[InputScaler, EventData, EventData]:
        if train.features != val.features or train.n_classes != val.n_classes:
            raise ConfigError("train and val need the same features and number of classes")
        if len(train) == 0 or len(val) == 0:
            raise ConfigError(f"empty split: {len(train)} training, {len(val)} validation events")
        if isinstance(self.scaling, InputScaler):
            scaler = InputScaler.from_dict({**self.scaling.to_dict(), "mean": None, "std": None})
        else:
            scaler = InputScaler(self.scaling)
        scaler.fit(train)
        tw = training_weights(
            train,
            normalize=self.normalize_weights,
            class_weights=self.class_weights,
            max_event_weight=self.max_event_weight,
        )
        vw = (
            normalize_class_weights(val, class_weights=self.class_weights)
            if self.normalize_weights
            else val
        )
        self.scaler_, self.features_, self.n_classes_ = scaler, train.features, train.n_classes
        return scaler, tw, vw

    def _early_stopping(self) -> EarlyStopping:
        return EarlyStopping(
            self.monitor,
            patience=self.patience,
            conditions=self.conditions,
            overtraining_patience=self.overtraining_patience,
        )

    def _epoch_metrics(
        self,
        train: EventData,
        p_train: np.ndarray | None,
        val: EventData,
        vw: EventData,
        p_val: np.ndarray,
        tw_train: EventData | None = None,
    ) -> dict[str, float]:
        """Loss (weighted with the training weights) and the extra metrics (physics weights)."""
        out: dict[str, float] = {}
        if p_train is not None:
            wt = tw_train.w if tw_train is not None else train.w
            out["loss"] = compute_metric("weighted_loss", train.y, p_train, wt)
        out["val_loss"] = compute_metric("weighted_loss", vw.y, p_val, vw.w)
        for m in self.metrics:
            if p_train is not None:
                out[m.name] = float(m(train.y, p_train, train.w, X=train.X))
            out[f"val_{m.name}"] = float(m(val.y, p_val, val.w, X=val.X))
        return out

    def _check_trained(self) -> InputScaler:
        if self.scaler_ is None:
            raise ConfigError("the model is not trained: call fit() (or load_trainable()) first")
        return self.scaler_

    def _meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": self.params_,
            "features": list(self.features_ or ()),
            "n_classes": self.n_classes_,
            "scaler": None if self.scaler_ is None else self.scaler_.to_dict(),
            "history": None if self.history_ is None else self.history_.to_dict(),
            "n_threads": self.n_threads,
        }

    def _restore_meta(self, meta: Mapping[str, Any]) -> None:
        self.params_ = dict(meta.get("params") or {})
        self.features_ = tuple(meta["features"])
        self.n_classes_ = int(meta["n_classes"])
        self.scaler_ = InputScaler.from_dict(meta["scaler"])
        if meta.get("history"):
            self.history_ = History.from_dict(meta["history"])


def _binary_or_probs(proba: np.ndarray, n_classes: int) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if n_classes == 2:
        return proba[:, 1] if proba.ndim == 2 else proba
    return proba


def _weighted_train_eval(train: EventData, normalize: bool, class_weights: Any) -> EventData:
    return normalize_class_weights(train, class_weights=class_weights) if normalize else train


# ---------------------------------------------------------------------- scikit-learn
class SklearnTrainable(_Base):
    """Any scikit-learn style classifier (``fit(X, y, sample_weight)`` + ``predict_proba``).

    Args:
        estimator: Class or import path, e.g. ``"sklearn.ensemble.HistGradientBoostingClassifier"``.
        **options: Base options (``scaling``, ``metrics``, ...) and ``defaults`` (a mapping of
            constructor arguments, overridden by ``params``).
    """

    kind = "sklearn"

    def __init__(
        self,
        estimator: str | type | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if estimator is None:
            raise ConfigError("make_trainable('sklearn') needs estimator='package.module.Class'")
        super().__init__(**options)
        self.estimator_ref = (
            estimator
            if isinstance(estimator, str)
            else (f"{estimator.__module__}.{estimator.__qualname__}")
        )
        self.estimator_cls = import_object(estimator) if isinstance(estimator, str) else estimator
        if not callable(self.estimator_cls):
            raise ConfigError(f"estimator {estimator!r} is not a class")
        self.defaults = dict(defaults or {})
        self.model_: Any = None

    def fit(
        self,
        train: EventData,
        val: EventData,
        params: Mapping[str, Any] | None = None,
        *,
        report: Reporter | None = None,
        checkpoint_dir: Path | None = None,
    ) -> History:
        """Fit once (one "epoch"), then compute and report the metrics."""
        scaler, tw, vw = self._prepare(train, val)
        kwargs = {**self.defaults, **dict(params or {})}
        try:
            est = self.estimator_cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{self.estimator_ref}: invalid parameter(s): {exc}") from exc
        if not hasattr(est, "predict_proba"):
            raise ConfigError(
                f"{self.estimator_ref} has no predict_proba(): use a probabilistic classifier"
            )
        Xt = scaler.transform(tw)
        fit_sig = inspect.signature(est.fit).parameters
        if "sample_weight" in fit_sig:
            est.fit(Xt, tw.y, sample_weight=tw.w)
        else:
            log.warning("%s.fit() takes no sample_weight: training unweighted", self.estimator_ref)
            est.fit(Xt, tw.y)
        self.model_ = est
        self.params_ = {k: _plain(v) for k, v in kwargs.items()}
        p_tr = self.predict(train.X)
        p_val = self.predict(val.X)
        train_eval = _weighted_train_eval(train, self.normalize_weights, self.class_weights)
        m = self._epoch_metrics(train, p_tr, val, vw, p_val, train_eval)
        es = self._early_stopping()
        es.update(1, m)
        pruned = report_stops(report, 1, dict(m), self.kind)
        self.history_ = es.history(
            {k: [v] for k, v in m.items()},
            pruned=pruned,
            stop_reason="pruned" if pruned else "max_epochs",
        )
        return self.history_

    def predict(self, X: np.ndarray | EventData) -> np.ndarray:
        """Class-1 probability (binary) or class probabilities."""
        scaler = self._check_trained()
        assert self.n_classes_ is not None
        return _binary_or_probs(self.model_.predict_proba(scaler.transform(X)), self.n_classes_)

    def save(self, path: Path | str) -> None:
        """``trainable.json`` + ``model.pkl`` (the fitted estimator, pickled)."""
        self._check_trained()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "model.pkl", "wb") as f:
            pickle.dump(self.model_, f)
        (out / "trainable.json").write_text(
            json.dumps({**self._meta(), "estimator": self.estimator_ref}, indent=2)
        )

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> SklearnTrainable:
        """Rebuild from :meth:`save` output (unpickles the estimator: trusted folders only)."""
        obj = cls(meta["estimator"], n_threads=int(meta.get("n_threads", 1)))
        obj._restore_meta(meta)
        with open(Path(path) / "model.pkl", "rb") as f:
            obj.model_ = pickle.load(f)
        return obj


# ---------------------------------------------------------------------- boosters
class _Booster(_Base):
    """The fit shared by the gradient-boosting libraries: one "epoch" per boosting round.

    ``params`` are the library's parameters; ``num_boost_round`` (or ``n_estimators``) sets the
    number of rounds (default 100). The objective and evaluation metrics follow the number of
    classes; the recorded ``loss`` / ``val_loss`` are the library's weighted log-loss (class-
    normalised weights, as for every trainable). A subclass supplies :meth:`_train`.
    """

    #: evaluation-metric name of the library -> history name
    metric_names: ClassVar[Mapping[str, str]] = {}

    def __init__(self, *, defaults: Mapping[str, Any] | None = None, **options: Any) -> None:
        options.setdefault("metrics", ())
        super().__init__(**options)
        self.defaults = dict(defaults or {})
        self.model_: Any = None
        self.best_iteration_: int | None = None

    def fit(
        self,
        train: EventData,
        val: EventData,
        params: Mapping[str, Any] | None = None,
        *,
        report: Reporter | None = None,
        checkpoint_dir: Path | None = None,
    ) -> History:
        """Train with a per-round callback: metrics, early stopping, ``report``."""
        scaler, tw, vw = self._prepare(train, val)
        p = {**self.defaults, **dict(params or {})}
        rounds = int(p.pop("num_boost_round", p.pop("n_estimators", 100)))
        es = self._early_stopping()
        metrics: dict[str, list[float]] = {}
        state = {"pruned": False, "reason": "max_epochs"}

        def on_round(epoch: int, results: list[tuple[str, str, float]]) -> bool:
            """Record one round's ``(data, metric, value)`` results; True stops the training."""
            m: dict[str, float] = {}
            for data_name, eval_name, value in results:
                base = self.metric_names.get(eval_name, eval_name)
                m[base if data_name == "train" else f"val_{base}"] = float(value)
            for k, v in m.items():
                metrics.setdefault(k, []).append(v)
            _, reason = es.update(epoch, m)
            if report_stops(report, epoch, dict(m), self.kind):
                reason, state["pruned"] = "pruned", True
            if reason is not None:
                state["reason"] = reason
                return True
            return False

        self.model_ = self._train(
            p, rounds, scaler.transform(tw), tw, scaler.transform(vw), vw, on_round
        )
        self.params_ = {k: _plain(v) for k, v in {**p, "num_boost_round": rounds}.items()}
        self.history_ = es.history(
            metrics, pruned=bool(state["pruned"]), stop_reason=str(state["reason"])
        )
        self.best_iteration_ = self.history_.best_epoch
        return self.history_

    def _train(
        self,
        params: dict[str, Any],
        rounds: int,
        X_train: np.ndarray,
        train: EventData,
        X_val: np.ndarray,
        val: EventData,
        on_round: Callable[[int, list[tuple[str, str, float]]], bool],
    ) -> Any:
        """Train the library's booster, calling ``on_round`` after every round."""
        raise NotImplementedError

    def _save_booster(self, path: Path, name: str) -> None:
        self._check_trained()
        path.mkdir(parents=True, exist_ok=True)
        self.model_.save_model(str(path / name))
        (path / "trainable.json").write_text(
            json.dumps({**self._meta(), "best_iteration": self.best_iteration_}, indent=2)
        )


def _import_booster(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            f"make_trainable({name!r}) needs {name}: pip install 'sigtune[ml]'"
        ) from exc


class LightGBMTrainable(_Booster):
    """LightGBM booster (``lightgbm.train``); one "epoch" per boosting iteration."""

    kind = "lightgbm"
    metric_names: ClassVar[Mapping[str, str]] = {
        "binary_logloss": "loss",
        "multi_logloss": "loss",
        "auc": "auc",
    }

    def _train(
        self,
        params: dict[str, Any],
        rounds: int,
        X_train: np.ndarray,
        train: EventData,
        X_val: np.ndarray,
        val: EventData,
        on_round: Callable[[int, list[tuple[str, str, float]]], bool],
    ) -> Any:
        lgb = _import_booster("lightgbm")
        binary = train.n_classes == 2
        lgb_params: dict[str, Any] = {
            "objective": "binary" if binary else "multiclass",
            "metric": ["binary_logloss", "auc"] if binary else ["multi_logloss"],
            "verbosity": -1,
            "num_threads": self.n_threads,
            "seed": 0 if self.seed is None else int(self.seed),
            "deterministic": True,
        }
        if not binary:
            lgb_params["num_class"] = train.n_classes
        lgb_params.update(params)
        dtrain = lgb.Dataset(X_train, label=train.y, weight=train.w, free_raw_data=False)
        dval = lgb.Dataset(X_val, label=val.y, weight=val.w, reference=dtrain)

        def callback(env: Any) -> None:
            results = [(d, e, float(v)) for d, e, v, *_ in env.evaluation_result_list]
            if on_round(env.iteration + 1, results):
                raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

        try:
            return lgb.train(
                lgb_params,
                dtrain,
                num_boost_round=rounds,
                valid_sets=[dtrain, dval],
                valid_names=["train", "val"],
                callbacks=[callback],
            )
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(f"LightGBM rejected the parameters: {exc}") from exc

    def predict(self, X: np.ndarray | EventData) -> np.ndarray:
        """Probabilities using the trees up to the best iteration."""
        scaler = self._check_trained()
        assert self.n_classes_ is not None
        out = self.model_.predict(scaler.transform(X), num_iteration=self.best_iteration_ or None)
        return _binary_or_probs(out, self.n_classes_)

    def save(self, path: Path | str) -> None:
        """``trainable.json`` + ``model.txt`` (LightGBM text format)."""
        self._save_booster(Path(path), "model.txt")

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> LightGBMTrainable:
        """Rebuild from :meth:`save` output."""
        lgb = _import_booster("lightgbm")
        obj = cls(n_threads=int(meta.get("n_threads", 1)))
        obj._restore_meta(meta)
        obj.model_ = lgb.Booster(model_file=str(Path(path) / "model.txt"))
        obj.best_iteration_ = meta.get("best_iteration")
        return obj


class XGBoostTrainable(_Booster):
    """XGBoost booster (``xgboost.train``); one "epoch" per boosting iteration."""

    kind = "xgboost"
    metric_names: ClassVar[Mapping[str, str]] = {
        "logloss": "loss",
        "mlogloss": "loss",
        "auc": "auc",
    }

    def _train(
        self,
        params: dict[str, Any],
        rounds: int,
        X_train: np.ndarray,
        train: EventData,
        X_val: np.ndarray,
        val: EventData,
        on_round: Callable[[int, list[tuple[str, str, float]]], bool],
    ) -> Any:
        xgb = _import_booster("xgboost")
        binary = train.n_classes == 2
        xgb_params: dict[str, Any] = {
            "objective": "binary:logistic" if binary else "multi:softprob",
            "eval_metric": ["logloss", "auc"] if binary else ["mlogloss"],
            "nthread": self.n_threads,
            "seed": 0 if self.seed is None else int(self.seed),
            "verbosity": 0,
        }
        if not binary:
            xgb_params["num_class"] = train.n_classes
        xgb_params.update(params)
        dtrain = xgb.DMatrix(X_train, label=train.y, weight=train.w)
        dval = xgb.DMatrix(X_val, label=val.y, weight=val.w)

        class _Report(xgb.callback.TrainingCallback):  # type: ignore[misc,name-defined]
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                results = [
                    (d, e, float(values[-1]))
                    for d, logs in evals_log.items()
                    for e, values in logs.items()
                ]
                return on_round(epoch + 1, results)

        try:
            return xgb.train(
                xgb_params,
                dtrain,
                num_boost_round=rounds,
                evals=[(dtrain, "train"), (dval, "val")],
                callbacks=[_Report()],
                verbose_eval=False,
            )
        except xgb.core.XGBoostError as exc:
            raise ConfigError(f"XGBoost rejected the parameters: {exc}") from exc

    def predict(self, X: np.ndarray | EventData) -> np.ndarray:
        """Probabilities using the trees up to the best iteration."""
        import xgboost as xgb

        scaler = self._check_trained()
        assert self.n_classes_ is not None
        rng = (0, int(self.best_iteration_)) if self.best_iteration_ else (0, 0)
        out = self.model_.predict(xgb.DMatrix(scaler.transform(X)), iteration_range=rng)
        return _binary_or_probs(out, self.n_classes_)

    def save(self, path: Path | str) -> None:
        """``trainable.json`` + ``model.ubj`` (XGBoost's binary format)."""
        self._save_booster(Path(path), "model.ubj")

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> XGBoostTrainable:
        """Rebuild from :meth:`save` output."""
        xgb = _import_booster("xgboost")
        obj = cls(n_threads=int(meta.get("n_threads", 1)))
        obj._restore_meta(meta)
        booster = xgb.Booster()
        booster.load_model(str(Path(path) / "model.ubj"))
        obj.model_ = booster
        obj.best_iteration_ = meta.get("best_iteration")
        return obj


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    try:
        json.dumps(v)
    except TypeError:
        return repr(v)
    return v


# ---------------------------------------------------------------------- registration
register_trainable("sklearn", SklearnTrainable, builtin=True)
register_trainable("lightgbm", LightGBMTrainable, builtin=True)
register_trainable("xgboost", XGBoostTrainable, builtin=True)
