"""Experiment tracking: MLflow and Weights & Biases callbacks with Optuna's signature.

Each callback is called as ``callback(study, frozen_trial)`` once a trial has finished, like the
callbacks of :meth:`optuna.Study.optimize`, and records one tracking run per trial: its
parameters, intermediate values (as a metric with steps), per-epoch metrics of ML trials (the
``history`` user attr), its final value(s), state and user attrs. After the run,
:meth:`log_artifacts` attaches the run's outputs (the best workspace JSON, the report) to the best
trial's run.

MLflow writes to ``sqlite:///<run_dir>/mlflow.db`` by default (MLflow 3 keeps its plain-file
store in maintenance mode; the SQLite file is its local store) with artefacts in
``<run_dir>/mlartifacts``; W&B runs offline by default, in ``<run_dir>/wandb``.

Example::

    callbacks = build_tracking_callbacks(cfg.tracking, run_dir=run_dir, study_name="demo")
    study.optimize(objective, n_trials=20, callbacks=callbacks)
    for cb in callbacks:
        cb.log_artifacts(study, [run_dir / "report.html"])
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from sigtune._exceptions import ConfigError
from sigtune._tracking_config import (
    MlflowTrackingConfig,
    TrackingConfig,
    WandbTrackingConfig,
)

__all__ = [
    "MLflowCallback",
    "TrackingCallback",
    "WandbCallback",
    "build_tracking_callbacks",
    "replay_trials",
]

log = logging.getLogger(__name__)

HISTORY_ATTR = "history"
TRIAL_NUMBER_TAG = "sigtune.trial_number"


def _value_names(n: int) -> list[str]:
    return ["value"] if n == 1 else [f"value_{i}" for i in range(n)]


def _scalar_params(trial: FrozenTrial) -> dict[str, Any]:
    return {k: v for k, v in trial.params.items()}


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(float(x))


def _best_trial(study: Any) -> FrozenTrial | None:
    ostudy = getattr(study, "optuna", study)
    try:
        if len(ostudy.directions) == 1:
            best: FrozenTrial = getattr(study, "best_trial", None) or ostudy.best_trial
            return best
        front: list[FrozenTrial] = ostudy.best_trials
        return front[0] if front else None
    except (ValueError, RuntimeError):
        return None


class TrackingCallback:
    """Base of the tracking callbacks: ``callback(study, frozen_trial)``."""

    def __call__(self, study: Any, trial: FrozenTrial) -> None:
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            return
        try:
            self.log_trial(getattr(study, "optuna", study), trial)
        except Exception as exc:  # tracking must never stop an optimisation
            log.warning(
                "%s: trial %d not logged: %s: %s",
                type(self).__name__,
                trial.number,
                type(exc).__name__,
                exc,
            )

    def log_trial(self, study: Any, trial: FrozenTrial) -> None:
        raise NotImplementedError

    def log_artifacts(self, study: Any, paths: Iterable[str | Path]) -> None:
        """Attach existing files to the best trial's tracking run."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush everything to disk (call once after the run)."""


