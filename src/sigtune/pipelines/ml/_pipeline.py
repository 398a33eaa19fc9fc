"""The ML tuning pipeline: one config, six stages, resumable.

Stages, in OPTIMA's order (each can be switched off with ``enabled: false``):

1. ``presearch`` — a hyperparameter search (any sampler/pruner of the core; pruners act on the
   per-epoch reports of the trainable) with all input variables;
2. ``varsel`` — input-variable selection with the pre-search's best hyperparameters
   (:func:`~sigtune.pipelines.ml.select_variables`);
3. ``search`` — the main hyperparameter search with the selected variables;
4. ``selection`` — best-value and best-fit trial selection on the main search
   (:func:`~sigtune.pipelines.ml.select_trials`);
5. ``cv`` — cross-validation of the selected trials (:func:`~sigtune.pipelines.ml.cross_validate`);
6. ``evaluation`` — plots and metrics of the cross-validated models
   (:func:`~sigtune.pipelines.ml.evaluate`).

Every stage writes into its own folder ``<run_dir>/<stage>/`` and finishes by writing
``done.json`` (its outputs: best params, selected variables, selected trials...). A later run
with the same ``run_dir`` skips the stages that have ``done.json`` and continues with the first
one that has not; a search stage resumes its own study (``study.journal`` in its folder) up to
its ``n_trials``. Delete a stage folder to redo it (and the stages after it, whose inputs change).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sigtune._exceptions import ConfigError

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
STAGES = ("presearch", "varsel", "search", "selection", "cv", "evaluation")
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
    metric: str = "weighted_loss"
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


class CVStage(_Model):
    """``cv:`` cross-validation of the selected trials."""

    enabled: bool = True
    k: int = Field(5, ge=2)
    test: Literal["fixed", "rotating"] = "fixed"
    test_fraction: float = Field(0.2, gt=0, lt=1)
    by: Literal["random", "event_number"] = "random"
    aggregate: Literal["mean", "median"] = "mean"
    metrics: list[str] = Field(default_factory=lambda: ["weighted_loss", "auc", "accuracy"])


class EvaluationStage(_Model):
    """``evaluation:`` plots and metrics table of the cross-validated models."""

    enabled: bool = True
    metrics: list[str] = Field(default_factory=lambda: ["weighted_loss", "auc", "accuracy"])
    class_names: list[str] | None = None
    bins: int = Field(40, ge=2)
    folds: Literal["first", "all"] = "first"


class PipelineBody(_Model):
    """Fields shared by :class:`PipelineConfig` and the ``objective: {type: ml}`` section."""

    data: DataSection
    split: SplitSection = Field(default_factory=lambda: SplitSection.model_validate({}))
    trainable: TrainableSection = Field(default_factory=lambda: TrainableSection.model_validate({}))
    monitor: str = Field("val_loss", description="History metric the searches optimise.")
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="Default: the monitored metric's direction."
    )
    presearch: SearchStage = Field(
        default_factory=lambda: SearchStage.model_validate({"n_trials": 10})
    )
    varsel: VarSelStage = Field(default_factory=lambda: VarSelStage.model_validate({}))
    selection: SelectionStage = Field(default_factory=lambda: SelectionStage.model_validate({}))
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

        SearchSpace.from_dict(value)  # SearchSpaceError (a ConfigError) names the parameter
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
    from sigtune.pipelines.ml._data import EventData, load_data

    if section.generate is not None:
        from sigtune.pipelines.ml._generate import make_hep_dataset

        data = make_hep_dataset(**section.generate)
        return data if section.features is None else data.select_features(section.features)
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
        return data if section.features is None else data.select_features(section.features)
    assert section.source is not None
    path = Path(section.source)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return load_data(
        path,
        features=section.features,
        target=section.target,
        weight=section.weight,
        event_number=section.event_number,
        allow_pickle=section.allow_pickle,
        tree=section.tree,
        classes=section.classes,
    )


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
    ) -> None:
        self.factory = factory
        self.train = train
        self.val = val
        self.monitor = monitor
        self.seed = seed
        self.checkpoint_root = checkpoint_root

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
        value = history.best(self.monitor)
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
        self.data = load_events(cfg.data, cfg.base_dir)
        self.result = PipelineResult(self.run_dir)

    # -- bookkeeping
    def stage(self, name: str, enabled: bool, fn: Callable[[Path], dict[str, Any]]) -> None:
        stage_dir = self.run_dir / name
        if not enabled:
            log.info("stage %s: off", name)
            return
        done = _read_done(stage_dir)
        if done is not None:
            log.info("stage %s: done before, loaded %s", name, stage_dir / DONE)
            self.result.skipped.append(name)
            self.result.outputs[name] = done
            return
        log.info("stage %s: running in %s", name, stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        payload = fn(stage_dir)
        self.result.outputs[name] = _write_done(stage_dir, payload)
        self.result.ran.append(name)

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
        search_space = SearchSpace.from_dict(dict(space))
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
        )
        _plot_varsel(res, stage_dir)
        return {"params": params, **res.to_dict()}

    def selection(self, stage_dir: Path) -> dict[str, Any]:
        import sigtune
        from sigtune.pipelines.ml._selection import select_trials

        st = self.cfg.selection
        study = self.result.studies.get("search")
        if study is None:
            search = self.cfg.search
            study = sigtune.load_study(
                search.study_name or "search",
                search.storage or str(self.run_dir / "search" / "study.journal"),
            )
        res = select_trials(
            study,
            target=st.target or self.cfg.monitor,
            direction=self.direction,
            overtraining=st.overtraining,
            n_select=st.n_select,
            min_epochs=st.min_epochs,
            min_r2=st.min_r2,
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

    def selected_params(self) -> list[tuple[str, dict[str, Any]]]:
        sel = self.result.outputs.get("selection")
        if sel is not None:
            return [(f"trial_{s['number']}", dict(s["params"])) for s in sel["selected"]]
        for name in ("search", "presearch"):
            out = self.result.outputs.get(name)
            if out is not None:
                return [(f"trial_{out['best_trial']}", dict(out["best_params"]))]
        return [("default", dict(self.cfg.varsel.params))]

    def cross_validate(self, label: str, params: Mapping[str, Any]) -> Any:
        """Cross-validate one parameter set into ``cv/<label>/`` (saved folds are loaded)."""
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
        )

    def cv(self, stage_dir: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for label, params in self.selected_params():
            res = self.cross_validate(label, params)
            out[label] = {**res.to_dict(), "summary": res.summary()}
        return {"trials": out}

    def evaluation(self, stage_dir: Path) -> dict[str, Any]:
        from sigtune.pipelines.ml._cv import FoldResult
        from sigtune.pipelines.ml._evaluate import evaluate

        st = self.cfg.evaluation
        data = self.data.select_features(self.features())
        cv_out = self.result.outputs.get("cv")
        out: dict[str, Any] = {}
        for label, params in self.selected_params():
            folds: list[FoldResult]
            if cv_out is not None and label in cv_out["trials"]:
                # loads the saved fold models, no retraining
                folds = list(self.cross_validate(label, params).folds)
            else:  # no cross-validation: train once on the search split
                splits = make_split(data, self.cfg.split, self.cfg.seed)
                model = self.factory(seed=self.cfg.seed)
                model.fit(splits.train, splits.val, params)
                folds = [FoldResult(0, model, splits, {}, {}, None)]
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
        return {"trials": out}


def _plot_varsel(res: Any, stage_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = res.history
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [it.iteration for it in its]
    y = [it.metric for it in its]
    ax.plot(x, y, color="grey", linewidth=1)
    ax.scatter(x, y, c=["tab:green" if it.accepted else "tab:red" for it in its], zorder=3)
    for it in its:
        if it.dropped:
            ax.annotate(f"-{it.dropped}", (it.iteration, it.metric), fontsize=7, rotation=45)
    ax.set(xlabel="iteration", ylabel=res.metric_name, title="variable selection (green: accepted)")
    fig.tight_layout()
    fig.savefig(stage_dir / "varsel.png", dpi=100)
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
            "%s differs from the current config: finished stages are reused as they are; "
            "delete a stage folder to redo it",
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
