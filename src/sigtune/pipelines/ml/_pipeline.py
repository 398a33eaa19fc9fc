"""The ML tuning pipeline: one config, six stages, resumable.

Stages, in OPTIMA's order (each can be switched off with ``enabled: false``):

1. ``presearch`` — a hyperparameter search (any sampler/pruner of the core; pruners act on the
   per-epoch reports of the trainable) with all input variables;
2. ``varsel`` — input-variable selection with the pre-search's best hyperparameters
   (:func:`~sigtune.pipelines.ml.select_variables`);
3. ``search`` — the main hyperparameter search with the selected variables;
4. ``selection`` — best-value and best-fit trial selection on the main search
   (:func:`~sigtune.pipelines.ml.select_trials`);
5. ``pbt`` — Population Based Training on Ray Tune (off unless a ``pbt:`` section is given;
   see :mod:`sigtune.pipelines.ml._pbt`); when it ran, ``cv`` and ``evaluation`` use its winner's
   hyperparameter schedule instead of the selected trials;
6. ``cv`` — cross-validation of the selected trials (:func:`~sigtune.pipelines.ml.cross_validate`);
7. ``evaluation`` — plots and metrics of the cross-validated models
   (:func:`~sigtune.pipelines.ml.evaluate`).

Every stage writes into its own folder ``<run_dir>/<stage>/`` and finishes by writing
``done.json`` (its outputs: best params, selected variables, selected trials...). A later run
with the same ``run_dir`` skips the stages that have ``done.json`` and continues with the first
one that has not; a search stage resumes its own study (``study.journal`` in its folder) up to
its ``n_trials``. Each ``done.json`` also records what the stage consumed (digests of its
settings, of the shared data/trainable settings and of the upstream stages' outputs; for
``selection`` the study name, its number of finished trials and its best trial): a stage whose
inputs changed runs again, and with it the stages after it. Delete a stage folder to redo it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sigtune._exceptions import ConfigError
from sigtune._figures import save_tight
from sigtune.pipelines.ml._pbt import PBTStage, split_mutable

__all__ = [
    "STAGES",
    "CVStage",
    "DataSection",
    "EvaluationStage",
    "PipelineConfig",
    "PipelineResult",
    "SearchStage",
    "SelectionStage",
    "SplitSection",
    "TrainableSection",
    "VarSelStage",
    "load_pipeline_config",
    "run_pipeline",
]

log = logging.getLogger(__name__)

#: Stage names in execution order (also the folder names under ``run_dir``).
STAGES = ("presearch", "varsel", "search", "selection", "pbt", "cv", "evaluation")
DONE = "done.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _named(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class NamedOptions(_Model):
    """A sampler or pruner: ``name`` plus keyword ``options`` (a bare string is the name)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class DataSection(_Model):
    """``data:`` where the events come from (exactly one of ``source``, ``generate``, ``sklearn``)."""

    source: str | None = Field(
        None, description="File (parquet/csv/npz/root/pkl), relative to the config."
    )
    generate: dict[str, Any] | None = Field(
        None, description="Keyword arguments of make_hep_dataset (a generated HEP-like sample)."
    )
    sklearn: str | None = Field(
        None, description="A scikit-learn bundled dataset: breast_cancer, wine, iris, digits."
    )
    features: list[str] | None = Field(None, description="Input variables (default: all columns).")
    target: str | list[str] = Field("target", description="Class column or one-hot columns.")
    weight: str | None = None
    event_number: str | None = None
    classes: list[Any] | None = None
    tree: str | None = None
    allow_pickle: bool = False
    reader: str | None = Field(
        None,
        description="Input hook 'module:function': reader(path) -> DataFrame, mapping of "
        "columns, or EventData (custom reading and non-linear input transforms).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        given = [k for k in ("source", "generate", "sklearn") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of source, generate, sklearn (got {given or 'none'})"
            )
        if self.sklearn is not None and self.sklearn not in _SKLEARN_SETS:
            raise ValueError(
                f"sklearn must be one of {sorted(_SKLEARN_SETS)}, got {self.sklearn!r}"
            )
        return self


_SKLEARN_SETS = {
    "breast_cancer": "load_breast_cancer",
    "wine": "load_wine",
    "iris": "load_iris",
    "digits": "load_digits",
}


class SplitSection(_Model):
    """``split:`` training / validation / test split of the searches."""

    method: Literal["random", "event_number"] = "random"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    n_folds: int = Field(5, ge=3, description="event_number: (event_number + offset) % n_folds.")
    offset: int = 0
    val_fold: int = 0
    test_fold: int = 1


class TrainableSection(_Model):
    """``trainable:`` the model: ``kind`` and the options of make_trainable."""

    kind: str = "mlp"
    options: dict[str, Any] = Field(default_factory=dict)


