"""Trial selection after a hyperparameter search: *best-value* and *best-fit*.

A search ranks trials by the best epoch of the monitored metric. That single number is noisy: a
trial can win by one lucky epoch. Two selections are reported side by side (the OPTIMA recipe):

* **best-value** — for every trial, the best epoch of the ``target`` metric among the epochs that
  pass all overtraining conditions; trials are ranked by that value.
* **best-fit** — every metric history ``y(x)`` (``x = 1, 2, ...`` the epoch number) is fitted by
  linear least squares with

  .. math:: f(x) = \\frac{a}{x^2} + \\frac{b}{x} + c\\,x^2 + d\\,x + e ,

  trials with fewer than ``min_epochs`` epochs or a fit with :math:`R^2 < ` ``min_r2`` are skipped,
  the overtraining conditions are evaluated on the *fitted* values, and trials are ranked by the
  best fitted target value. The smooth fit averages over the epoch-to-epoch noise.

:math:`R^2 = 1 - \\sum_i (y_i - f(x_i))^2 / \\sum_i (y_i - \\bar y)^2`.

Overtraining conditions are either callables ``fn(metrics) -> bool`` or strings such as
``"val_loss - loss > 0.05"`` (a safe expression over metric names, see :mod:`sigtune._expr`);
``True`` means *overtrained*, so the epoch is not eligible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sigtune._exceptions import ConfigError
from sigtune._expr import Expression

__all__ = [
    "HISTORY_ATTR",
    "OvertrainingCondition",
    "SelectedTrial",
    "SelectionResult",
    "TrialCurves",
    "fit_learning_curve",
    "select_trials",
    "trial_value",
]

log = logging.getLogger(__name__)

#: ``trial.user_attrs`` key under which the pipeline stores a trial's per-epoch metrics.
HISTORY_ATTR = "history"

OvertrainingCondition = str | Callable[[Mapping[str, float]], bool]
Direction = Literal["minimize", "maximize"]


@dataclass(frozen=True)
class TrialCurves:
    """The per-epoch metrics of one finished trial (the input of :func:`select_trials`).

    Attributes:
        number: Trial number.
        params: The trial's hyperparameters.
        metrics: Metric name -> one value per epoch (epoch ``e`` at index ``e - 1``).
    """

    number: int
    params: Mapping[str, Any]
    metrics: Mapping[str, Sequence[float]]

    @property
    def n_epochs(self) -> int:
        """Number of epochs (length of the longest metric history)."""
        return max((len(v) for v in self.metrics.values()), default=0)


@dataclass(frozen=True)
class SelectedTrial:
    """One selected trial.

    Attributes:
        number: Trial number.
        epoch: The selected epoch, numbered from 1 like ``History.best_epoch``.
        value: The target metric at that epoch: measured (best-value) or fitted (best-fit).
        params: The trial's hyperparameters.
        metrics: All metrics at the selected epoch (measured, or fitted for best-fit).
        r2: Coefficient of determination of each metric's fit (empty for best-value).
    """

    number: int
    epoch: int
    value: float
    params: dict[str, Any]
    metrics: dict[str, float]
    r2: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable representation."""
        return {
            "number": self.number,
            "epoch": self.epoch,
            "value": self.value,
            "params": dict(self.params),
            "metrics": dict(self.metrics),
            "r2": dict(self.r2),
        }


