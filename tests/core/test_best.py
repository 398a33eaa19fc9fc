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


# ---------------------------------------------------------------------- the indexed best query

_CASES = {
    # name: (direction, [(value, constraints or None)])
    "plain": ("minimize", [(3.0, None), (1.5, None), (2.0, None), (7.0, None)]),
    "maximize": ("maximize", [(3.0, None), (1.5, None), (9.0, None), (7.0, None)]),
    # Ties: the lowest trial number wins, also when a later tie finished first in the storage.
    "ties": ("minimize", [(4.0, None), (1.0, None), (2.0, None), (1.0, None), (1.0, None)]),
    # The best value is infeasible: the feasible-first answer is another trial.
    "infeasible_best": ("minimize", [(3.0, [-1.0]), (0.5, [2.0]), (1.0, [0.0]), (2.0, [-3.0])]),
    # The lowest-numbered tie is infeasible, a later one is feasible.
    "infeasible_tie": ("minimize", [(1.0, [1.0]), (5.0, [-1.0]), (1.0, [-1.0])]),
    # Nothing feasible: the least violation.
    "none_feasible": ("minimize", [(1.0, [3.0]), (5.0, [0.5]), (2.0, [0.5])]),
    "infinite": ("minimize", [(2.0, None), (-math.inf, None), (1.0, None)]),
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_indexed_best_equals_the_full_scan(tmp_path: object, case: str) -> None:
    from pathlib import Path

    from sigtune._optuna_compat import study_id, study_storage
    from sigtune._storage import indexed_best_trial, resolve_storage
    from sigtune._study import load_study

    direction, points = _CASES[case]
    url = f"sqlite:///{Path(str(tmp_path)) / 'best.db'}"
    raw = optuna.create_study(
        storage=resolve_storage(url).open(track_owner=False), direction=direction, study_name="b"
    )
    raw.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, params={}, distributions={}))
    for value, constraints in points:
        attrs = {} if constraints is None else {"constraints": constraints}
        raw.add_trial(
            optuna.trial.create_trial(value=value, params={}, distributions={}, user_attrs=attrs)
        )
    study = load_study("b", url)
    full_scan = _best.best_trial(study.optuna.trials, study.optuna.directions)
    assert full_scan is not None
    assert study.best_trial.number == full_scan.number
    assert study.best_value == full_scan.values[0]
    indexed = indexed_best_trial(study_storage(study.optuna), study_id(study.optuna))
    if case in ("plain", "maximize", "ties"):  # answered by the query, no trial loaded
        assert indexed is not None and indexed.number == full_scan.number
    if case == "infinite":
        assert indexed is None  # not a finite best: the caller scans


def test_best_on_a_journal_equals_the_full_scan(tmp_path: object) -> None:
    from pathlib import Path

    from sigtune._study import optimize

    study = optimize(
        lambda t: round(t.suggest_float("x", 0, 1), 1),
        40,
        sampler="random",
        seed=3,
        run_dir=Path(str(tmp_path)),
    )
    full_scan = _best.best_trial(study.trials, study.optuna.directions)
    assert full_scan is not None and study.best_trial.number == full_scan.number
