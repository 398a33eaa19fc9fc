"""Cross-validation of selected hyperparameters: retrain on k folds, aggregate, save every fold.

For one set of hyperparameters, :func:`cross_validate` trains a fresh model on each of ``k``
splits (see :func:`~sigtune.pipelines.ml.kfold_splits`: a fixed or rotating test set), evaluates
the validation and test events of the fold, aggregates every metric over the folds as
``mean +- std`` (sample standard deviation, ``ddof=1``) or ``median +- MAD``
(``MAD = median(|x - median(x)|)``, not rescaled), and saves each fold's model (the trainable's
own format, which stores the hyperparameters and the fitted input scaling) together with a
``fold.json`` holding the params, the features, the split *recipe* (method, ``k``, seed,
fractions, and a hash of the event numbers: the folds are re-derived from it, not stored), the
training mode, the metrics and the history.

By default each fold trains with the trainable's own early stopping. With ``epochs=N`` (what the
pipeline passes: the epoch trial selection chose) every fold trains exactly ``N`` epochs
(boosting rounds) and keeps the last epoch's model; ``fold.json`` records which.

Metrics are computed from the model's predictions with :func:`~sigtune.pipelines.ml.compute_metric`
with the physics event weights: ``weighted_loss`` means the same everywhere (cv, evaluation,
variable selection). ``balanced_loss`` normalises the weights per class first, as training does,
so ``val_balanced_loss`` equals the ``val_loss`` a trainable records.

A fold whose ``fold.json`` already exists is loaded instead of retrained, so an interrupted
cross-validation resumes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sigtune._exceptions import ConfigError

__all__ = [
    "CVResult",
    "FoldResult",
    "TrainableSpec",
    "aggregate",
    "as_factory",
    "cross_validate",
    "fold_metrics",
]

log = logging.getLogger(__name__)

Aggregate = Literal["mean", "median"]
TrainableFactory = Callable[..., Any]  # factory(seed=int | None) -> Trainable


@dataclass(frozen=True)
class TrainableSpec:
    """How to build a trainable: ``make_trainable(kind, **options)``; a seed can be overridden.

    Attributes:
        kind: ``"mlp"``, ``"torch"``, ``"lightning"``, ``"keras"``, ``"sklearn"``, ``"lightgbm"``,
            ``"xgboost"``.
        options: Keyword options of :func:`~sigtune.pipelines.ml.make_trainable`.
    """

    kind: str
    options: Mapping[str, Any]

    def __call__(self, seed: int | None = None) -> Any:
        """A fresh, untrained trainable (with ``seed`` if given)."""
        from sigtune.pipelines.ml._registry import make_trainable

        opts = dict(self.options)
        if seed is not None:
            opts["seed"] = int(seed)
        return make_trainable(self.kind, **opts)


def as_factory(trainable: Any) -> TrainableFactory:
    """Normalise a trainable description to a factory ``f(seed=None) -> Trainable``.

    Args:
        trainable: A :class:`TrainableSpec`, a mapping ``{"kind": ..., **options}``, or a
            callable returning a fresh trainable (called with ``seed=`` if it accepts it).

    Raises:
        ConfigError: For anything else.
    """
    if isinstance(trainable, TrainableSpec):
        return trainable
    if isinstance(trainable, Mapping):
        opts = dict(trainable)
        kind = opts.pop("kind", None)
        if not isinstance(kind, str):
            raise ConfigError(
                f"trainable needs a 'kind' (e.g. 'mlp', 'sklearn'), got {trainable!r}"
            )
        return TrainableSpec(kind, opts)
    if callable(trainable):
        user = trainable

        def factory(seed: int | None = None) -> Any:
            try:
                return user(seed=seed)
            except TypeError:
                return user()

        return factory
    raise ConfigError(
        f"trainable must be a TrainableSpec, a mapping with 'kind', or a factory, got {trainable!r}"
    )


@dataclass(frozen=True)
class FoldResult:
    """One cross-validation fold.

    Attributes:
        fold: Fold index.
        model: The trained trainable.
        split: The fold's :class:`~sigtune.pipelines.ml.Splits`.
        metrics: ``val_<m>`` / ``test_<m>`` for every metric, plus ``best_epoch``.
        history: Per-epoch metrics of the training (as a dict; may be empty).
        path: Folder the model was saved to (``None`` if not saved).
    """

    fold: int
    model: Any
    split: Any
    metrics: dict[str, float]
    history: dict[str, list[float]]
    path: Path | None


@dataclass(frozen=True)
class CVResult:
    """Result of :func:`cross_validate`.

    Attributes:
        training: ``"early_stopping"`` or ``"fixed_epochs:<N>"``.
        params: The hyperparameters cross-validated.
        features: The input variables used.
        folds: Every fold, in order.
        aggregate: ``"mean"`` or ``"median"``.
        center: Metric -> mean (or median) over the folds.
        spread: Metric -> sample std (or MAD) over the folds.
        path: Output folder (``None`` if nothing was saved).
    """

    training: str
    params: dict[str, Any]
    features: tuple[str, ...]
    folds: tuple[FoldResult, ...]
    aggregate: Aggregate
    center: dict[str, float]
    spread: dict[str, float]
    path: Path | None

    @property
    def fold_values(self) -> dict[str, list[float]]:
        """Metric -> value in each fold."""
        names = sorted({k for f in self.folds for k in f.metrics})
        return {k: [f.metrics.get(k, float("nan")) for f in self.folds] for k in names}

    def summary(self) -> dict[str, str]:
        """Metric -> ``"center +- spread"`` strings."""
        sep = " +- "
        return {k: f"{self.center[k]:.6g}{sep}{self.spread[k]:.2g}" for k in sorted(self.center)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no models)."""
        return {
            "training": self.training,
            "params": _jsonable(self.params),
            "features": list(self.features),
            "aggregate": self.aggregate,
            "center": self.center,
            "spread": self.spread,
            "folds": self.fold_values,
            "paths": [None if f.path is None else str(f.path) for f in self.folds],
        }