@dataclass(frozen=True)
class SelectionResult:
    """Result of :func:`select_trials`.

    Attributes:
        target: The metric trials are ranked by.
        direction: ``"minimize"`` or ``"maximize"``.
        best_value: The ``n_select`` best trials by measured value, best first.
        best_fit: The ``n_select`` best trials by fitted value, best first.
        skipped_fit: Trial number -> why best-fit skipped it (too few epochs, poor fit,
            every epoch overtrained).
    """

    target: str
    direction: Direction
    best_value: tuple[SelectedTrial, ...]
    best_fit: tuple[SelectedTrial, ...]
    skipped_fit: dict[int, str]

    def selected(self) -> list[SelectedTrial]:
        """Best-value and best-fit picks without duplicates (best-value first)."""
        seen: set[int] = set()
        out: list[SelectedTrial] = []
        for sel in (*self.best_value, *self.best_fit):
            if sel.number not in seen:
                seen.add(sel.number)
                out.append(sel)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable representation."""
        return {
            "target": self.target,
            "direction": self.direction,
            "best_value": [s.to_dict() for s in self.best_value],
            "best_fit": [s.to_dict() for s in self.best_fit],
            "skipped_fit": {str(k): v for k, v in self.skipped_fit.items()},
        }


def _design(x: np.ndarray) -> np.ndarray:
    return np.stack([x**-2.0, 1.0 / x, x**2, x, np.ones_like(x)], axis=1)


def fit_learning_curve(
    values: Sequence[float] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares fit of ``f(x) = a/x^2 + b/x + c x^2 + d x + e`` to a metric history.

    Args:
        values: One value per epoch; epoch ``i`` (0-based) is at ``x = i + 1``.

    Returns:
        ``(coefficients (a, b, c, d, e), fitted values, R^2)``. A constant history that is fitted
        exactly has ``R^2 = 1``.

    Raises:
        ValueError: If fewer than 5 values are given or any value is not finite.
    """
    y = np.asarray(values, dtype=float)
    if y.ndim != 1 or y.size < 5:
        raise ValueError(f"a learning-curve fit needs at least 5 epochs, got {y.size}")
    if not np.all(np.isfinite(y)):
        raise ValueError("a learning-curve fit needs finite values")
    x = np.arange(1, y.size + 1, dtype=float)
    design = _design(x)
    # Column scaling keeps the normal equations well conditioned (x^2 vs 1/x^2 span ~8 decades).
    norms = np.linalg.norm(design, axis=0)
    coef_scaled, *_ = np.linalg.lstsq(design / norms, y, rcond=None)
    coef = coef_scaled / norms
    fitted = design @ coef
    ss_res = float(np.sum((y - fitted) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    scale = max(float(np.max(np.abs(y))), 1e-300)
    if ss_tot <= (1e-12 * scale) ** 2 * y.size:
        r2 = 1.0 if ss_res <= (1e-9 * scale) ** 2 * y.size else 0.0
    else:
        r2 = 1.0 - ss_res / ss_tot
    return coef, fitted, r2


@dataclass(frozen=True)
class _ExpressionCondition:
    expr: Expression

    def __call__(self, metrics: Mapping[str, float]) -> bool:
        return bool(self.expr.evaluate(metrics))


def _compile_conditions(
    conditions: Sequence[OvertrainingCondition],
) -> tuple[list[Callable[[Mapping[str, float]], bool]], set[str] | None]:
    """Turn conditions into callables; also return the metric names they read (None = unknown)."""
    compiled: list[Callable[[Mapping[str, float]], bool]] = []
    names: set[str] | None = set()
    for i, cond in enumerate(conditions):
        if isinstance(cond, str):
            expr = Expression.parse(cond, where=f"overtraining[{i}]")
            if names is not None:
                names |= set(expr.names)
            compiled.append(_ExpressionCondition(expr))
        elif callable(cond):
            names = None
            compiled.append(cond)
        else:
            raise ConfigError(
                f"overtraining[{i}]: expected an expression string or a callable, got {cond!r}"
            )
    return compiled, names


def _passes(
    conditions: Sequence[Callable[[Mapping[str, float]], bool]], m: Mapping[str, float]
) -> bool:
    return not any(cond(m) for cond in conditions)


def _epoch_metrics(metrics: Mapping[str, np.ndarray], epoch: int) -> dict[str, float]:
    return {k: float(v[epoch]) for k, v in metrics.items() if epoch < v.size}


def _better(a: float, b: float, direction: Direction) -> bool:
    return a < b if direction == "minimize" else a > b


def _best_epoch(
    metrics: Mapping[str, np.ndarray],
    target: str,
    direction: Direction,
    conditions: Sequence[Callable[[Mapping[str, float]], bool]],
) -> tuple[int, float] | None:
    series = metrics[target]
    best: tuple[int, float] | None = None
    for epoch in range(series.size):
        value = float(series[epoch])
        if not math.isfinite(value):
            continue
        if not _passes(conditions, _epoch_metrics(metrics, epoch)):
            continue
        if best is None or _better(value, best[1], direction):
            best = (epoch, value)
    return best


def _from_study(study: Any, include_pruned: bool = False) -> list[TrialCurves]:
    """Read COMPLETE (and PRUNED) trials and their stored histories from a sigtune/optuna study."""
    import optuna

    ostudy = getattr(study, "optuna", study)
    states = [optuna.trial.TrialState.COMPLETE]
    if include_pruned:
        states.append(optuna.trial.TrialState.PRUNED)
    out: list[TrialCurves] = []
    for t in ostudy.get_trials(deepcopy=False, states=tuple(states)):
        history = t.user_attrs.get(HISTORY_ATTR)
        if not isinstance(history, Mapping):
            log.debug("trial %d has no stored history; not considered", t.number)
            continue
        params = t.user_attrs.get("params")  # the full params the objective received
        params = dict(params) if isinstance(params, Mapping) else dict(t.params)
        out.append(TrialCurves(number=t.number, params=params, metrics=history))
    return out


def select_trials(
    trials: Iterable[TrialCurves] | Any,
    *,
    target: str = "val_loss",
    direction: Direction = "minimize",
    overtraining: Sequence[OvertrainingCondition] = (),
    n_select: int = 1,
    min_epochs: int = 10,
    min_r2: float = 0.9,
    include_pruned: bool = False,
) -> SelectionResult:
    """Select the best trials by best-value and by best-fit.

    Args:
        trials: :class:`TrialCurves` records, or a :class:`sigtune.Study` / ``optuna.Study`` whose
            COMPLETE trials carry their per-epoch metrics in ``user_attrs["history"]``.
        target: Metric trials are ranked by (must be in every history).
        direction: Whether lower (``"minimize"``) or higher values of ``target`` are better.
        overtraining: Conditions on one epoch's metrics; ``True`` marks the epoch overtrained.
        n_select: How many trials each selection returns (fewer if fewer are eligible).
        min_epochs: Best-fit skips trials with fewer epochs.
        min_r2: Best-fit skips trials whose fit of a metric the selection reads (``target``, the
            metrics named in string conditions, every metric if a callable condition is given)
            has a smaller :math:`R^2`.
        include_pruned: Also consider PRUNED trials (their histories up to the pruned epoch).

    Returns:
        Both selections and why best-fit skipped trials.

    Raises:
        ConfigError: On an unknown direction, ``n_select < 1``, ``min_epochs < 5``, a bad
            condition, or a ``target`` missing from a history.
    """
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    if n_select < 1:
        raise ConfigError(f"n_select must be >= 1, got {n_select}")
    if min_epochs < 5:
        raise ConfigError(f"min_epochs must be >= 5 (the fit has 5 coefficients), got {min_epochs}")
    if not 0.0 <= min_r2 <= 1.0:
        raise ConfigError(f"min_r2 must be in [0, 1], got {min_r2}")
    records = (
        list(trials)
        if not (hasattr(trials, "get_trials") or hasattr(trials, "optuna"))
        else _from_study(trials, include_pruned)
    )
    conditions, read_names = _compile_conditions(overtraining)

    value_picks: list[SelectedTrial] = []
    fit_picks: list[SelectedTrial] = []
    skipped: dict[int, str] = {}
    for rec in records:
        metrics = {k: np.asarray(v, dtype=float) for k, v in rec.metrics.items()}
        if target not in metrics:
            raise ConfigError(
                f"trial {rec.number}: target metric {target!r} is not in its history "
                f"(available: {sorted(metrics)}); set selection.target to one of them"
            )
        best = _best_epoch(metrics, target, direction, conditions)
        if best is not None:
            value_picks.append(
                SelectedTrial(
                    number=rec.number,
                    epoch=best[0] + 1,
                    value=best[1],
                    params=dict(rec.params),
                    metrics=_epoch_metrics(metrics, best[0]),
                )
            )
        n_epochs = metrics[target].size
        if n_epochs < min_epochs:
            skipped[rec.number] = f"{n_epochs} epochs < min_epochs={min_epochs}"
            continue
        fitted: dict[str, np.ndarray] = {}
        r2: dict[str, float] = {}
        for name, series in metrics.items():
            if series.size != n_epochs or not np.all(np.isfinite(series)):
                continue
            _, fitted[name], r2[name] = fit_learning_curve(series)
        if target not in fitted:
            skipped[rec.number] = f"{target} has non-finite values"
            continue
        checked = {target} | (set(fitted) if read_names is None else read_names & set(fitted))
        poor = {k: round(r2[k], 4) for k in sorted(checked) if r2[k] < min_r2}
        if poor:
            skipped[rec.number] = f"R^2 < {min_r2}: {poor}"
            continue
        best_fit = _best_epoch(fitted, target, direction, conditions)
        if best_fit is None:
            skipped[rec.number] = "every epoch is overtrained (fitted values)"
            continue
        fit_picks.append(
            SelectedTrial(
                number=rec.number,
                epoch=best_fit[0] + 1,
                value=best_fit[1],
                params=dict(rec.params),
                metrics=_epoch_metrics(fitted, best_fit[0]),
                r2=r2,
            )
        )

    sign = 1.0 if direction == "minimize" else -1.0
    value_picks.sort(key=lambda s: (sign * s.value, s.number))
    fit_picks.sort(key=lambda s: (sign * s.value, s.number))
    return SelectionResult(
        target=target,
        direction=direction,
        best_value=tuple(value_picks[:n_select]),
        best_fit=tuple(fit_picks[:n_select]),
        skipped_fit=skipped,
    )


TrialValue = Literal["best_epoch", "last_valid_epoch", "best_fit"]


def trial_value(
    metrics: Mapping[str, Sequence[float]],
    target: str,
    direction: Direction,
    how: TrialValue = "best_epoch",
    overtraining: Sequence[OvertrainingCondition] = (),
) -> tuple[float, int]:
    """The value a trial reports to the search, and the epoch (from 1) it comes from.

    * ``best_epoch``: the best epoch of ``target`` that passes the overtraining conditions;
    * ``last_valid_epoch``: the last epoch that passes them (OPTIMA's default);
    * ``best_fit``: the best value of the learning-curve fit (see :func:`fit_learning_curve`)
      among the epochs that pass them (fitted values; fewer than 5 epochs: as ``best_epoch``).

    If every epoch is overtrained, the best epoch of ``target`` ignoring the conditions is used.
    """
    if how not in ("best_epoch", "last_valid_epoch", "best_fit"):
        raise ConfigError(
            f"trial_value must be best_epoch, last_valid_epoch or best_fit, got {how!r}"
        )
    conditions, _ = _compile_conditions(overtraining)
    arrays = {k: np.asarray(v, dtype=float) for k, v in metrics.items()}
    if target not in arrays or arrays[target].size == 0:
        raise ConfigError(f"trial value: {target!r} is not recorded; have {sorted(arrays)}")
    series = arrays[target]
    if how == "last_valid_epoch":
        for epoch in range(series.size - 1, -1, -1):
            if math.isfinite(series[epoch]) and _passes(conditions, _epoch_metrics(arrays, epoch)):
                return float(series[epoch]), epoch + 1
    elif how == "best_fit" and series.size >= 5 and np.all(np.isfinite(series)):
        fitted = {
            k: fit_learning_curve(v)[1]
            for k, v in arrays.items()
            if v.size == series.size and np.all(np.isfinite(v))
        }
        best = _best_epoch(fitted, target, direction, conditions)
        if best is not None:
            return best[1], best[0] + 1
    best = _best_epoch(arrays, target, direction, conditions) or _best_epoch(
        arrays, target, direction, []
    )
    if best is None:
        return float("nan"), 0
    return best[1], best[0] + 1