class SearchStage(_Model):
    """``presearch:`` / ``search:`` a hyperparameter search."""

    enabled: bool = True
    n_trials: int = Field(20, ge=1)
    sampler: NamedOptions = Field(
        default_factory=lambda: NamedOptions.model_validate({"name": "tpe"})
    )
    pruner: NamedOptions = Field(
        default_factory=lambda: NamedOptions.model_validate({"name": "median"})
    )
    n_jobs: int = Field(1, ge=1)
    timeout: float | None = Field(None, gt=0)
    checkpoints: bool = Field(
        False, description="Per-epoch checkpoints so an interrupted trial resumes."
    )
    on_stale_running: Literal["fail", "requeue"] = Field(
        "requeue",
        description="Trials left RUNNING by a killed process: run their params again on resume.",
    )
    storage: str | None = Field(
        None, description="Storage URL of the study; null = study.journal in the stage folder."
    )
    study_name: str | None = Field(None, description="Study name; null = the stage name.")

    _n = field_validator("sampler", "pruner", mode="before")(_named)


class VarSelStage(_Model):
    """``varsel:`` input-variable selection (see select_variables)."""

    enabled: bool = True
    mode: Literal["shuffle", "retrain", "hybrid", "custom"] = "shuffle"
    metric: str = "balanced_loss"
    groups: dict[str, list[str]] = Field(
        default_factory=dict, description="Sets of variables removed together: {name: [vars]}."
    )
    final_retrain: bool = Field(
        False, description="Re-evaluate the chosen set by retraining on every fold."
    )
    k: int = Field(3, ge=2)
    num_repeats: int = Field(2, ge=1)
    acceptance: Literal["improvement", "threshold", "degradation"] = "threshold"
    max_rel_change: float = Field(0.01, ge=0)
    patience: int = Field(2, ge=1)
    reevaluate: bool = True
    choose: Literal["best", "last"] = "last"
    min_variables: int = Field(1, ge=1)
    custom: str | None = Field(None, description="'module:function' fn(variables) -> metric.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Hyperparameters when the pre-search is off."
    )


class SelectionStage(_Model):
    """``selection:`` best-value / best-fit trial selection."""

    enabled: bool = True
    target: str | None = Field(None, description="Default: the monitored metric.")
    overtraining: list[str] = Field(
        default_factory=list, description='Expressions, e.g. "val_loss - loss > 0.05".'
    )
    n_select: int = Field(1, ge=1)
    min_epochs: int = Field(10, ge=5)
    min_r2: float = Field(0.9, ge=0, le=1)
    use: Literal["both", "best_value", "best_fit"] = "both"
    include_pruned: bool = Field(
        False, description="Pruned trials (their partial histories) are eligible too."
    )


class CVStage(_Model):
    """``cv:`` cross-validation of the selected trials."""

    enabled: bool = True
    k: int = Field(5, ge=2)
    test: Literal["fixed", "rotating", "none"] = Field(
        "fixed",
        description="fixed: one held-out test set; rotating: each fold tests on its own part; "
        "none: no test events (the folds train on more events; test with an independent sample).",
    )
    test_fraction: float = Field(0.2, gt=0, lt=1)
    by: Literal["random", "event_number"] = "random"
    aggregate: Literal["mean", "median"] = "mean"
    metrics: list[str] = Field(
        default_factory=lambda: ["balanced_loss", "weighted_loss", "auc", "accuracy"]
    )
    finalize: str | None = Field(
        None,
        description="Final-model hook 'module:function': finalize(models, out_dir) after the "
        "folds of a trial are trained (e.g. export the ensemble).",
    )
    early_stopping: bool = Field(
        False,
        description="Stop each fold early on its validation events; default: train every fold "
        "for the number of epochs trial selection chose.",
    )


class EvaluationStage(_Model):
    """``evaluation:`` plots and metrics table of the cross-validated models."""

    enabled: bool = True
    metrics: list[str] = Field(
        default_factory=lambda: ["balanced_loss", "weighted_loss", "auc", "accuracy"]
    )
    class_names: list[str] | None = None
    bins: int = Field(40, ge=2)
    folds: Literal["first", "all"] = "first"
    hook: str | None = Field(
        None,
        description="Custom evaluation 'module:function': hook(models, splits, out_dir) -> "
        "mapping of results (stored in done.json).",
    )


class PipelineBody(_Model):
    """Fields shared by :class:`PipelineConfig` and the ``objective: {type: ml}`` section."""

    data: DataSection
    split: SplitSection = Field(default_factory=lambda: SplitSection.model_validate({}))
    trainable: TrainableSection = Field(default_factory=lambda: TrainableSection.model_validate({}))
    monitor: str = Field("val_loss", description="History metric the searches optimise.")
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="Default: the monitored metric's direction."
    )
    trial_value: Literal["best_epoch", "last_valid_epoch", "best_fit"] = Field(
        "best_epoch",
        description="What a trial reports to the search: its best epoch, its last epoch that "
        "passes selection.overtraining (OPTIMA's default), or the best learning-curve fit value.",
    )
    presearch: SearchStage = Field(
        default_factory=lambda: SearchStage.model_validate({"n_trials": 10})
    )
    varsel: VarSelStage = Field(default_factory=lambda: VarSelStage.model_validate({}))
    selection: SelectionStage = Field(default_factory=lambda: SelectionStage.model_validate({}))
    pbt: PBTStage | None = Field(None, description="Population Based Training (off when null).")
    cv: CVStage = Field(default_factory=lambda: CVStage.model_validate({}))
    evaluation: EvaluationStage = Field(default_factory=lambda: EvaluationStage.model_validate({}))


