"""Tests of make_pruner (sigtune._pruners): each pruner stops bad curves and keeps good ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest

from sigtune import ConfigError, make_pruner
from sigtune._pruners import PRUNER_NAMES

optuna.logging.set_verbosity(optuna.logging.WARNING)

STEPS = 20
Curve = Callable[[int], float]


def improving(scale: float) -> Curve:
    """A healthy learning curve: the loss falls towards ``scale``."""
    return lambda step: scale * (1.0 + 1.0 / (step + 1))


def stagnant(level: float) -> Curve:
    """A stuck learning curve: flat at ``level``."""
    return lambda step: level


def diverging(start: float) -> Curve:
    """A failing learning curve: the loss grows."""
    return lambda step: start + step


def _run_curve(study: optuna.Study, curve: Curve) -> int | None:
    """Report ``curve`` step by step; return the step where it was pruned, or None."""
    trial = study.ask()
    for step in range(STEPS):
        trial.report(curve(step), step)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return step
    study.tell(trial, curve(STEPS - 1))
    return None


# name, options, history curves (completed first), clearly bad curve, good curve
CASES: dict[str, tuple[dict[str, Any], list[Curve], Curve, Curve]] = {
    "median": (
        {"n_startup_trials": 3},
        [improving(1.0 + 0.01 * i) for i in range(3)],
        improving(10.0),
        improving(0.9),
    ),
    "percentile": (
        {"percentile": 25.0, "n_startup_trials": 3},
        [improving(1.0 + 0.01 * i) for i in range(3)],
        improving(10.0),
        improving(0.9),
    ),
    "successive_halving": (
        {"min_resource": 1, "reduction_factor": 2},
        [improving(1.0)],
        improving(10.0),
        improving(0.9),
    ),
    "hyperband": (
        {"min_resource": 1, "max_resource": STEPS, "reduction_factor": 3},
        [improving(1.0 + 0.01 * i) for i in range(9)],
        improving(10.0),
        improving(0.5),
    ),
    "patient": (
        {"patience": 3},
        [improving(1.0)],
        diverging(10.0),
        improving(0.9),
    ),
    "threshold": ({"upper": 5.0}, [], improving(10.0), improving(0.9)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_prunes_bad_curves_and_keeps_good_ones(name: str) -> None:
    options, history, bad, good = CASES[name]
    # Hyperband assigns trials to brackets by a hash of study name and trial number: fix the name.
    study = optuna.create_study(study_name="pruning", pruner=make_pruner(name, options))
    for curve in history:
        _run_curve(study, curve)
    pruned_at = [_run_curve(study, bad) for _ in range(3)]
    assert all(step is not None for step in pruned_at), f"{name} kept a bad curve: {pruned_at}"
    assert all(_run_curve(study, good) is None for _ in range(3)), f"{name} pruned a good curve"


def test_none_never_prunes() -> None:
    study = optuna.create_study(pruner=make_pruner("none"))
    for curve in (improving(1.0), improving(1000.0), stagnant(1e9)):
        assert _run_curve(study, curve) is None


def test_patient_wraps_another_pruner() -> None:
    # patience is exhausted but the wrapped median pruner still has to agree
    pruner = make_pruner(
        "patient",
        {"patience": 2, "wrapped": {"name": "median", "options": {"n_startup_trials": 1}}},
    )
    assert isinstance(pruner, optuna.pruners.PatientPruner)
    study = optuna.create_study(pruner=pruner)
    _run_curve(study, improving(5.0))  # completes: no history for the median yet
    # not improving for 2 steps, but better than the median: the wrapped pruner keeps it
    assert _run_curve(study, diverging(0.0)) is None
    # not improving and worse than the median: pruned once patience is exhausted
    assert _run_curve(study, diverging(20.0)) == 3
    assert isinstance(
        make_pruner("patient", {"patience": 1, "wrapped": "none"}), optuna.pruners.PatientPruner
    )


def test_patient_prunes_only_after_patience() -> None:
    study = optuna.create_study(pruner=make_pruner("patient", {"patience": 4}))
    # a flat curve is not worse than its best: never pruned
    assert _run_curve(study, stagnant(1.0)) is None
    # a worsening curve: the first step sets the best, 4 more steps are tolerated
    assert _run_curve(study, diverging(1.0)) == 5
    patient_delta = make_pruner("patient", {"patience": 2, "min_delta": 0.5})
    study = optuna.create_study(pruner=patient_delta)
    # worse by 0.1 per step: without min_delta pruned at step 3, with min_delta=0.5 only when
    # the best of the last 3 steps exceeds 1.0 + 0.5, i.e. 1.0 + 0.1 * (step - 2) > 1.5
    assert _run_curve(study, lambda s: 1.0 + 0.1 * s) == 8


def test_threshold_lower_bound_and_maximize() -> None:
    study = optuna.create_study(
        direction="maximize", pruner=make_pruner("threshold", {"lower": 0.6})
    )
    assert _run_curve(study, lambda s: 0.5) == 0
    assert _run_curve(study, lambda s: 0.7 + 0.01 * s) is None


def test_asha_alias() -> None:
    assert isinstance(make_pruner("asha"), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner("MEDIAN"), optuna.pruners.MedianPruner)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "mediann",
            None,
            r"pruner\.name: unknown pruner 'mediann'; valid names: " + ", ".join(PRUNER_NAMES),
        ),
        (
            "median",
            {"n_warmup_step": 5},
            r"pruner\.options\.n_warmup_step: unknown option for pruner 'median'; valid options: .*n_warmup_steps",
        ),
        ("none", {"x": 1}, r"valid options: \(none\)"),
        (
            "median",
            {"n_warmup_steps": "five"},
            r"pruner\.options\.n_warmup_steps: Input should be a valid integer",
        ),
        ("median", {"n_warmup_steps": -1}, r"invalid options for 'median'"),
        ("percentile", {}, r"pruner\.options\.percentile: required"),
        ("percentile", {"percentile": 150.0}, r"invalid options for 'percentile'"),
        ("patient", {}, r"pruner\.options\.patience: required"),
        ("patient", {"patience": 2, "wrapped": "bogus"}, r"unknown pruner 'bogus'"),
        (
            "patient",
            {"patience": 2, "wrapped": 3},
            r"pruner\.options\.wrapped: must be a pruner name",
        ),
        ("threshold", {}, r"'threshold' needs `lower` and/or `upper`"),
        (
            "successive_halving",
            {"reduction_factor": 1},
            r"invalid options for 'successive_halving'",
        ),
    ],
)
def test_invalid_pruner_configs(name: str, options: dict[str, Any] | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_pruner(name, options)
