"""One definition of the best trial: feasible first, then best value / Pareto front; the study,
the report and the binning results agree."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from sigtune import _best
from sigtune._study import Study


def _study(
    points: list[tuple[list[float], list[float] | None]], directions: list[str]
) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    for values, constraints in points:
        attrs = {} if constraints is None else {"constraints": constraints}
        study.add_trial(
            optuna.trial.create_trial(values=values, params={}, distributions={}, user_attrs=attrs)
        )
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, params={}, distributions={}))
    return study


MULTI = [
    ([1.0, 1.0], [1.0]),  # dominates everything but is infeasible
    ([2.0, 5.0], [0.0]),
    ([5.0, 2.0], [-1.0]),
    ([3.0, 3.0], [-0.5]),
    ([4.0, 4.0], [-0.5]),  # dominated by trial 3
    ([2.0, 6.0], [-2.0]),  # dominated by trial 1
]


def test_feasible_pareto_front_and_best_by_first_objective() -> None:
    study = _study(MULTI, ["minimize", "minimize"])
    front = _best.best_trials(study.trials, study.directions)
    assert [t.number for t in front] == [1, 2, 3]
    best = _best.best_trial(study.trials, study.directions)
    assert best is not None and best.number == 1


def test_least_infeasible_when_nothing_is_feasible() -> None:
    study = _study(
        [([1.0], [2.0]), ([5.0], [0.5]), ([3.0], [0.5]), ([0.0], [math.nan])], ["minimize"]
    )
    best = _best.best_trial(study.trials, ["minimize"])
    assert best is not None and best.number == 2
    assert _best.best_trial([], ["minimize"]) is None


def test_study_report_and_binning_agree() -> None:
    from sigtune.pipelines.binning._results import _pareto, best_trial
    from sigtune.reports._html import _best_trials

    ostudy = _study(MULTI, ["minimize", "maximize"])
    wrapped = Study(ostudy)
    expected = [t.number for t in _best.best_trials(ostudy.trials, ostudy.directions)]
    assert [t.number for t in wrapped.best_trials] == expected
    assert [t.number for t in _best_trials(ostudy, ostudy, True)] == expected
    assert [t.number for t in _best_trials(wrapped, ostudy, True)] == expected
    complete = [t for t in ostudy.trials if t.state == TrialState.COMPLETE]
    feasible = [t for t in complete if _best.is_feasible(t)]
    assert [t.number for t in _pareto(feasible, ["minimize", "maximize"])] == expected
    first = _best.best_trial(ostudy.trials, ostudy.directions)
    assert first is not None
    assert best_trial(ostudy, ["minimize", "maximize"]).number == first.number

    single = _study(
        [([v], c) for v, c in [(1.0, [1.0]), (3.0, [0.0]), (2.0, [-1.0])]], ["maximize"]
    )
    assert Study(single).best_trial.number == 1
    assert _best_trials(single, single, False)[0].number == 1
    assert best_trial(single, ["maximize"]).number == 1


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_ties_go_to_the_lowest_trial_number(direction: str) -> None:
    study = _study([([1.0], None), ([1.0], None)], [direction])
    best = _best.best_trial(study.trials, [direction])
    assert best is not None and best.number == 0
    assert [t.number for t in _best.best_trials(study.trials, [direction])] == [0, 1]
