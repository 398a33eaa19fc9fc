"""The ``objective: {type: ml, ...}`` run-config section: the ML pipeline under ``sigtune run``.

A run-config with this section tunes a classifier with the core's study runner::

    study_name: mlp
    n_trials: 30                 # the main search
    sampler: tpe
    pruner: {name: successive_halving, options: {min_resource: 2}}
    seed: 1
    search_space: {num_layers: {type: range, value_type: int, bounds: [1, 3]}, ...}
    objective:
      type: ml
      data: {generate: {n_events: 6000, n_noise: 6}}
      trainable: {kind: mlp, options: {metrics: [auc]}}
      monitor: val_loss
      presearch: {n_trials: 10}
      varsel: {mode: shuffle}
      cv: {k: 3}

The section holds every field of :class:`~sigtune.pipelines.ml.PipelineConfig` except those the
run-config already has (``run_dir``, ``seed``, ``search_space`` and the main search's
``n_trials`` / ``sampler`` / ``pruner`` / ``n_jobs`` / ``timeout``). ``sigtune run`` then

1. runs (or loads) the ``presearch`` and ``varsel`` stages when it builds the objective,
2. runs the main search as the study of the run (in the run's storage), each trial training the
   model on the selected variables and reporting every epoch to the pruner,
3. runs ``selection``, ``cv`` and ``evaluation`` after the search (``after_run``).

The same file also runs with ``python -m sigtune.pipelines.ml config.yaml`` (all six stages by
the pipeline runner). Both commands use the same folders and the same main-search study (the
run's ``storage``, by default ``<run_dir>/study.journal``), so either one resumes a run started
by the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field

from sigtune._config import ObjectiveSpec, RunConfig, register_objective_type
from sigtune.pipelines.ml._pipeline import (
    PipelineBody,
    PipelineConfig,
    TrialObjective,
    _Runner,
    make_split,
)

__all__ = ["MLObjectiveConfig", "ml_objective", "pipeline_config_from_run"]


class MLObjectiveConfig(PipelineBody):
    """``objective: {type: ml, ...}`` (see the module docstring)."""

    type: Literal["ml"] = Field("ml", description="The objective type.")
    checkpoints: bool = Field(
        False, description="Per-epoch checkpoints of the main search's trials (resume a trial)."
    )


def pipeline_config_from_run(section: MLObjectiveConfig, config: RunConfig) -> PipelineConfig:
    """The :class:`PipelineConfig` equivalent to a run-config with a ``type: ml`` objective."""
    body = section.model_dump(exclude={"type", "checkpoints"})
    return PipelineConfig.model_validate(
        {
            **body,
            "run_dir": Path(config.run_dir) if config.run_dir is not None else Path("runs/ml"),
            "seed": 0 if config.seed is None else int(config.seed),
            "search_space": dict(config.search_space or {}),
            "search": {
                "n_trials": config.n_trials,
                "sampler": {"name": config.sampler.name, "options": dict(config.sampler.options)},
                "pruner": {"name": config.pruner.name, "options": dict(config.pruner.options)},
                "n_jobs": config.n_jobs,
                "timeout": config.timeout,
                "checkpoints": section.checkpoints,
                "on_stale_running": config.on_stale_running,
                # the same study as `sigtune run` (core default: <run_dir>/study.journal)
                "storage": config.storage or str(Path(str(config.run_dir)) / "study.journal"),
                "study_name": config.study_name,
            },
            "base_dir": config.base_dir,
        }
    )


class _SpaceObjective:
    """Optuna-style ``fn(trial)`` around a :class:`TrialObjective` and the run's search space."""

    def __init__(self, objective: TrialObjective, space: Any) -> None:
        self.objective = objective
        self.space = space

    def __call__(self, trial: Any) -> float:
        return self.objective(self.space.suggest(trial), trial)


def ml_objective(section: MLObjectiveConfig, config: RunConfig) -> ObjectiveSpec:
    """Factory of the ``ml`` objective type (registered with the core).

    Runs the ``presearch`` and ``varsel`` stages (resumable, in ``<run_dir>/presearch`` and
    ``<run_dir>/varsel``), then returns the main-search objective and an ``after_run`` that runs
    ``selection``, ``cv`` and ``evaluation``.
    """
    from sigtune._exceptions import ConfigError

    if config.space is None:
        raise ConfigError("objective type ml needs a search_space with the hyperparameters to tune")
    if config.directions is not None and len(config.directions) != 1:
        raise ConfigError("objective type ml is single-objective: remove `directions`")
    pcfg = pipeline_config_from_run(section, config)
    runner = _Runner(pcfg)
    runner.run_dir.mkdir(parents=True, exist_ok=True)
    runner.run_before_search()
    data = runner.data.select_features(runner.features())
    splits = make_split(data, pcfg.split, pcfg.seed)
    objective = TrialObjective(
        runner.factory,
        splits.train,
        splits.val,
        pcfg.monitor,
        seed=pcfg.seed,
        checkpoint_root=runner.run_dir / "search" / "checkpoints" if section.checkpoints else None,
        trial_value=pcfg.trial_value,
        direction=runner.direction,
        overtraining=pcfg.selection.overtraining,
    )
    direction = config.direction or runner.direction

    def after_run(study: Any, run_dir: Path) -> str:
        runner.result.studies["search"] = study
        runner.run_after_search()
        return _summary(runner.result.outputs, runner.result.ran)

    return ObjectiveSpec(
        objective=_SpaceObjective(objective, config.space),
        directions=[direction],
        space=config.space,
        # the CLI prints (and puts into --json output) the text after_run returns
        after_run=cast(Callable[[Any, Path], None], after_run),
    )


def _summary(outputs: dict[str, Any], ran: Sequence[str]) -> str:
    lines = [f"ML pipeline stages run: {', '.join(ran) or 'none (all done before)'}"]
    if "varsel" in outputs:
        lines.append(f"selected variables: {', '.join(outputs['varsel']['selected'])}")
    if "cv" in outputs:
        for label, res in outputs["cv"]["trials"].items():
            shown = {k: v for k, v in res["summary"].items() if k.startswith("test_")}
            lines.append(f"cross-validated {label}: {shown}")
    return "\n".join(lines)


register_objective_type("ml", MLObjectiveConfig, ml_objective)