class PipelineConfig(PipelineBody):
    """The whole pipeline (``python -m sigtune.pipelines.ml pipeline.yaml``).

    Attributes:
        run_dir: Output folder; one sub-folder per stage.
        seed: Seed of splits, samplers and trainings.
        search_space: OPTIMA-style search space (see :class:`sigtune.SearchSpace`).
        search: The main search.
        base_dir: Directory relative data paths start from (the config file's folder).
    """

    run_dir: Path = Path("runs/ml")
    seed: int = 0
    search_space: dict[str, Any] = Field(default_factory=dict)
    search: SearchStage = Field(default_factory=lambda: SearchStage.model_validate({}))
    base_dir: Path | None = None

    @field_validator("search_space")
    @classmethod
    def _space(cls, value: dict[str, Any]) -> dict[str, Any]:
        from sigtune._space import SearchSpace

        clean, _ = split_mutable(value)  # refuses architecture parameters marked mutable
        SearchSpace.from_dict(clean)  # SearchSpaceError (a ConfigError) names the parameter
        return value


def load_pipeline_config(source: str | Path | Mapping[str, Any]) -> PipelineConfig:
    """Validate a pipeline config from a YAML file or a mapping.

    Raises:
        ConfigError: Listing each invalid field with its path.
    """
    import yaml

    base: Path | None = None
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"pipeline config {path} does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
        base = path.resolve().parent
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    if base is not None:
        raw.setdefault("base_dir", str(base))
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        from sigtune._config import _format_validation_error

        problems = dict.fromkeys(_format_validation_error(exc))
        lines = "\n".join(f"  - {path}: {msg}" for path, msg in problems)
        raise ConfigError(
            f"invalid pipeline config ({len(problems)} problem(s)):\n{lines}"
        ) from None


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` produced.

    Attributes:
        run_dir: The run folder.
        ran: Stages executed in this call.
        skipped: Stages found done (``done.json``) and loaded.
        outputs: Stage name -> its ``done.json`` content.
        studies: Search stage name -> :class:`sigtune.Study` (stages run or resumed here).
    """

    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    studies: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> list[str] | None:
        """Variables selected by ``varsel`` (``None`` if it did not run)."""
        out = self.outputs.get("varsel")
        return None if out is None else list(out["selected"])


# ---------------------------------------------------------------------- helpers
def _jsonable(obj: Any) -> Any:
    from sigtune.pipelines.ml._cv import _jsonable as impl

    return impl(obj)


def _write_done(stage_dir: Path, payload: Mapping[str, Any]) -> dict[str, Any]:
    stage_dir.mkdir(parents=True, exist_ok=True)
    doc = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **_jsonable(dict(payload))}
    tmp = stage_dir / (DONE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(stage_dir / DONE)  # atomic: a crash never leaves half a marker
    return doc


def _read_done(stage_dir: Path) -> dict[str, Any] | None:
    path = stage_dir / DONE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is damaged: running the stage again", path)
        return None
    return doc if isinstance(doc, dict) else None


def load_events(section: DataSection, base_dir: Path | None) -> Any:
    """Load the events of a ``data:`` section."""
    from sigtune.pipelines.ml._data import check_events

    data, where = _load_events(section, base_dir)
    check_events(data, where=where, target=section.target, weight=section.weight)
    return data


def _load_events(section: DataSection, base_dir: Path | None) -> tuple[Any, str]:
    from sigtune.pipelines.ml._data import EventData, load_data

    if section.generate is not None:
        from sigtune.pipelines.ml._generate import make_hep_dataset

        try:
            data = make_hep_dataset(**section.generate)
        except TypeError as exc:
            raise ConfigError(f"data.generate: {exc}") from None
        data = data if section.features is None else data.select_features(section.features)
        return data, "data.generate"
    if section.sklearn is not None:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, _SKLEARN_SETS[section.sklearn])()
        X = np.asarray(bunch.data, dtype=float)
        names = [str(n).replace(" ", "_") for n in getattr(bunch, "feature_names", [])]
        if len(names) != X.shape[1]:
            names = [f"x{i}" for i in range(X.shape[1])]
        y = np.asarray(bunch.target, dtype=np.int64)
        n = len(y)
        data = EventData(X, y, np.ones(n), np.arange(n), tuple(names), int(y.max()) + 1)
        data = data if section.features is None else data.select_features(section.features)
        return data, f"data.sklearn {section.sklearn}"
    assert section.source is not None
    path = Path(section.source)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    source: Any = path
    if section.reader is not None:
        from sigtune._config import resolve_callable

        source = resolve_callable(section.reader, base_dir)(path)
        if isinstance(source, EventData):
            data = source
            if section.features is not None:
                data = data.select_features(section.features)
            return data, str(path)
    data = load_data(
        source,
        features=section.features,
        target=section.target,
        weight=section.weight,
        event_number=section.event_number,
        allow_pickle=section.allow_pickle,
        tree=section.tree,
        classes=section.classes,
    )
    return data, str(path)


def make_split(data: Any, section: SplitSection, seed: int) -> Any:
    """The training / validation / test split of a ``split:`` section."""
    from sigtune.pipelines.ml._splits import split_event_number, split_random

    if section.method == "event_number":
        return split_event_number(
            data,
            n_folds=section.n_folds,
            offset=section.offset,
            val_fold=section.val_fold,
            test_fold=section.test_fold,
        )
    return split_random(
        data, val_fraction=section.val_fraction, test_fraction=section.test_fraction, seed=seed
    )


class TrialObjective:
    """Objective of a search stage: train one trial, report every epoch, store the history.

    Called as ``objective(params, trial)`` (the search space's params). The trainable's
    per-epoch ``report`` feeds ``trial.report`` / ``trial.should_prune``; a pruned training
    raises ``optuna.TrialPruned``. The value is the monitored metric at the best epoch. The
    per-epoch metrics go to ``trial.user_attrs["history"]`` (read by trial selection) and the
    params to ``user_attrs["params"]``.
    """

    def __init__(
        self,
        factory: Callable[..., Any],
        train: Any,
        val: Any,
        monitor: str,
        *,
        seed: int,
        checkpoint_root: Path | None = None,
        trial_value: str = "best_epoch",
        direction: str | None = None,
        overtraining: Sequence[str] = (),
    ) -> None:
        from sigtune.pipelines.ml._metrics import metric_direction

        self.factory = factory
        self.train = train
        self.val = val
        self.monitor = monitor
        self.seed = seed
        self.checkpoint_root = checkpoint_root
        self.trial_value = trial_value
        self.direction = direction or metric_direction(monitor)
        self.overtraining = list(overtraining)

    def __call__(self, params: Mapping[str, Any], trial: Any) -> float:
        import optuna

        from sigtune.pipelines.ml._selection import HISTORY_ATTR
        from sigtune.pipelines.ml._trainables import optuna_reporter

        model = self.factory(seed=self.seed)
        ckpt = None
        if self.checkpoint_root is not None:
            # keyed by the params, so a requeued trial (same params) continues the killed one
            ckpt = self.checkpoint_root / _params_key(params)
            ckpt.mkdir(parents=True, exist_ok=True)
        fit_params = dict(params)  # inactive conditional parameters are None (contract)
        history = model.fit(
            self.train,
            self.val,
            fit_params,
            report=optuna_reporter(trial, self.monitor),
            checkpoint_dir=ckpt,
        )
        trial.set_user_attr(
            HISTORY_ATTR, {k: [float(x) for x in v] for k, v in history.metrics.items()}
        )
        trial.set_user_attr("params", _jsonable(dict(params)))
        trial.set_user_attr("epochs", int(history.n_epochs))
        trial.set_user_attr("best_epoch", int(history.best_epoch))
        if history.pruned:
            raise optuna.TrialPruned(f"pruned after epoch {history.n_epochs}")
        if self.trial_value == "best_epoch" and not self.overtraining:
            value = history.best(self.monitor)
        else:
            from sigtune.pipelines.ml._selection import trial_value

            value, epoch = trial_value(
                history.metrics,
                self.monitor,
                self.direction,  # type: ignore[arg-type]
                self.trial_value,  # type: ignore[arg-type]
                self.overtraining,
            )
            trial.set_user_attr("value_epoch", int(epoch))
        if not np.isfinite(value):
            raise ConfigError(f"trial {trial.number}: monitored {self.monitor} is not finite")
        return float(value)


def _params_key(params: Mapping[str, Any]) -> str:
    """A short stable name for a parameter set (checkpoint folder)."""
    import hashlib

    text = json.dumps(_jsonable(dict(params)), sort_keys=True)
    return "params_" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _best_params(study: Any) -> dict[str, Any]:
    best = study.best_trial
    params = best.user_attrs.get("params")
    return dict(params) if isinstance(params, Mapping) else dict(study.best_params)


def _search_summary(study: Any) -> dict[str, Any]:
    import optuna

    trials = study.optuna.get_trials(deepcopy=False)
    epochs = sum(int(t.user_attrs.get("epochs", 0)) for t in trials)
    states = {
        s.name.lower(): 0
        for s in (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.FAIL,
        )
    }
    for t in trials:
        key = t.state.name.lower()
        if key in states:
            states[key] += 1
    return {
        "best_value": float(study.best_value),
        "best_trial": int(study.best_trial.number),
        "best_params": _best_params(study),
        "best_epoch": study.best_trial.user_attrs.get("best_epoch"),
        "total_epochs": epochs,
        "counts": states,
    }


# ---------------------------------------------------------------------- the runner
class _Runner:
    """Runs the stages of one :class:`PipelineConfig` (state shared between stages)."""

    def __init__(self, cfg: PipelineConfig) -> None:
        from sigtune.pipelines.ml._cv import TrainableSpec
        from sigtune.pipelines.ml._metrics import metric_direction

        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.direction = cfg.direction or metric_direction(cfg.monitor)
        options = dict(cfg.trainable.options)
        options.setdefault("monitor", {"metric": cfg.monitor, "direction": self.direction})
        self.factory = TrainableSpec(cfg.trainable.kind, options)
        _check_trainable(self.factory)  # an unknown kind or option: exit 2 before any trial
        self.data = load_events(cfg.data, cfg.base_dir)
        self.result = PipelineResult(self.run_dir)

    # -- bookkeeping
    def consumed(self, name: str) -> dict[str, Any]:
        """What stage ``name`` reads: its settings, the shared ones, the upstream outputs.

        Recorded in ``done.json``; a stage whose record differs runs again (and so, through
        their ``upstream`` entries, do the stages after it).
        """
        cfg = self.cfg
        shared = cfg.model_dump(
            mode="json", include={"data", "split", "trainable", "monitor", "direction", "seed"}
        )
        section = getattr(cfg, name, None)
        own = None if section is None else section.model_dump(mode="json")
        out: dict[str, Any] = {"shared": _digest(shared), "settings": _digest(own)}
        upstream = {
            "presearch": (),
            "varsel": ("presearch",),
            "search": ("varsel",),
            "selection": ("search",),
            "pbt": ("varsel", "search", "selection"),
            "cv": ("varsel", "selection", "pbt"),
            "evaluation": ("cv",),
        }[name]
        out["upstream"] = {
            up: _digest({k: v for k, v in self.result.outputs[up].items() if k != "finished"})
            for up in upstream
            if up in self.result.outputs
        }
        if name in ("presearch", "search", "pbt"):
            out["search_space"] = _digest(cfg.search_space)
        if name == "selection":
            out["study"] = self.study_record()
        return out

    def stage(self, name: str, enabled: bool, fn: Callable[[Path], dict[str, Any]]) -> None:
        stage_dir = self.run_dir / name
        if not enabled:
            log.info("stage %s: off", name)
            return
        consumed = self.consumed(name)
        done = _read_done(stage_dir)
        if done is not None and done.get("consumed") == consumed:
            log.info("stage %s: done before, loaded %s", name, stage_dir / DONE)
            self.result.skipped.append(name)
            self.result.outputs[name] = done
            return
        if done is not None:
            changed = sorted(
                k for k in consumed if (done.get("consumed") or {}).get(k) != consumed[k]
            )
            log.warning("stage %s: its inputs changed (%s): running it again", name, changed)
        log.info("stage %s: running in %s", name, stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        payload = fn(stage_dir)
        self.result.outputs[name] = _write_done(stage_dir, {**payload, "consumed": consumed})
        self.result.ran.append(name)

    def search_study(self) -> Any:
        """The main search's study (run here, or loaded from its storage)."""
        import sigtune

        study = self.result.studies.get("search")
        if study is None:
            search = self.cfg.search
            study = sigtune.load_study(
                search.study_name or "search",
                search.storage or str(self.run_dir / "search" / "study.journal"),
            )
            self.result.studies["search"] = study
        return study

    def study_record(self) -> dict[str, Any]:
        """Which study selection reads: name, finished trials and best trial."""
        import optuna

        try:
            study = self.search_study()
        except Exception:  # no study yet: selection cannot run, nothing to compare
            return {"study": None}
        finished = study.optuna.get_trials(
            deepcopy=False,
            states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED),
        )
        try:
            best: int | None = int(study.optuna.best_trial.number)
        except ValueError:
            best = None
        return {
            "study": study.optuna.study_name,
            "n_finished": len(finished),
            "best_trial": best,
        }

    def features(self) -> list[str]:
        out = self.result.outputs.get("varsel")
        return list(out["selected"]) if out else list(self.data.features)

    def run_before_search(self) -> None:
        """The stages before the main search: ``presearch`` and ``varsel``."""
        cfg = self.cfg
        self.stage(
            "presearch",
            cfg.presearch.enabled,
            lambda d: self.search("presearch", cfg.presearch, cfg.search_space, d),
        )
        self.stage("varsel", cfg.varsel.enabled, self.varsel)

    def run_after_search(self) -> None:
        """The stages after the main search: ``selection``, ``cv`` and ``evaluation``."""
        cfg = self.cfg
        has_search = cfg.search.enabled or "search" in self.result.studies
        self.stage("selection", cfg.selection.enabled and has_search, self.selection)
        self.stage("pbt", cfg.pbt is not None and cfg.pbt.enabled, self.pbt)
        self.stage("cv", cfg.cv.enabled, self.cv)
        self.stage("evaluation", cfg.evaluation.enabled, self.evaluation)

    # -- stages
    def search(
        self, name: str, stage: SearchStage, space: Mapping[str, Any], stage_dir: Path
    ) -> dict[str, Any]:
        from sigtune._settings import RunSettings
        from sigtune._space import SearchSpace
        from sigtune._study import bind_objective, run_study

        data = self.data.select_features(self.features())
        splits = make_split(data, self.cfg.split, self.cfg.seed)
        objective = TrialObjective(
            self.factory,
            splits.train,
            splits.val,
            self.cfg.monitor,
            seed=self.cfg.seed,
            checkpoint_root=stage_dir / "checkpoints" if stage.checkpoints else None,
            trial_value=self.cfg.trial_value,
            direction=self.direction,
            overtraining=self.cfg.selection.overtraining,
        )
        settings = RunSettings(
            n_trials=stage.n_trials,
            direction=self.direction,
            sampler=stage.sampler.name,
            sampler_options=stage.sampler.options,
            pruner=stage.pruner.name,
            pruner_options=stage.pruner.options,
            seed=self.cfg.seed,
            storage=stage.storage,
            study_name=stage.study_name or name,
            run_dir=stage_dir,
            n_jobs=stage.n_jobs,
            timeout=stage.timeout,
            on_stale_running=stage.on_stale_running,
        )
        search_space = SearchSpace.from_dict(dict(split_mutable(space)[0]))
        study = run_study(bind_objective(objective, search_space), settings, space=search_space)
        self.result.studies[name] = study
        return {"features": list(data.features), **_search_summary(study)}

    def varsel(self, stage_dir: Path) -> dict[str, Any]:
        from sigtune._config import resolve_callable
        from sigtune.pipelines.ml._cv import cross_validate
        from sigtune.pipelines.ml._splits import kfold_splits
        from sigtune.pipelines.ml._varsel import select_variables

        st = self.cfg.varsel
        pre = self.result.outputs.get("presearch")
        params = dict(pre["best_params"]) if pre else dict(st.params)
        splits = make_split(self.data, self.cfg.split, self.cfg.seed)
        from sigtune.pipelines.ml._data import EventData

        pool = EventData.concatenate([splits.train, splits.val])  # the test set stays unseen
        custom = None
        if st.mode == "custom":
            if st.custom is None:
                raise ConfigError("varsel.mode: custom needs varsel.custom: 'module:function'")
            custom = resolve_callable(st.custom, self.cfg.base_dir)
        cv = None
        folds = None
        if st.mode != "custom":
            folds = kfold_splits(pool, k=st.k, test="none", seed=self.cfg.seed)
            if st.mode in ("shuffle", "hybrid"):
                cv = cross_validate(
                    pool,
                    params,
                    trainable=self.factory,
                    folds=folds,
                    metrics=(st.metric,),
                    seed=self.cfg.seed,
                    out_dir=stage_dir / "cv_models",
                )
        res = select_variables(
            pool,
            trainable=self.factory,
            params=params,
            mode=st.mode,
            metric=st.metric,
            folds=folds,
            cv=cv,
            custom=custom,
            num_repeats=st.num_repeats,
            acceptance=st.acceptance,
            max_rel_change=st.max_rel_change,
            patience=st.patience,
            reevaluate=st.reevaluate,
            choose=st.choose,
            min_variables=min(st.min_variables, len(pool.features)),
            seed=self.cfg.seed,
            groups=st.groups,
            final_retrain=st.final_retrain,
        )
        _plot_varsel(res, stage_dir)
        return {"params": params, **res.to_dict()}

    def selection(self, stage_dir: Path) -> dict[str, Any]:
        from sigtune.pipelines.ml._selection import select_trials

        st = self.cfg.selection
        study = self.search_study()
        res = select_trials(
            study,
            target=st.target or self.cfg.monitor,
            direction=self.direction,
            overtraining=st.overtraining,
            n_select=st.n_select,
            min_epochs=st.min_epochs,
            min_r2=st.min_r2,
            include_pruned=st.include_pruned,
        )
        picks = {
            "both": res.selected(),
            "best_value": list(res.best_value),
            "best_fit": list(res.best_fit),
        }[st.use]
        if not picks:
            picks = list(res.best_value[:1])
        if not picks:
            raise ConfigError(
                "trial selection found no eligible trial: did every trial fail or get pruned?"
            )
        return {**res.to_dict(), "selected": [p.to_dict() for p in picks]}

    def pbt(self, stage_dir: Path) -> dict[str, Any]:
        from sigtune.pipelines.ml._pbt import initial_population, run_pbt

        st = self.cfg.pbt
        assert st is not None
        space = getattr(self.cfg, "search_space", {}) or {}
        clean, marked = split_mutable(space)
        mutations = {**marked, **st.mutations}
        ranked: list[dict[str, Any]] = []
        if st.init == "top_k":
            ranked = self._ranked_search_params()
        picks = self.selected_params()
        best = picks[0][1] if picks and picks[0][0] != "default" else None
        members = initial_population(
            st, best=best, ranked=ranked, space=clean, mutations=mutations, seed=self.cfg.seed
        )
        data = self.data.select_features(self.features())
        splits = make_split(data, self.cfg.split, self.cfg.seed)
        return run_pbt(
            st,
            factory=self.factory,
            train=splits.train,
            val=splits.val,
            monitor=self.cfg.monitor,
            direction=self.direction,
            members=members,
            mutations=mutations,
            seed=self.cfg.seed,
            stage_dir=stage_dir,
        )

    def _ranked_search_params(self) -> list[dict[str, Any]]:
        import optuna

        import sigtune

        study = self.result.studies.get("search")
        if study is None:
            search = self.cfg.search
            study = sigtune.load_study(
                search.study_name or "search",
                search.storage or str(self.run_dir / "search" / "study.journal"),
            )
        done = [
            t
            for t in study.optuna.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
        ]
        sign = 1.0 if self.direction == "minimize" else -1.0
        done.sort(key=lambda t: sign * float(t.value or 0.0))
        return [dict(t.user_attrs.get("params") or t.params) for t in done]

    def selected_params(self) -> list[tuple[str, dict[str, Any], int | None]]:
        """``(label, params, selected epoch or None)`` of the trials to cross-validate."""
        pbt = self.result.outputs.get("pbt")
        if pbt is not None:  # the PBT winner's schedule replaces the selected trials
            return [("pbt_winner", dict(pbt["params"]), None)]
        sel = self.result.outputs.get("selection")
        if sel is not None:
            return [
                (f"trial_{s['number']}", dict(s["params"]), int(s["epoch"]))
                for s in sel["selected"]
            ]
        for name in ("search", "presearch"):
            out = self.result.outputs.get(name)
            if out is not None:
                epoch = out.get("best_epoch")
                return [
                    (
                        f"trial_{out['best_trial']}",
                        dict(out["best_params"]),
                        None if epoch is None else int(epoch),
                    )
                ]
        return [("default", dict(self.cfg.varsel.params), None)]

    def cross_validate(self, label: str, params: Mapping[str, Any], epoch: int | None) -> Any:
        """Cross-validate one parameter set into ``cv/<label>/`` (saved folds are loaded).

        Each fold trains for the selected ``epoch`` epochs unless ``cv.early_stopping`` is on
        (or no epoch was selected).
        """
        from sigtune.pipelines.ml._cv import cross_validate

        st = self.cfg.cv
        return cross_validate(
            self.data.select_features(self.features()),
            params,
            trainable=self.factory,
            k=st.k,
            test=st.test,
            test_fraction=st.test_fraction,
            by=st.by,
            metrics=st.metrics,
            how=st.aggregate,
            seed=self.cfg.seed,
            out_dir=self.run_dir / "cv" / label,
            epochs=None if st.early_stopping else epoch,
        )

    def cv(self, stage_dir: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        finalize = self.hook(self.cfg.cv.finalize)
        for label, params, epoch in self.selected_params():
            res = self.cross_validate(label, params, epoch)
            out[label] = {**res.to_dict(), "summary": res.summary()}
            if finalize is not None:
                finalize([f.model for f in res.folds], stage_dir / label)
        return {"trials": out}

    def hook(self, ref: str | None) -> Callable[..., Any] | None:
        """A user hook ``'module:function'`` (relative files start at the config's folder)."""
        if ref is None:
            return None
        from sigtune._config import resolve_callable

        return resolve_callable(ref, self.cfg.base_dir)

    def evaluation(self, stage_dir: Path) -> dict[str, Any]:
        from sigtune.pipelines.ml._cv import FoldResult
        from sigtune.pipelines.ml._evaluate import (
            evaluate,
            plot_history,
            plot_inputs,
            write_overview,
        )

        st = self.cfg.evaluation
        data = self.data.select_features(self.features())
        cv_out = self.result.outputs.get("cv")
        out: dict[str, Any] = {}
        sections: dict[str, list[Path]] = {
            "input variables per class": [
                plot_inputs(data, stage_dir / "inputs.png", class_names=st.class_names)
            ]
        }
        for label, params, epoch in self.selected_params():
            folds: list[FoldResult]
            if cv_out is not None and label in cv_out["trials"]:
                # loads the saved fold models, no retraining
                folds = list(self.cross_validate(label, params, epoch).folds)
            else:  # no cross-validation: train once on the search split
                splits = make_split(data, self.cfg.split, self.cfg.seed)
                model = self.factory(seed=self.cfg.seed)
                model.fit(splits.train, splits.val, params)
                folds = [FoldResult(0, model, splits, {}, {}, None)]
            all_folds = list(folds)
            if st.folds == "first":
                folds = folds[:1]
            out[label] = {}
            for f in folds:
                res = evaluate(
                    f.model,
                    f.split,
                    stage_dir / label / f"fold_{f.fold}",
                    metrics=st.metrics,
                    class_names=st.class_names,
                    bins=st.bins,
                )
                out[label][f"fold_{f.fold}"] = {
                    "metrics": res.metrics,
                    "auc": {k: r.auc for k, r in res.roc.items()},
                    "files": [str(p) for p in res.files],
                }
                sections.setdefault(f"{label}: outputs and ROC", []).extend(
                    p for p in res.files if str(p).endswith(".png")
                )
            hook = self.hook(st.hook)
            if hook is not None:
                models, splits = [f.model for f in all_folds], [f.split for f in all_folds]
                custom = hook(models, splits, stage_dir / label)
                out[label]["custom"] = _jsonable(dict(custom or {}))
            history = self.trial_history(label) or (folds[0].history if folds else {})
            if history:
                sections[f"{label}: training history"] = [
                    plot_history(
                        history,
                        stage_dir / label / "history.png",
                        target=self.cfg.selection.target or self.cfg.monitor,
                        title=f"{label} (search)",
                        selected_epoch=epoch,
                    )
                ]
        overview = write_overview(stage_dir, sections, out)
        return {"trials": out, "overview": str(overview)}

    def trial_history(self, label: str) -> dict[str, list[float]] | None:
        """Per-epoch metrics a search trial stored (``trial_<n>`` of the main search)."""
        from sigtune.pipelines.ml._selection import HISTORY_ATTR

        if not label.startswith("trial_") or not self.cfg.search.enabled:
            return None
        try:
            trial = self.search_study().optuna.trials[int(label[6:])]
        except Exception:  # no study, or not this trial: no history plot
            return None
        history = trial.user_attrs.get(HISTORY_ATTR)
        return dict(history) if isinstance(history, Mapping) else None


def _digest(obj: Any) -> str:
    """A short stable hash of a JSON-able object (what a stage consumed)."""
    import hashlib

    text = json.dumps(_jsonable(obj), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_trainable(spec: Any) -> None:
    """Build the trainable once: an unknown kind or option fails at config load."""
    try:
        spec(seed=0)
    except ConfigError as exc:
        raise ConfigError(f"trainable: {exc}") from None


def _plot_varsel(res: Any, stage_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = res.history
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [it.iteration for it in its]
    y = [it.metric for it in its]
    ax.errorbar(x, y, yerr=[it.metric_err for it in its], color="grey", linewidth=1, capsize=2)
    ax.scatter(x, y, c=["tab:green" if it.accepted else "tab:red" for it in its], zorder=3)
    for it in its:
        if it.dropped:
            ax.annotate(f"-{it.dropped}", (it.iteration, it.metric), fontsize=7, rotation=45)
    ax.set(xlabel="iteration", ylabel=res.metric_name, title="variable selection (green: accepted)")
    save_tight(fig, stage_dir / "varsel.png", dpi=100)
    plt.close(fig)
    for it in its:  # one plot per iteration: the metric without each candidate, per-fold sigma
        if not it.candidates:
            continue
        names = list(it.candidates)
        fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 2), 3.5))
        ax.bar(
            names,
            [it.candidates[n] for n in names],
            yerr=[it.candidates_err.get(n, 0.0) for n in names],
            color=["tab:orange" if n == it.dropped else "tab:blue" for n in names],
            capsize=2,
        )
        ax.set(ylabel=f"{res.metric_name} without", title=f"iteration {it.iteration} ({it.mode})")
        ax.tick_params(axis="x", rotation=45)
        lo = min(it.candidates[n] - it.candidates_err.get(n, 0.0) for n in names)
        hi = max(it.candidates[n] + it.candidates_err.get(n, 0.0) for n in names)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
        save_tight(fig, stage_dir / f"iteration_{it.iteration}.png", dpi=80)
        plt.close(fig)


def run_pipeline(config: PipelineConfig | Mapping[str, Any] | str | Path) -> PipelineResult:
    """Run (or resume) the whole pipeline.

    Args:
        config: A :class:`PipelineConfig`, its mapping, or the path of a YAML file.

    Returns:
        Which stages ran or were loaded, and every stage's outputs.

    Raises:
        ConfigError: For an invalid config or when a stage cannot run (e.g. no trial completed).
    """
    cfg = config if isinstance(config, PipelineConfig) else load_pipeline_config(config)
    runner = _Runner(cfg)
    run_dir = runner.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    dumped = cfg.model_dump(mode="json", exclude={"base_dir"})
    cfg_file = run_dir / "pipeline_config.json"
    if cfg_file.is_file() and json.loads(cfg_file.read_text()) != dumped:
        log.warning(
            "%s differs from the current config: the stages whose inputs changed run again "
            "(a search stage continues its study up to n_trials)",
            cfg_file,
        )
    cfg_file.write_text(json.dumps(dumped, indent=2))

    if (cfg.presearch.enabled or cfg.search.enabled) and not cfg.search_space:
        raise ConfigError(
            "search_space is empty: give the hyperparameters to tune (or disable the searches)"
        )
    runner.run_before_search()
    runner.stage(
        "search",
        cfg.search.enabled,
        lambda d: runner.search("search", cfg.search, cfg.search_space, d),
    )
    runner.run_after_search()
    return runner.result
