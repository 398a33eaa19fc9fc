"""The ``auto`` sampler: each policy branch chosen on a space built to trigger it, and the
per-trial record of which sampler was used and why (user attrs ``auto:sampler``/``auto:reason``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from sigtune import SearchSpace
from sigtune._exceptions import ConfigError
from sigtune._samplers import (
    AUTO_REASON_ATTR,
    AUTO_SAMPLER_ATTR,
    GP_ACQUISITION_KNOBS,
    MO_GP_ACQUISITION,
    AutoChoice,
    AutoSampler,
    auto_summary,
    make_sampler,
)

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
        (NUMERIC, 20, 2, "gp", "2 objectives"),
        (NUMERIC, 150, 2, "tpe", "small budget"),
        (CATEGORICAL, 20, 2, "tpe", "objectives"),
        (NUMERIC, 20, 3, "tpe", "3 objectives"),
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


# ---------------------------------------------------------------------- staged policies


def _staged(first: str, then: AutoChoice, after: int, patience: int | None = None) -> Any:
    def policy(ctx: Any) -> AutoChoice:
        return AutoChoice(
            first, {}, "first stage", then=then, switch_after=after, switch_patience=patience
        )

    return policy


def _run_policy(policy: Any, n_run: int, objective: Any, seed: int = 0) -> optuna.Study:
    space = SearchSpace.from_dict(NUMERIC)
    sampler = make_sampler(
        "auto", seed=seed, space=space, n_trials=n_run, options={"policy": policy}
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: objective(space.suggest(t)), n_trials=n_run)
    return study


def test_switch_after_n_complete_trials_recorded_per_trial() -> None:
    then = AutoChoice("cmaes", {}, "refine")
    study = _run_policy(_staged("random", then, 6), 12, lambda p: p["a"] ** 2 + p["b"])
    used = [t.user_attrs[AUTO_SAMPLER_ATTR] for t in study.trials]
    assert used == ["random"] * 6 + ["cmaes"] * 6
    assert all(t.user_attrs[AUTO_REASON_ATTR] == "first stage" for t in study.trials[:6])
    assert study.trials[6].user_attrs[AUTO_REASON_ATTR] == "refine (random for 6 complete trials)"
    # the trials after the switch were sampled by CMA-ES (its generation attr is stored)
    assert all(any(k.startswith("cma:") for k in t.system_attrs) for t in study.trials[6:])
    assert not any(any(k.startswith("cma:") for k in t.system_attrs) for t in study.trials[:6])


def test_switch_on_patience_waits_for_a_stall() -> None:
    then = AutoChoice("tpe", {}, "stalled")
    # improves on every trial for 8 trials, then is constant: the stall is seen at trial 8 + 3
    values = iter([10.0 - i for i in range(8)] + [5.0] * 20)
    study = _run_policy(_staged("random", then, 4, patience=3), 14, lambda p: next(values))
    used = [t.user_attrs[AUTO_SAMPLER_ATTR] for t in study.trials]
    assert used == ["random"] * 11 + ["tpe"] * 3
    assert "no improvement in the last 3" in study.trials[11].user_attrs[AUTO_REASON_ATTR]


def test_staged_auto_is_deterministic_for_a_seed() -> None:
    then = AutoChoice("cmaes", {"source_trials": "completed"}, "warm-started CMA-ES")
    runs = [
        _run_policy(_staged("random", then, 5), 14, lambda p: (p["a"] - 0.3) ** 2, seed=2)
        for _ in range(2)
    ]
    assert [t.params for t in runs[0].trials] == [t.params for t in runs[1].trials]
    # the warm start needs 10 complete trials: the switch waits for them
    used = [t.user_attrs[AUTO_SAMPLER_ATTR] for t in runs[0].trials]
    assert used == ["random"] * 10 + ["cmaes"] * 4


def test_policy_choosing_an_unknown_next_stage_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="it must choose one of"):
        make_sampler(
            "auto",
            space=SearchSpace.from_dict(NUMERIC),
            n_trials=10,
            options={"policy": _staged("random", AutoChoice("nope"), 3)},
        )


# ---------------------------------------------------------------------- explained to the user


def test_auto_summary_line() -> None:
    line = auto_summary(space=NUMERIC, n_trials=40)
    assert line == "auto sampler: gp (numeric space of dimension 2, budget 40)"
    assert auto_summary(space=CONDITIONAL, n_trials=40).startswith("auto sampler: tpe (")
    assert "after the first trial" in auto_summary(space=None, n_trials=40)
    staged = AutoChoice("gp", {}, "why", then=AutoChoice("cmaes", {}, "refine"), switch_after=9)
    assert staged.describe() == "gp (why), then after 9 complete trials: cmaes (refine)"


def test_run_prints_auto_choice_and_report_shows_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sigtune.cli import app

    (tmp_path / "obj.py").write_text("def f(params, trial):\n    return params['x'] ** 2\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"study_name: autotest\nrun_dir: {tmp_path / 'run'}\nn_trials: 6\nseed: 1\n"
        "sampler: auto\nreport: true\nobjective: obj.py:f\n"
        "search_space:\n  x: {type: range, value_type: float, bounds: [-2, 2]}\n"
        "  k: {type: choice, values: [0, 1]}\n"
    )
    result = CliRunner().invoke(app, ["run", str(cfg)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "auto sampler: tpe (categorical parameters)"
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Sampler chosen by auto" in page
    assert "<td>tpe</td><td>categorical parameters</td><td>6</td><td>0-5</td>" in page


def test_constrained_numeric_space_gets_gp_with_the_constraints() -> None:
    space = SearchSpace.from_dict(NUMERIC)
    sampler = make_sampler(
        "auto",
        seed=0,
        space=space,
        n_trials=12,
        options={"constraints_func": lambda t: [t.params["a"]]},  # feasible when a <= 0
    )
    assert isinstance(sampler, AutoSampler) and sampler.choice is not None
    assert sampler.choice.name == "gp"
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: sum(space.suggest(t).values()), n_trials=12)
    # the GP was given the constraints: it stored them on every trial
    assert all(list(t.system_attrs["constraints"]) == [t.params["a"]] for t in study.trials)


FIVE_D = {f"x{i}": {"bounds": [-1.0, 1.0]} for i in range(5)}


def test_gp_then_cmaes_refinement_from_dimension_five() -> None:
    sampler, study = _run(FIVE_D, 20, 17)
    assert sampler.choice is not None and sampler.choice.then is not None
    assert sampler.choice.switch_after == 15 and sampler.choice.then.name == "cmaes"
    used = [t.user_attrs[AUTO_SAMPLER_ATTR] for t in study.trials]
    assert used == ["gp"] * 15 + ["cmaes"] * 2
    assert "local refinement" in study.trials[15].user_attrs[AUTO_REASON_ATTR]
    # CMA-ES starts at the incumbent with a small step: its points are near the best point
    best = min(study.trials[:15], key=lambda t: t.value)
    for t in study.trials[15:]:
        assert max(abs(t.params[k] - best.params[k]) for k in best.params) < 0.6
    line = auto_summary(space=FIVE_D, n_trials=20)
    assert line.startswith("auto sampler: gp (numeric space of dimension 5, budget 20), then after")
    # 2 dimensions, or refine_min_dim null: plain GP
    assert auto_summary(space=FIVE_D, n_trials=20, options={"refine_min_dim": None}) == (
        "auto sampler: gp (numeric space of dimension 5, budget 20)"
    )


def test_bad_refine_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="refine_fraction"):
        make_sampler("auto", options={"refine_fraction": 1.5})
    with pytest.raises(ConfigError, match="refine_min_dim"):
        make_sampler("auto", options={"refine_min_dim": "five"})


def test_two_objectives_get_the_gp_with_a_lighter_acquisition() -> None:
    sampler, study = _run(NUMERIC, 48, 12, n_objectives=2)
    assert sampler.choice is not None and sampler.choice.name == "gp"
    assert sampler.choice.options["acquisition"] == dict(MO_GP_ACQUISITION)
    gp = sampler.sampler
    assert isinstance(gp, optuna.samplers.GPSampler)
    default = optuna.samplers.GPSampler()
    # the knobs the installed Optuna has are lowered; the others are not invented
    assert gp._n_preliminary_samples == 256 < default._n_preliminary_samples
    for key, attr in GP_ACQUISITION_KNOBS.items():
        if hasattr(default, attr):
            assert getattr(gp, attr) == MO_GP_ACQUISITION[key] < getattr(default, attr)
        else:
            assert not hasattr(gp, attr)
    # the GP (not its random start-up only) proposed the last trials: 2 objectives recorded
    assert all(len(t.values) == 2 for t in study.trials)
    assert {t.user_attrs[AUTO_SAMPLER_ATTR] for t in study.trials} == {"gp"}
    # one objective keeps Optuna's own settings
    single, _ = _run(NUMERIC, 40, 1)
    assert single.choice is not None and "acquisition" not in single.choice.options
    assert single.sampler._n_preliminary_samples == default._n_preliminary_samples  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "acquisition", "match"),
    [
        ("gp", {"n_restarts": 3}, "unknown acquisition setting 'n_restarts'"),
        ("gp", {"n_local_search": 0}, "integer >= 1"),
        ("gp", [("n_local_search", 2)], "must be a mapping"),
        ("tpe", {"n_local_search": 2}, "applies to 'gp' only"),
    ],
)
def test_bad_acquisition_in_a_policy_is_a_config_error(
    name: str, acquisition: Any, match: str
) -> None:
    def policy(ctx: Any) -> AutoChoice:
        return AutoChoice(name, {"acquisition": acquisition}, "custom")

    with pytest.raises(ConfigError, match=match):
        make_sampler("auto", space=NUMERIC, n_trials=20, options={"policy": policy})


def test_constrained_five_dimensional_space_gets_a_lean_gp_without_refinement() -> None:
    space = SearchSpace.from_dict(FIVE_D)
    sampler = make_sampler(
        "auto",
        seed=0,
        space=space,
        n_trials=40,
        options={"constraints_func": lambda t: [t.params["x0"]]},
    )
    assert isinstance(sampler, AutoSampler) and sampler.choice is not None
    # no CMA-ES stage (it would ignore the constraints), lighter acquisition optimisation
    assert sampler.choice.name == "gp" and sampler.choice.then is None
    assert sampler.choice.reason.startswith("constrained, numeric space of dimension 5")
    assert sampler.choice.options["acquisition"] == dict(MO_GP_ACQUISITION)
    gp = sampler.sampler
    assert isinstance(gp, optuna.samplers.GPSampler) and gp._n_local_search == 4
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: sum(space.suggest(t).values()), n_trials=3)
    assert all(t.user_attrs[AUTO_SAMPLER_ATTR] == "gp" for t in study.trials)
    assert all(list(t.system_attrs["constraints"]) == [t.params["x0"]] for t in study.trials)
    # the same space without constraints: GP, then the CMA-ES refinement
    plain = make_sampler("auto", seed=0, space=space, n_trials=40)
    assert isinstance(plain, AutoSampler) and plain.choice is not None
    assert plain.choice.then is not None and "acquisition" not in plain.choice.options