def aggregate(values: Sequence[float], how: Aggregate = "mean") -> tuple[float, float]:
    """Central value and spread of per-fold values.

    Args:
        values: One value per fold.
        how: ``"mean"`` (mean, sample std with ``ddof=1``; 0 for one value) or ``"median"``
            (median, median absolute deviation).

    Returns:
        ``(center, spread)``.

    Raises:
        ConfigError: For an unknown ``how``.
    """
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    if how == "mean":
        return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    if how == "median":
        med = float(np.median(arr))
        return med, float(np.median(np.abs(arr - med)))
    raise ConfigError(f"aggregate must be 'mean' or 'median', got {how!r}")


def fold_metrics(
    model: Any, split: Any, metrics: Sequence[Any], *, prefixes: Sequence[str] = ("val", "test")
) -> dict[str, float]:
    """Metrics of a trained model on a split's validation / test events.

    Args:
        model: Anything with ``predict(X)`` on raw inputs.
        split: A :class:`~sigtune.pipelines.ml.Splits`.
        metrics: Metric names or callables (see :func:`~sigtune.pipelines.ml.compute_metric`).
        prefixes: Which parts of the split to evaluate (empty parts are skipped).

    Returns:
        ``{"<prefix>_<metric>": value}``.
    """
    from sigtune.pipelines.ml._metrics import compute_metric, get_metric

    out: dict[str, float] = {}
    for prefix in prefixes:
        data = getattr(split, prefix)
        if len(data) == 0:
            continue
        p = model.predict(data.X)
        w = np.asarray(data.w, dtype=float)
        for m in metrics:
            name = m if isinstance(m, str) else get_metric(m).name
            out[f"{prefix}_{name}"] = float(compute_metric(m, data.y, p, w, X=data.X))
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def _hash_events(*arrays: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def split_recipe(
    data: Any, *, k: int, test: str, test_fraction: float, by: str, seed: int
) -> dict[str, Any]:
    """How :func:`~sigtune.pipelines.ml.kfold_splits` cut ``data`` (stored in ``fold.json``)."""
    return {
        "method": "kfold",
        "k": int(k),
        "test": test,
        "test_fraction": float(test_fraction),
        "by": by,
        "seed": int(seed),
        "n_events": len(data),
        "event_numbers": _hash_events(data.event_number),
    }


def _given_recipe(split: Any) -> dict[str, Any]:
    """Recipe of a split passed in by the caller: a hash of its events per part."""
    return {
        "method": "given",
        "events": _hash_events(
            split.train.event_number, split.val.event_number, split.test.event_number
        ),
    }


def fixed_epoch_params(model: Any, params: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """Params (and trainable settings) so that ``model.fit`` trains exactly ``epochs`` epochs.

    Early stopping and overtraining stops are switched off and the last epoch's weights are kept.
    Boosters train ``epochs`` rounds; a scikit-learn estimator has no epochs (unchanged).
    """
    kind = getattr(model, "kind", None)
    p = dict(params)
    if kind == "sklearn":
        return p
    if kind in ("lightgbm", "xgboost"):
        p.pop("n_estimators", None)
        p["num_boost_round"] = int(epochs)
    else:
        p["max_epochs"] = int(epochs)
    if kind in ("mlp", "torch"):  # loop settings are hyperparameters of the torch loop
        p["patience"] = None
        p["overtraining_patience"] = None
    for attr in ("patience", "overtraining_patience"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model, "restore_best_weights"):
        model.restore_best_weights = False
    return p


def _load_fold(
    path: Path, split: Any, params: Mapping[str, Any], recipe: Mapping[str, Any], mode: str
) -> FoldResult | None:
    from sigtune.pipelines.ml._registry import load_trainable

    meta_path = path / "fold.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if (
        meta.get("params") != _jsonable(params)
        or meta.get("features") != list(split.train.features)
        or meta.get("split") != _jsonable(recipe)
        or meta.get("training") != mode
    ):
        log.warning(
            "%s was trained with other params, variables, split or epochs: retraining the fold",
            path,
        )
        return None
    try:
        model = load_trainable(path / "model")
    except Exception as exc:  # a damaged or foreign folder: retrain
        log.warning("cannot load %s (%s): retraining the fold", path, exc)
        return None
    return FoldResult(
        fold=int(meta["fold"]),
        model=model,
        split=split,
        metrics={k: float(v) for k, v in meta["metrics"].items()},
        history={k: list(v) for k, v in meta.get("history", {}).items()},
        path=path,
    )


def cross_validate(
    data: Any,
    params: Mapping[str, Any],
    *,
    trainable: Any,
    k: int = 5,
    test: Literal["fixed", "rotating", "none"] = "fixed",
    test_fraction: float = 0.2,
    by: Literal["random", "event_number"] = "random",
    folds: Sequence[Any] | None = None,
    metrics: Sequence[Any] = ("weighted_loss", "auc"),
    how: Aggregate = "mean",
    seed: int = 0,
    out_dir: str | Path | None = None,
    epochs: int | None = None,
) -> CVResult:
    """Retrain one hyperparameter set on k folds and aggregate the metrics.

    Args:
        data: The events (:class:`~sigtune.pipelines.ml.EventData`), split with
            :func:`~sigtune.pipelines.ml.kfold_splits` (``k``, ``test``, ``test_fraction``,
            ``by``, ``seed``) unless ``folds`` is given.
        params: Hyperparameters passed to ``Trainable.fit``.
        trainable: :class:`TrainableSpec`, ``{"kind": ..., **options}`` or a factory.
        k: Number of folds.
        test: ``"fixed"``, ``"rotating"`` or ``"none"`` (see ``kfold_splits``).
        test_fraction: Size of a fixed random test set.
        by: Fold assignment ``"random"`` or ``"event_number"``.
        folds: Precomputed splits (overrides the splitting arguments).
        metrics: Metrics computed on the validation and test events of every fold.
        how: ``"mean"`` (+- std) or ``"median"`` (+- MAD).
        seed: Seed of the split and of each fold's training (``seed + fold``).
        out_dir: Save each fold to ``out_dir/fold_<i>/`` (model + ``fold.json``) and the summary
            to ``out_dir/cv.json``; an existing fold is loaded instead of retrained.
        epochs: Train every fold exactly this many epochs (no early stopping, last epoch kept);
            ``None``: the trainable's early stopping.

    Returns:
        Per-fold models and metrics and their aggregate.

    Raises:
        ConfigError: For bad arguments (also from the splitting or the trainable).
    """
    from sigtune.pipelines.ml._splits import kfold_splits

    if how not in ("mean", "median"):
        raise ConfigError(f"cv.aggregate must be 'mean' or 'median', got {how!r}")
    if epochs is not None and int(epochs) < 1:
        raise ConfigError(f"cross_validate: epochs must be >= 1, got {epochs}")
    factory = as_factory(trainable)
    given = folds is not None
    if folds is None:
        folds = kfold_splits(data, k=k, test=test, seed=seed, test_fraction=test_fraction, by=by)
        base_recipe = split_recipe(
            data, k=k, test=test, test_fraction=test_fraction, by=by, seed=seed
        )
    if not folds:
        raise ConfigError("cross_validate needs at least one fold")
    mode = "early_stopping" if epochs is None else f"fixed_epochs:{int(epochs)}"
    out = None if out_dir is None else Path(out_dir)
    results: list[FoldResult] = []
    for i, split in enumerate(folds):
        recipe = _given_recipe(split) if given else {**base_recipe, "fold": i}
        path = None if out is None else out / f"fold_{i}"
        loaded = None if path is None else _load_fold(path, split, params, recipe, mode)
        if loaded is not None:
            log.info("cross-validation fold %d loaded from %s", i, path)
            results.append(loaded)
            continue
        model = factory(seed=seed + i)
        fit_params = dict(params)
        if epochs is not None:
            fit_params = fixed_epoch_params(model, fit_params, int(epochs))
        history = model.fit(split.train, split.val, fit_params)
        if epochs is not None and hasattr(model, "best_iteration_"):
            model.best_iteration_ = None  # boosters: predict with every round trained
        hist = {k_: list(map(float, v)) for k_, v in getattr(history, "metrics", {}).items()}
        values = fold_metrics(model, split, metrics)
        values["best_epoch"] = float(getattr(history, "best_epoch", 0))
        values["epochs"] = float(getattr(history, "n_epochs", 0))
        if path is not None:
            model.save(path / "model")
            meta = {
                "fold": i,
                "params": _jsonable(params),
                "features": list(split.train.features),
                "training": mode,
                "metrics": values,
                "history": hist,
                "split": _jsonable(recipe),
            }
            (path / "fold.json").write_text(json.dumps(meta))
        log.info("cross-validation fold %d: %s", i, values)
        results.append(FoldResult(i, model, split, values, hist, path))

    names = sorted({name for r in results for name in r.metrics})
    center: dict[str, float] = {}
    spread: dict[str, float] = {}
    for name in names:
        center[name], spread[name] = aggregate([r.metrics.get(name, np.nan) for r in results], how)
    result = CVResult(
        training=mode,
        params=dict(params),
        features=tuple(folds[0].train.features),
        folds=tuple(results),
        aggregate=how,
        center=center,
        spread=spread,
        path=out,
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "cv.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result