class MLflowCallback(TrackingCallback):
    """One MLflow run per trial (experiment = the study name by default).

    Args:
        tracking_uri: MLflow tracking URI; ``None`` = ``sqlite:///<run_dir>/mlflow.db``.
        experiment: Experiment name (default: the study's name).
        run_dir: Where the default store and artefacts live.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        *,
        run_dir: str | Path = ".",
    ) -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "tracking: mlflow needs MLflow: pip install 'sigtune[tracking]'"
            ) from exc
        self.run_dir = Path(run_dir).resolve()
        self.tracking_uri = tracking_uri or f"sqlite:///{self.run_dir / 'mlflow.db'}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.experiment = experiment
        self._client_obj: Any = None
        self._experiment_id: str | None = None
        self._runs: dict[int, str] = {}

    @property
    def _client(self) -> Any:
        # created on first use: with n_jobs > 1 each worker process opens its own connection
        if self._client_obj is None:
            from mlflow.tracking import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)
            logging.getLogger("alembic").setLevel(logging.WARNING)
            self._client_obj = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client_obj

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client_obj": None}

    def _experiment_for(self, study: Any) -> str:
        if self._experiment_id is None:
            name = self.experiment or study.study_name
            found = self._client.get_experiment_by_name(name)
            if found is not None:
                self._experiment_id = str(found.experiment_id)
            else:
                artifacts = (self.run_dir / "mlartifacts").as_uri()
                self._experiment_id = str(
                    self._client.create_experiment(name, artifact_location=artifacts)
                )
        return self._experiment_id

    def log_trial(self, study: Any, trial: FrozenTrial) -> None:
        from mlflow.entities import Metric, Param, RunTag

        client = self._client
        run = client.create_run(
            self._experiment_for(study),
            run_name=f"trial-{trial.number}",
            tags={
                TRIAL_NUMBER_TAG: str(trial.number),
                "sigtune.study": study.study_name,
                "sigtune.state": trial.state.name,
            },
        )
        run_id = run.info.run_id
        self._runs[trial.number] = run_id
        when = trial.datetime_complete or trial.datetime_start
        stamp = int(when.timestamp() * 1000) if when is not None else 0
        params = [Param(k, str(v)[:6000]) for k, v in _scalar_params(trial).items()]
        metrics = [
            Metric("intermediate_value", float(v), stamp, int(step))
            for step, v in sorted(trial.intermediate_values.items())
            if _finite(v)
        ]
        history = trial.user_attrs.get(HISTORY_ATTR)
        if isinstance(history, Mapping):
            for name, values in history.items():
                if isinstance(values, Sequence):
                    metrics += [
                        Metric(str(name), float(v), stamp, epoch)
                        for epoch, v in enumerate(values)
                        if _finite(v)
                    ]
        if trial.values:
            metrics += [
                Metric(n, float(v), stamp, 0)
                for n, v in zip(_value_names(len(trial.values)), trial.values, strict=True)
                if _finite(v)
            ]
        tags = [
            RunTag(f"attr.{k}", str(v)[:5000])
            for k, v in trial.user_attrs.items()
            if k != HISTORY_ATTR
        ]
        for i in range(0, max(len(metrics), 1), 1000):  # MLflow's batch limit
            client.log_batch(
                run_id,
                metrics=metrics[i : i + 1000],
                params=params if i == 0 else [],
                tags=tags if i == 0 else [],
            )
        status = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}.get(
            trial.state, "FAILED"
        )
        client.set_terminated(run_id, status=status)

    def run_id(self, trial_number: int) -> str | None:
        """The MLflow run id of a trial logged by this callback (or found in the experiment)."""
        if trial_number in self._runs:
            return self._runs[trial_number]
        if self._experiment_id is None:
            return None
        found = self._client.search_runs(
            [self._experiment_id], filter_string=f"tags.`{TRIAL_NUMBER_TAG}` = '{trial_number}'"
        )
        return found[0].info.run_id if found else None

    def log_artifacts(self, study: Any, paths: Iterable[str | Path]) -> None:
        best = _best_trial(study)
        if best is None:
            return
        ostudy = getattr(study, "optuna", study)
        self._experiment_for(ostudy)
        run_id = self.run_id(best.number)
        if run_id is None:
            return
        for p in paths:
            path = Path(p)
            if path.is_file():
                self._client.log_artifact(run_id, str(path))


class WandbCallback(TrackingCallback):
    """One W&B run per trial, offline by default (files in ``<run_dir>/wandb``).

    Args:
        project: W&B project (default: the study name).
        mode: ``offline`` (default), ``online`` or ``disabled``.
        run_dir: Parent of the ``wandb`` directory.
    """

    def __init__(
        self,
        project: str | None = None,
        *,
        entity: str | None = None,
        group: str | None = None,
        mode: str = "offline",
        run_dir: str | Path = ".",
    ) -> None:
        try:
            import wandb  # noqa: F401
        except ImportError as exc:
            raise ConfigError("tracking: wandb needs W&B: pip install 'sigtune[tracking]'") from exc
        self.project, self.entity, self.group, self.mode = project, entity, group, mode
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._best_run: dict[int, str] = {}

    def log_trial(self, study: Any, trial: FrozenTrial) -> None:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(
            project=self.project or study.study_name,
            entity=self.entity,
            group=self.group or study.study_name,
            name=f"trial-{trial.number}",
            mode=self.mode,  # type: ignore[arg-type]
            dir=str(self.run_dir),
            config={**_scalar_params(trial), "trial_number": trial.number},
            tags=[trial.state.name.lower()],
            reinit="create_new",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        try:
            for step, v in sorted(trial.intermediate_values.items()):
                if _finite(v):
                    run.log({"intermediate_value": float(v), "step": int(step)})
            history = trial.user_attrs.get(HISTORY_ATTR)
            if isinstance(history, Mapping):
                epochs = max(
                    (len(v) for v in history.values() if isinstance(v, Sequence)), default=0
                )
                for e in range(epochs):
                    row = {
                        str(k): float(v[e])
                        for k, v in history.items()
                        if isinstance(v, Sequence) and e < len(v) and _finite(v[e])
                    }
                    run.log({**row, "epoch": e})
            if trial.values:
                for n, v in zip(_value_names(len(trial.values)), trial.values, strict=True):
                    if _finite(v):
                        run.summary[n] = float(v)
            run.summary["state"] = trial.state.name
            self._best_run[trial.number] = run.dir
        finally:
            run.finish(exit_code=0 if trial.state != TrialState.FAIL else 1)

    def log_artifacts(self, study: Any, paths: Iterable[str | Path]) -> None:
        import wandb

        best = _best_trial(study)
        if best is None:
            return
        ostudy = getattr(study, "optuna", study)
        files = [Path(p) for p in paths if Path(p).is_file()]
        if not files:
            return
        run = wandb.init(
            project=self.project or ostudy.study_name,
            entity=self.entity,
            group=self.group or ostudy.study_name,
            name=f"trial-{best.number}-artifacts",
            mode=self.mode,  # type: ignore[arg-type]
            dir=str(self.run_dir),
            config={"trial_number": best.number},
            job_type="artifacts",
            reinit="create_new",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        try:
            art = wandb.Artifact(f"{ostudy.study_name}-best", type="sigtune-outputs")
            for f in files:
                art.add_file(str(f))
            run.log_artifact(art)
        finally:
            run.finish()

    def close(self) -> None:
        """Stop W&B's background service: every offline run file is complete on disk."""
        import wandb

        wandb.teardown()


def build_tracking_callbacks(
    config: TrackingConfig | Mapping[str, Any] | None,
    *,
    run_dir: str | Path,
) -> list[TrackingCallback]:
    """The callbacks of a run-config's ``tracking:`` section (``[]`` for none)."""
    if config is None:
        return []
    cfg = config if isinstance(config, TrackingConfig) else TrackingConfig.model_validate(config)
    out: list[TrackingCallback] = []
    if cfg.mlflow is not None:
        m: MlflowTrackingConfig = cfg.mlflow
        out.append(MLflowCallback(m.tracking_uri, m.experiment, run_dir=run_dir))
    if cfg.wandb is not None:
        w: WandbTrackingConfig = cfg.wandb
        out.append(
            WandbCallback(w.project, entity=w.entity, group=w.group, mode=w.mode, run_dir=run_dir)
        )
    return out


def replay_trials(
    callbacks: Sequence[TrackingCallback], study: Any, trials: Iterable[FrozenTrial]
) -> None:
    """Call every callback on finished trials after the fact (for engines without a callback
    hook, and for logging an existing study)."""
    ostudy = getattr(study, "optuna", study)
    for trial in trials:
        for cb in callbacks:
            cb(ostudy, trial)
