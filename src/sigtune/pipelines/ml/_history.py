"""Training history, early-stopping / overtraining bookkeeping shared by all trainables."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sigtune import _imports
from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._metrics import Monitor

__all__ = [
    "EarlyStopping",
    "EpochAction",
    "History",
    "OvertrainingCondition",
    "import_object",
    "train_val_gap",
]


@dataclass(frozen=True)
class EpochAction:
    """What a trainable does after reporting an epoch (the return value of ``report``).

    Attributes:
        kind: ``"continue"``; ``"stop"`` (the training ends and counts as pruned);
            ``"checkpoint"`` (save the full training state into ``path`` now, then continue);
            ``"load"`` (replace the training state with the checkpoint at ``path`` -- weights,
            optimiser state, epoch counter, input scaler -- apply ``params`` on top of the
            current hyperparameters, and continue after the checkpoint's epoch).
        path: Checkpoint directory of ``"checkpoint"`` / ``"load"``.
        params: New hyperparameters of ``"load"`` (e.g. ``{"learning_rate": 1e-4}``).

    A bare bool is still accepted from a reporter: True is ``stop``, False/None ``continue``.
    """

    kind: Literal["continue", "stop", "checkpoint", "load"] = "continue"
    path: Path | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("continue", "stop", "checkpoint", "load"):
            raise ConfigError(
                f"EpochAction kind must be continue, stop, checkpoint or load, got {self.kind!r}"
            )
        if self.kind in ("checkpoint", "load") and self.path is None:
            raise ConfigError(f"EpochAction {self.kind!r} needs a checkpoint path")

    @classmethod
    def proceed(cls) -> EpochAction:
        """Continue training."""
        return cls("continue")

    @classmethod
    def stop(cls) -> EpochAction:
        """Stop now (pruned)."""
        return cls("stop")

    @classmethod
    def checkpoint(cls, path: Path | str) -> EpochAction:
        """Save the training state into directory ``path``, then continue."""
        return cls("checkpoint", Path(path))

    @classmethod
    def load(cls, path: Path | str, params: Mapping[str, Any] | None = None) -> EpochAction:
        """Load the checkpoint in ``path``, switch to ``params``, continue."""
        return cls("load", Path(path), dict(params or {}))

    @classmethod
    def of(cls, value: EpochAction | bool | None) -> EpochAction:
        """Normalise a reporter's return value (bool True = stop)."""
        if isinstance(value, EpochAction):
            return value
        return cls("stop") if value else cls("continue")

    @property
    def stops(self) -> bool:
        """True for ``stop``."""
        return self.kind == "stop"


def report_stops(
    report: Reporter | None, epoch: int, metrics: Mapping[str, float], kind: str
) -> bool:
    """Call ``report`` for a trainable that can only continue or stop; True means stop.

    Raises:
        ConfigError: The reporter asked for a checkpoint or a load, which ``kind`` cannot do.
    """
    if report is None:
        return False
    action = EpochAction.of(report(epoch, metrics))
    if action.kind in ("checkpoint", "load"):
        raise ConfigError(
            f"trainable kind {kind!r} cannot {action.kind} during training (only 'mlp', "
            "'torch', 'lightning' and 'keras' can): Population Based Training needs one of those"
        )
    return action.stops


#: ``report(epoch, metrics) -> EpochAction`` (a bool is read as stop / continue).
Reporter = Callable[[int, Mapping[str, float]], "EpochAction | bool | None"]


@dataclass(frozen=True)
class History:
    """Per-epoch metrics of one training.

    Epochs are numbered from 1; ``metrics[name][e - 1]`` is the value after epoch ``e``.

    Attributes:
        metrics: ``{"loss": [...], "val_loss": [...], "auc": [...], "val_auc": [...], ...}``.
        best_epoch: Epoch (1-based) with the best monitored value among epochs that pass all
            overtraining conditions (0 if no epoch ran).
        pruned: True if a ``report`` call asked to stop.
        stop_reason: ``"max_epochs"``, ``"early_stopping"``, ``"overtraining"``, ``"pruned"`` or
            ``"non_finite"`` (the loss became NaN / infinite; built-in torch loop).
        overtrained: Per epoch, whether any overtraining condition was violated.
        monitor: Name of the monitored metric.
        direction: Its direction.
    """

    metrics: dict[str, list[float]]
    best_epoch: int
    pruned: bool = False
    stop_reason: str = "max_epochs"
    overtrained: list[bool] = field(default_factory=list)
    monitor: str = "val_loss"
    direction: str = "minimize"

    @property
    def n_epochs(self) -> int:
        """Number of epochs run."""
        return max((len(v) for v in self.metrics.values()), default=0)

    def best(self, name: str | None = None) -> float:
        """Value of ``name`` (default: the monitored metric) at the best epoch."""
        key = self.monitor if name is None else name
        if key not in self.metrics:
            raise ConfigError(f"metric {key!r} not in history; recorded: {sorted(self.metrics)}")
        if self.best_epoch < 1:
            return float("nan")
        return float(self.metrics[key][self.best_epoch - 1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "metrics": {k: [float(x) for x in v] for k, v in self.metrics.items()},
            "best_epoch": self.best_epoch,
            "pruned": self.pruned,
            "stop_reason": self.stop_reason,
            "overtrained": [bool(x) for x in self.overtrained],
            "monitor": self.monitor,
            "direction": self.direction,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        return cls(
            metrics={k: list(v) for k, v in d["metrics"].items()},
            best_epoch=int(d["best_epoch"]),
            pruned=bool(d.get("pruned", False)),
            stop_reason=str(d.get("stop_reason", "max_epochs")),
            overtrained=list(d.get("overtrained", [])),
            monitor=str(d.get("monitor", "val_loss")),
            direction=str(d.get("direction", "minimize")),
        )


class OvertrainingCondition:
    """A named check on one epoch's metrics; returns True when the epoch counts as overtrained.

    Args:
        fn: ``fn(metrics: Mapping[str, float]) -> bool``.
        name: Label used in logs.
    """

    def __init__(self, fn: Callable[[Mapping[str, float]], bool], name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"overtraining condition must be callable, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "condition")

    def __call__(self, metrics: Mapping[str, float]) -> bool:
        return bool(self.fn(metrics))

    def __repr__(self) -> str:
        return f"OvertrainingCondition({self.name})"


@dataclass(frozen=True)
class _Gap:
    metric: str
    max_gap: float
    relative: bool

    def __call__(self, metrics: Mapping[str, float]) -> bool:
        train, val = metrics.get(self.metric), metrics.get(f"val_{self.metric}")
        if train is None or val is None:
            raise ConfigError(
                f"train_val_gap needs {self.metric!r} and 'val_{self.metric}' in the epoch metrics, "
                f"got {sorted(metrics)}"
            )
        gap = abs(val - train)
        if self.relative:
            gap = gap / max(abs(train), 1e-12)
        return gap > self.max_gap


def train_val_gap(
    metric: str = "loss", max_gap: float = 0.1, *, relative: bool = True
) -> OvertrainingCondition:
    """Overtrained when ``|val_metric - metric|`` (relative to ``metric`` by default) > ``max_gap``."""
    if max_gap < 0:
        raise ConfigError(f"max_gap must be >= 0, got {max_gap}")
    return OvertrainingCondition(
        _Gap(metric, float(max_gap), relative), name=f"gap({metric})>{max_gap}"
    )


def as_conditions(conds: Sequence[Any] | None) -> list[OvertrainingCondition]:
    """Normalise callables / ``module:function`` strings / conditions to a list of conditions."""
    out: list[OvertrainingCondition] = []
    for c in conds or ():
        if isinstance(c, OvertrainingCondition):
            out.append(c)
        elif isinstance(c, str):
            out.append(OvertrainingCondition(import_object(c), name=c))
        elif isinstance(c, Mapping):
            out.append(train_val_gap(**c))
        elif callable(c):
            out.append(OvertrainingCondition(c))
        else:
            raise ConfigError(
                f"overtraining condition must be callable or 'module:function', got {c!r}"
            )
    return out


class EarlyStopping:
    """Track the monitored metric, patience and overtraining across epochs (state is resumable)."""

    def __init__(
        self,
        monitor: Monitor,
        *,
        patience: int | None,
        conditions: Sequence[OvertrainingCondition] = (),
        overtraining_patience: int | None = None,
    ) -> None:
        if patience is not None and int(patience) < 1:
            raise ConfigError(f"patience must be >= 1 (or None to disable), got {patience}")
        if overtraining_patience is not None and int(overtraining_patience) < 1:
            raise ConfigError(f"overtraining_patience must be >= 1, got {overtraining_patience}")
        self.monitor = monitor
        self.patience = None if patience is None else int(patience)
        self.conditions = list(conditions)
        self.overtraining_patience = (
            None if overtraining_patience is None else int(overtraining_patience)
        )
        self.best_value: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.ot_count = 0
        self.overtrained: list[bool] = []

    def update(self, epoch: int, metrics: Mapping[str, float]) -> tuple[bool, str | None]:
        """Record an epoch; return (is_new_best, stop_reason or None)."""
        if self.monitor.metric not in metrics:
            raise ConfigError(
                f"monitored metric {self.monitor.metric!r} is not recorded; "
                f"available: {sorted(metrics)}"
            )
        value = float(metrics[self.monitor.metric])
        bad = any(c(metrics) for c in self.conditions)
        self.overtrained.append(bad)
        self.ot_count = self.ot_count + 1 if bad else 0
        improved = (
            (not bad) and not math.isnan(value) and self.monitor.better(value, self.best_value)
        )
        if improved:
            self.best_value, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
        if self.overtraining_patience is not None and self.ot_count >= self.overtraining_patience:
            return improved, "overtraining"
        if self.patience is not None and self.wait >= self.patience:
            return improved, "early_stopping"
        return improved, None

    def state_dict(self) -> dict[str, Any]:
        """Resumable state."""
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "ot_count": self.ot_count,
            "overtrained": list(self.overtrained),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.best_value = state["best_value"]
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])
        self.ot_count = int(state["ot_count"])
        self.overtrained = list(state["overtrained"])

    def history(
        self, metrics: Mapping[str, list[float]], *, pruned: bool, stop_reason: str
    ) -> History:
        """Build the :class:`History`; falls back to the best value if all epochs were overtrained."""
        best = self.best_epoch
        values = metrics.get(self.monitor.metric, [])
        if best == 0 and values:
            best = self.monitor.best_index(values) + 1
        return History(
            metrics={k: list(v) for k, v in metrics.items()},
            best_epoch=best,
            pruned=pruned,
            stop_reason=stop_reason,
            overtrained=list(self.overtrained),
            monitor=self.monitor.metric,
            direction=self.monitor.direction,
        )


def import_object(ref: str) -> Any:
    """Import ``"module:attr"``, ``"module.attr"`` or ``"path/file.py:attr"``
    (:func:`sigtune._imports.import_object`, the package's one importer).

    Raises:
        ConfigError: Naming the module or attribute that is missing.
    """
    return _imports.import_object(ref, error=ConfigError, dotted=True)
