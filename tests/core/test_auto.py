"""The ``auto`` sampler: each policy branch chosen on a space built to trigger it, and the
per-trial record of which sampler was used and why (user attrs ``auto:sampler``/``auto:reason``)."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from sigtune import SearchSpace
from sigtune._samplers import AUTO_REASON_ATTR, AUTO_SAMPLER_ATTR, AutoSampler, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

NUMERIC = {"a": {"bounds": [-1.0, 1.0]}, "b": {"bounds": [0.1, 10.0], "sampling": "log"}}
FLAT_GRID = {"n": {"value_type": "int", "bounds": [1, 3]}, "c": {"values": ["x", "y"]}}
COND_GRID = {
    "n": {"value_type": "int", "bounds": [1, 3]},
    "c": {"values": ["x", "y"], "only": "n > 1"},
}
CATEGORICAL = {"a": {"bounds": [0.0, 1.0]}, "kind": {"values": ["p", "q", "r"]}}
CONDITIONAL = {
    "model": {"values": ["svm", "knn"]},
    "C": {"bounds": [1e-3, 1e3], "sampling": "log", "only": "model == 'svm'"},
    "k": {"value_type": "int", "bounds": [1, 30], "only": "model == 'knn'"},
}
HIGH_DIM = {f"x{i}": {"bounds": [0.0, 1.0]} for i in range(12)}


def _run(
    space_def: dict[str, Any] | None,
    n_trials: int,
    n_run: int,
    *,
    n_objectives: int = 1,
    seed: int = 0,
) -> tuple[AutoSampler, optuna.Study]:
    space = SearchSpace.from_dict(space_def) if space_def is not None else None
    sampler = make_sampler(
        "auto", seed=seed, space=space, n_trials=n_trials, n_objectives=n_objectives
    )
    assert isinstance(sampler, AutoSampler)
    study = optuna.create_study(sampler=sampler, directions=["minimize"] * n_objectives)

    def objective(trial: optuna.Trial) -> Any:
        if space is None:
            p = {"x": trial.suggest_float("x", -1, 1), "y": trial.suggest_float("y", -1, 1)}
        else:
            p = space.suggest(trial)
        v = float(sum(abs(x) for x in p.values() if isinstance(x, int | float)))
        return v if n_objectives == 1 else (v, -v)

    study.optimize(objective, n_trials=n_run)
    return sampler, study


@pytest.mark.parametrize(
    ("space", "n_trials", "n_objectives", "expected", "reason_word"),
    [
        (NUMERIC, 40, 1, "gp", "numeric"),
        (NUMERIC, 1000, 1, "cmaes", "large budget"),
        (HIGH_DIM, 100, 1, "tpe", "numeric"),
        (FLAT_GRID, 6, 1, "grid", "grid"),
        (COND_GRID, 6, 1, "bruteforce", "discrete"),
        (CATEGORICAL, 40, 1, "tpe", "categorical"),
        (CONDITIONAL, 40, 1, "tpe", "conditional"),
        (NUMERIC, 20, 2, "tpe", "objectives"),
    ],
)
def test_each_branch_is_recorded_on_every_trial(
    space: dict[str, Any], n_trials: int, n_objectives: int, expected: str, reason_word: str
) -> None:
    sampler, study = _run(space, n_trials, 4, n_objectives=n_objectives)
    assert sampler.choice is not None and sampler.choice.name == expected
    assert reason_word in sampler.choice.reason
    for t in study.trials:
        assert t.user_attrs[AUTO_SAMPLER_ATTR] == expected
        assert t.user_attrs[AUTO_REASON_ATTR] == sampler.choice.reason


def test_multi_objective_large_budget_is_nsga() -> None:
    sampler, study = _run(NUMERIC, 1000, 3, n_objectives=2)
    assert sampler.choice is not None and sampler.choice.name == "nsga2"
    assert {t.user_attrs[AUTO_SAMPLER_ATTR] for t in study.trials} == {"nsga2"}


def test_define_by_run_records_random_then_the_choice() -> None:
    sampler, study = _run(None, 40, 3)
    first, *rest = study.trials
    assert first.user_attrs[AUTO_SAMPLER_ATTR] == "random"
    assert "first trial" in first.user_attrs[AUTO_REASON_ATTR]
    assert sampler.choice is not None and sampler.choice.name == "gp"
    assert all(t.user_attrs[AUTO_SAMPLER_ATTR] == "gp" for t in rest)


def test_auto_is_deterministic_for_a_seed() -> None:
    _, s1 = _run(CONDITIONAL, 40, 6, seed=3)
    _, s2 = _run(CONDITIONAL, 40, 6, seed=3)
    assert [t.params for t in s1.trials] == [t.params for t in s2.trials]
