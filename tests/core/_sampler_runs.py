"""Helpers shared by test_samplers.py and the subprocess it starts (not a test module)."""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import optuna

from sigtune import SearchSpace, make_sampler

SPACE = SearchSpace.from_dict(
    {
        "x": {"bounds": [-2.0, 2.0], "step": 0.5},
        "y": {"value_type": "int", "bounds": [-3, 3]},
        "c": {"values": ["a", "b"]},
        "fixed": 1,
    }
)
N_TRIALS = 12


def single(params: dict[str, Any]) -> float:
    return params["x"] ** 2 + (params["y"] - 1) ** 2 + (0.0 if params["c"] == "a" else 1.0)


def double(params: dict[str, Any]) -> tuple[float, float]:
    return params["x"] ** 2 + params["y"] ** 2, (params["x"] - 1) ** 2 + (params["y"] + 1) ** 2


def run(name: str, seed: int | None, n_objectives: int = 1) -> optuna.Study:
    """Run a sequential study of ``N_TRIALS`` trials with the named sampler."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler = make_sampler(
        name, seed=seed, space=SPACE, n_trials=N_TRIALS, n_objectives=n_objectives
    )
    study = optuna.create_study(sampler=sampler, directions=["minimize"] * n_objectives)
    fn = single if n_objectives == 1 else double
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(lambda t: fn(SPACE.suggest(t)), n_trials=N_TRIALS)
    return study


def params_sequence(name: str, seed: int, n_objectives: int = 1) -> list[dict[str, Any]]:
    return [dict(t.params) for t in run(name, seed, n_objectives).trials]


if __name__ == "__main__":
    names = sys.argv[1].split(",")
    print(json.dumps({n: params_sequence(n, int(sys.argv[2])) for n in names}))
