"""ML tuning pipelines: data, splits, scaling, trainables, metrics, and the pipeline stages.

Building blocks::

    data = load_data("events.parquet", features=[...], target="label", weight="w",
                     event_number="event")
    splits = split_event_number(data, n_folds=5, val_fold=0, test_fold=1)
    trainable = make_trainable("mlp", max_epochs=30, metrics=["auc"])
    history = trainable.fit(splits.train, splits.val, {"num_layers": 2, "units": 32})
    z = compute_metric("z0", splits.test.y, trainable.predict(splits.test.X), splits.test.w)

Pipeline stages (trial selection, cross-validation, evaluation, variable selection, the
``type: ml`` run-config) are re-exported here too. Names are resolved lazily, so importing this
package never imports torch, lightning, scikit-learn, LightGBM, XGBoost or uproot.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY: dict[str, str] = {
    # data
    "EventData": "sigtune.pipelines.ml._data",
    "load_data": "sigtune.pipelines.ml._data",
    "make_hep_dataset": "sigtune.pipelines.ml._generate",
    # weights
    "normalize_class_weights": "sigtune.pipelines.ml._weights",
    "cap_event_weights": "sigtune.pipelines.ml._weights",
    "training_weights": "sigtune.pipelines.ml._weights",
    "scale_to_yields": "sigtune.pipelines.ml._weights",
    # splits
    "Splits": "sigtune.pipelines.ml._splits",
    "split_random": "sigtune.pipelines.ml._splits",
    "split_event_number": "sigtune.pipelines.ml._splits",
    "kfold_splits": "sigtune.pipelines.ml._splits",
    "event_number_folds": "sigtune.pipelines.ml._splits",
    # scaling
    "InputScaler": "sigtune.pipelines.ml._scaling",
    # metrics
    "METRICS": "sigtune.pipelines.ml._metrics",
    "Metric": "sigtune.pipelines.ml._metrics",
    "Monitor": "sigtune.pipelines.ml._metrics",
    "Z0Metric": "sigtune.pipelines.ml._metrics",
    "compute_metric": "sigtune.pipelines.ml._metrics",
    "composite_metric": "sigtune.pipelines.ml._metrics",
    "custom_metric": "sigtune.pipelines.ml._metrics",
    "get_metric": "sigtune.pipelines.ml._metrics",
    "metric_direction": "sigtune.pipelines.ml._metrics",
    "register_metric": "sigtune.pipelines.ml._metrics",
    "z0_workspace": "sigtune.pipelines.ml._metrics",
    # trainables
    "History": "sigtune.pipelines.ml._history",
    "EpochAction": "sigtune.pipelines.ml._history",
    "OvertrainingCondition": "sigtune.pipelines.ml._history",
    "train_val_gap": "sigtune.pipelines.ml._history",
    "TRAINABLES": "sigtune.pipelines.ml._registry",
    "Trainable": "sigtune.pipelines.ml._trainables",
    "make_trainable": "sigtune.pipelines.ml._registry",
    "load_trainable": "sigtune.pipelines.ml._registry",
    "optuna_reporter": "sigtune.pipelines.ml._trainables",
    "register_trainable": "sigtune.pipelines.ml._registry",
    "build_mlp": "sigtune.pipelines.ml._mlp",
}

# Pipeline stages.
_LAZY.update(
    {
        "select_trials": "sigtune.pipelines.ml._selection",
        "SelectionResult": "sigtune.pipelines.ml._selection",
        "cross_validate": "sigtune.pipelines.ml._cv",
        "CVResult": "sigtune.pipelines.ml._cv",
        "FoldResult": "sigtune.pipelines.ml._cv",
        "TrainableSpec": "sigtune.pipelines.ml._cv",
        "evaluate": "sigtune.pipelines.ml._evaluate",
        "EvaluationResult": "sigtune.pipelines.ml._evaluate",
        "roc_curve": "sigtune.pipelines.ml._evaluate",
        "select_variables": "sigtune.pipelines.ml._varsel",
        "VariableSelectionResult": "sigtune.pipelines.ml._varsel",
        "run_pipeline": "sigtune.pipelines.ml._pipeline",
        "PipelineConfig": "sigtune.pipelines.ml._pipeline",
        "PipelineResult": "sigtune.pipelines.ml._pipeline",
        "load_pipeline_config": "sigtune.pipelines.ml._pipeline",
        "PBTStage": "sigtune.pipelines.ml._pbt",
        "run_pbt": "sigtune.pipelines.ml._pbt",
    }
)

if TYPE_CHECKING:  # pragma: no cover
    from sigtune.pipelines.ml._data import EventData, load_data
    from sigtune.pipelines.ml._generate import make_hep_dataset
    from sigtune.pipelines.ml._history import (
        EpochAction,
        History,
        OvertrainingCondition,
        train_val_gap,
    )
    from sigtune.pipelines.ml._metrics import (
        METRICS,
        Metric,
        Monitor,
        Z0Metric,
        composite_metric,
        compute_metric,
        custom_metric,
        get_metric,
        metric_direction,
        register_metric,
        z0_workspace,
    )
    from sigtune.pipelines.ml._mlp import build_mlp
    from sigtune.pipelines.ml._pbt import PBTStage, run_pbt
    from sigtune.pipelines.ml._registry import (
        TRAINABLES,
        load_trainable,
        make_trainable,
        register_trainable,
    )
    from sigtune.pipelines.ml._scaling import InputScaler
    from sigtune.pipelines.ml._splits import (
        Splits,
        event_number_folds,
        kfold_splits,
        split_event_number,
        split_random,
    )
    from sigtune.pipelines.ml._trainables import Trainable, optuna_reporter
    from sigtune.pipelines.ml._weights import (
        cap_event_weights,
        normalize_class_weights,
        scale_to_yields,
        training_weights,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sigtune.pipelines.ml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "METRICS",
    "TRAINABLES",
    "CVResult",
    "EpochAction",
    "EvaluationResult",
    "EventData",
    "FoldResult",
    "History",
    "InputScaler",
    "Metric",
    "Monitor",
    "OvertrainingCondition",
    "PBTStage",
    "PipelineConfig",
    "PipelineResult",
    "SelectionResult",
    "Splits",
    "Trainable",
    "TrainableSpec",
    "VariableSelectionResult",
    "Z0Metric",
    "build_mlp",
    "cap_event_weights",
    "composite_metric",
    "compute_metric",
    "cross_validate",
    "custom_metric",
    "evaluate",
    "event_number_folds",
    "get_metric",
    "kfold_splits",
    "load_data",
    "load_pipeline_config",
    "load_trainable",
    "make_hep_dataset",
    "make_trainable",
    "metric_direction",
    "normalize_class_weights",
    "optuna_reporter",
    "register_metric",
    "register_trainable",
    "roc_curve",
    "run_pbt",
    "run_pipeline",
    "scale_to_yields",
    "select_trials",
    "select_variables",
    "split_event_number",
    "split_random",
    "train_val_gap",
    "training_weights",
    "z0_workspace",
]
