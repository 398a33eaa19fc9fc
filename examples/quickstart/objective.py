"""Objectives for the quickstart examples.

``rosenbrock`` is used with a declarative search space (``config.yaml``): sigtune suggests the
parameters and calls ``rosenbrock(params, trial)``. ``branin`` is a plain Optuna-style objective
(define-by-run): it calls ``trial.suggest_*`` itself, unchanged from Optuna.
"""

from __future__ import annotations

import math
from typing import Any

import optuna


def rosenbrock(params: dict[str, Any], trial: optuna.Trial) -> float:
    """Rosenbrock function; its minimum 0 lies at x = y = 1."""
    x, y = params["x"], params["y"]
    return float((1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2)


def branin(trial: optuna.Trial) -> float:
    """Branin function, define-by-run; global minimum 0.397887."""
    x = trial.suggest_float("x", -5.0, 10.0)
    y = trial.suggest_float("y", 0.0, 15.0)
    b = 5.1 / (4.0 * math.pi**2)
    c = 5.0 / math.pi
    t = 1.0 / (8.0 * math.pi)
    return float((y - b * x**2 + c * x - 6.0) ** 2 + 10.0 * (1.0 - t) * math.cos(x) + 10.0)
