"""The one definition of "best trial", used by the study, the report and the pipelines.

1. Only COMPLETE trials count.
2. **Feasible first**: a trial's constraint violation is ``sum(max(c, 0))`` over its constraint
   values (:func:`constraint_violation`; 0 when feasible or unconstrained). The pool is the
   trials with the smallest violation: the feasible ones if any, else the least infeasible.
3. **One objective**: the best value of the pool (ties: the lowest trial number).
   **Several objectives**: the Pareto front of the pool (:func:`pareto_mask`), by trial number;
   where one trial is needed (:func:`best_trial`), the front's best by the first objective.

Example:
    >>> import optuna
    >>> from sigtune._best import best_trial, best_trials
    >>> trials = [
    ...     optuna.trial.create_trial(values=[v], params={}, distributions={},
    ...                               user_attrs={"constraints": [c]})
    ...     for v, c in [(1.0, 0.5), (3.0, -1.0), (2.0, 0.0)]
    ... ]
    >>> [t.values[0] for t in best_trials(trials, ["minimize"])]  # 1.0 is infeasible
    [2.0]
    >>> best_trial(trials, ["maximize"]).values[0]
    3.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from sigtune._optuna_compat import trial_constraints

__all__ = [
    "best_trial",
    "best_trials",
    "constraint_violation",
    "feasible_pool",
    "is_feasible",
    "pareto_mask",
]


def constraint_violation(trial: FrozenTrial) -> float:
    """Total violation ``sum(max(c, 0))`` of a trial's constraints (0 if feasible or none).

    Constraints are read from Optuna's ``system_attrs`` (``constraints`` list, or the
    ``constraints:<name>`` keys of ``Trial.set_constraint``), else from
    ``user_attrs["constraints"]`` (a list or a ``name -> value`` mapping) set by the objective.
    A NaN constraint counts as an infinite violation.
    """
    values: Any = trial_constraints(trial)
    if not values:
        values = trial.user_attrs.get("constraints")
        if values is None:
            return 0.0
    items = values.values() if isinstance(values, Mapping) else values
    total = 0.0
    for c in items:
        f = float(c)
        if math.isnan(f):
            return math.inf
        total += max(f, 0.0)
    return total


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether every constraint of the trial is ``<= 0`` (true without constraints)."""
    return constraint_violation(trial) == 0.0


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (all objectives minimised).

    Example:
        >>> pareto_mask(np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0]])).tolist()
        [True, True, False]
    """
    n = len(values)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        v = values[i]
        dominated = np.all(values <= v, axis=1) & np.any(values < v, axis=1)
        if dominated.any():
            keep[i] = False
    return keep


def feasible_pool(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The COMPLETE trials with the smallest constraint violation (in the given order)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        return []
    violations = [constraint_violation(t) for t in done]
    least = min(violations)
    return [t for t, v in zip(done, violations, strict=True) if v == least]


def _signs(directions: Sequence[Any]) -> np.ndarray:
    return np.array([-1.0 if _is_max(d) else 1.0 for d in directions])


def _is_max(direction: Any) -> bool:
    return str(getattr(direction, "name", direction)).lower() == "maximize"


def best_trials(trials: Iterable[FrozenTrial], directions: Sequence[Any]) -> list[FrozenTrial]:
    """The Pareto front of the feasible-first pool, by trial number (``[]``: none completed).

    For one objective: the best trial and its ties. ``directions`` are ``"minimize"`` /
    ``"maximize"`` strings or Optuna ``StudyDirection`` values.
    """
    pool = sorted(feasible_pool(trials), key=lambda t: t.number)
    if not pool:
        return []
    values = np.array([t.values for t in pool], dtype=float) * _signs(directions)
    keep = pareto_mask(values)
    return [t for t, k in zip(pool, keep, strict=True) if k]


def best_trial(trials: Iterable[FrozenTrial], directions: Sequence[Any]) -> FrozenTrial | None:
    """The best trial: best first objective of the feasible-first pool (``None``: none completed).

    For several objectives this is the member of :func:`best_trials` with the best first
    objective (ties: the lowest trial number).
    """
    front = best_trials(trials, directions)
    if not front:
        return None
    sign = -1.0 if _is_max(directions[0]) else 1.0
    return min(front, key=lambda t: (sign * float(t.values[0]), t.number))
