"""The ``tracking:`` section of a run-config (validated here; used by
:mod:`sigtune.reports._tracking`, which imports MLflow / W&B only when a run uses them).

Example::

    tracking:
      mlflow: {}                     # run_dir/mlflow.db, experiment = study name
      wandb: {project: my-analysis}  # offline, files in run_dir/wandb
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MlflowTrackingConfig", "TrackingConfig", "WandbTrackingConfig"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MlflowTrackingConfig(_Model):
    """One MLflow run per trial: parameters, intermediate values, final values."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; null = a local store, sqlite:///<run_dir>/mlflow.db.",
    )
    experiment: str | None = Field(None, description="Experiment name (default: study name).")
    artifacts: bool = Field(True, description="Log the run's outputs on the best trial's run.")


class WandbTrackingConfig(_Model):
    """One W&B run per trial (offline by default: nothing leaves the machine)."""

    project: str | None = Field(None, description="W&B project (default: study name).")
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"
    group: str | None = Field(None, description="Run group (default: study name).")
    artifacts: bool = Field(True, description="Log the run's outputs on the best trial's run.")


class TrackingConfig(_Model):
    """Experiment tracking of a run (``tracking:`` in the run-config)."""

    mlflow: MlflowTrackingConfig | None = None
    wandb: WandbTrackingConfig | None = None
