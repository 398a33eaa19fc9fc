"""Tests of make_sampler and the auto policy (sigtune._samplers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from _sampler_runs import N_TRIALS, SPACE, params_sequence, run

from sigtune import AutoSampler, ConfigError, SearchSpace, make_sampler
from sigtune._samplers import SAMPLER_NAMES, AutoChoice, AutoContext, auto_policy

optuna.logging.set_verbosity(optuna.logging.WARNING)

ALL = list(SAMPLER_NAMES)
MULTI_OBJECTIVE = ["random", "grid", "tpe", "gp", "qmc", "nsga2", "nsga3", "bruteforce", "auto"]
EXPECTED_CLASS = {
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "tpe": optuna.samplers.TPESampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "nsga3": optuna.samplers.NSGAIIISampler,
    "bruteforce": optuna.samplers.BruteForceSampler,
    "auto": AutoSampler,
}


def _in_domain(params: dict[str, Any]) -> bool:
    return (
        -2.0 <= params["x"] <= 2.0
        and (params["x"] * 2).is_integer()
        and isinstance(params["y"], int)
        and -3 <= params["y"] <= 3
        and params["c"] in ("a", "b")
    )


@pytest.mark.parametrize("name", ALL)
def test_conformance_single_objective(name: str) -> None:
    assert isinstance(
        make_sampler(name, seed=0, space=SPACE, n_trials=N_TRIALS), EXPECTED_CLASS[name]
    )
    study = run(name, seed=0)
    trials = study.trials
    assert len(trials) == N_TRIALS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(_in_domain(SPACE.params_from_trial(t)) for t in trials)
    assert study.best_value == min(t.value for t in trials)


@pytest.mark.parametrize("name", MULTI_OBJECTIVE)
def test_conformance_multi_objective(name: str) -> None:
    study = run(name, seed=0, n_objectives=2)
    assert len(study.trials) == N_TRIALS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    front = study.best_trials
    assert front
    # Pareto oracle: no trial dominates a front member
    for best in front:
        for other in study.trials:
            assert not all(o <= b for o, b in zip(other.values, best.values, strict=True)) or (
                other.values == best.values
            )


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_params_in_process(name: str) -> None:
    first = params_sequence(name, seed=7)
    assert first == params_sequence(name, seed=7)
    assert first != params_sequence(name, seed=8)


@pytest.mark.slow
def test_same_seed_same_params_across_processes() -> None:
    here = Path(__file__).parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, str(here / "_sampler_runs.py"), ",".join(ALL), "11"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=300,
    )
    other_process = json.loads(out.stdout)
    for name in ALL:
        assert other_process[name] == params_sequence(name, seed=11), name


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        make_sampler("tpee")
    for name in ALL:
        assert name in str(info.value)


def test_unknown_option_lists_valid_options() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown option\(s\) multivariat for sampler 'tpe'.*multivariate"
    ):
        make_sampler("tpe", options={"multivariat": True})
    with pytest.raises(ConfigError, match=r"valid options: \(none\)"):
        make_sampler("random", options={"x": 1})


def test_option_types_are_checked() -> None:
    with pytest.raises(
        ConfigError, match=r"sampler\.options\.n_startup_trials: Input should be a valid integer"
    ):
        make_sampler("tpe", options={"n_startup_trials": "many"})


def test_option_values_optuna_rejects_become_config_errors() -> None:
    with pytest.raises(ConfigError, match="invalid options for 'tpe'"):
        make_sampler("tpe", options={"group": True, "multivariate": False})


def test_tpe_options_pass_through() -> None:
    sampler = make_sampler(
        "tpe",
        seed=1,
        options={"multivariate": True, "group": True, "n_startup_trials": 3, "constant_liar": True},
    )
    assert isinstance(sampler, optuna.samplers.TPESampler)
    # behavioural check: with 3 startup trials the 4th trial is already model-based, so a
    # sampler with n_startup_trials=3 and one with the default (10) differ from trial 4 on.
    default = make_sampler("tpe", seed=1, options={"multivariate": True, "group": True})

    def seq(s: optuna.samplers.BaseSampler) -> list[float]:
        study = optuna.create_study(sampler=s)
        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=6)
        return [t.params["x"] for t in study.trials]

    a, b = seq(sampler), seq(default)
    assert a[:3] == b[:3] and a[3:] != b[3:]


def test_grid_needs_discrete_space_or_explicit_grid() -> None:
    with pytest.raises(ConfigError, match="'grid' needs a discrete search space"):
        make_sampler("grid")
    with pytest.raises(ConfigError, match="x is continuous"):
        make_sampler("grid", space={"x": {"bounds": [0, 1]}})
    sampler = make_sampler("grid", options={"search_space": {"x": [0, 1, 2]}})
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_int("x", 0, 2), n_trials=10)
    assert sorted(t.params["x"] for t in study.trials) == [0, 1, 2]
    with pytest.raises(ConfigError, match="non-empty lists"):
        make_sampler("grid", options={"search_space": {"x": []}})


def test_nested_independent_sampler_and_crossover_names() -> None:
    cma = make_sampler(
        "cmaes",
        seed=0,
        options={"independent_sampler": {"name": "tpe", "options": {"n_startup_trials": 2}}},
    )
    assert isinstance(cma, optuna.samplers.CmaEsSampler)
    nsga = make_sampler("nsga2", seed=0, options={"crossover": "sbx", "population_size": 10})
    assert isinstance(nsga, optuna.samplers.NSGAIISampler)
    with pytest.raises(ConfigError, match="unknown crossover 'nope'"):
        make_sampler("nsga2", options={"crossover": "nope"})
    with pytest.raises(ConfigError, match="independent_sampler: must be a sampler name"):
        make_sampler("cmaes", options={"independent_sampler": 3})


@pytest.mark.filterwarnings("ignore:`gamma` has been deprecated")
def test_callable_option_from_module_reference() -> None:
    sampler = make_sampler("tpe", options={"gamma": "optuna.samplers._tpe.sampler:default_gamma"})
    assert isinstance(sampler, optuna.samplers.TPESampler)
    with pytest.raises(ConfigError, match=r"sampler\.options\.gamma"):
        make_sampler("tpe", options={"gamma": "no_such_module_xyz:fn"})


# ---------------------------------------------------------------------- auto policy


def _ctx(**kw: Any) -> AutoContext:
    base: dict[str, Any] = {"n_objectives": 1, "n_trials": 100, "space_known": True, "dimension": 3}
    return AutoContext(**{**base, **kw})


@pytest.mark.parametrize(
    ("ctx", "expected"),
    [
        (_ctx(n_objectives=2, n_trials=1000), "nsga2"),
        (_ctx(n_objectives=2, n_trials=None), "nsga2"),
        (_ctx(n_objectives=4, n_trials=1000), "nsga3"),
        (_ctx(n_objectives=2, n_trials=50), "gp"),
        (_ctx(n_objectives=2, n_trials=50, categorical=True), "tpe"),
        (_ctx(n_objectives=2, n_trials=150), "tpe"),
        (_ctx(space_known=False), "tpe"),
        (_ctx(dimension=0), "random"),
        (_ctx(discrete=True, grid_size=50, static_grid=True), "grid"),
        (_ctx(discrete=True, grid_size=50, static_grid=True, conditional=True), "bruteforce"),
        (_ctx(discrete=True, grid_size=50, static_grid=False), "bruteforce"),
        (_ctx(discrete=True, grid_size=500, static_grid=True, categorical=True), "tpe"),
        (_ctx(conditional=True), "tpe"),
        (_ctx(categorical=True), "tpe"),
        (_ctx(dimension=5, n_trials=200), "gp"),
        (_ctx(dimension=5, n_trials=200, gp_available=False), "tpe"),
        (_ctx(dimension=11, n_trials=100), "tpe"),
        (_ctx(dimension=5, n_trials=1000), "cmaes"),
        (_ctx(dimension=1, n_trials=1000), "tpe"),
        (_ctx(dimension=5, n_trials=None), "tpe"),
        (_ctx(dimension=5, n_trials=300, options={"gp_max_trials": 500}), "gp"),
        (_ctx(dimension=12, n_trials=100, options={"gp_max_dim": 20}), "gp"),
        (_ctx(n_objectives=2, n_trials=150, options={"mo_min_trials_for_nsga": 10}), "nsga2"),
    ],
)
def test_auto_policy_branches(ctx: AutoContext, expected: str) -> None:
    choice = auto_policy(ctx)
    assert choice.name == expected
    assert choice.reason


def test_auto_policy_options() -> None:
    assert auto_policy(_ctx(conditional=True)).options == {"multivariate": True, "group": True}
    assert auto_policy(_ctx(categorical=True)).options == {"multivariate": True, "group": False}
    cma = auto_policy(_ctx(dimension=4, n_trials=1000))
    assert cma.options == {"n_startup_trials": 100, "independent_sampler": "tpe"}
    cma = auto_policy(_ctx(dimension=4, n_trials=1000, options={"cmaes_startup_trials": 7}))
    assert cma.options["n_startup_trials"] == 7


CONTINUOUS = {"a": {"bounds": [0, 1]}, "b": {"bounds": [0, 1]}}


@pytest.mark.parametrize(
    ("space", "n_trials", "n_objectives", "name", "cls"),
    [
        (CONTINUOUS, 50, 2, "gp", optuna.samplers.GPSampler),
        (CONTINUOUS, 150, 2, "tpe", optuna.samplers.TPESampler),
        (CONTINUOUS, 500, 2, "nsga2", optuna.samplers.NSGAIISampler),
        (
            {"n": {"value_type": "int", "bounds": [1, 4]}, "c": {"values": [1, 2]}},
            8,
            1,
            "grid",
            optuna.samplers.GridSampler,
        ),
        (
            {
                "n": {"value_type": "int", "bounds": [1, 4]},
                "c": {"values": [1, 2], "only": "n > 2"},
            },
            8,
            1,
            "bruteforce",
            optuna.samplers.BruteForceSampler,
        ),
        (
            {**CONTINUOUS, "c": {"values": [1, 2], "only": "a > 0.5"}},
            100,
            1,
            "tpe",
            optuna.samplers.TPESampler,
        ),
        (CONTINUOUS, 100, 1, "gp", optuna.samplers.GPSampler),
        (CONTINUOUS, 1000, 1, "cmaes", optuna.samplers.CmaEsSampler),
    ],
)
def test_auto_sampler_decides_from_space(
    space: dict[str, Any], n_trials: int, n_objectives: int, name: str, cls: type
) -> None:
    sampler = make_sampler(
        "auto", seed=0, space=space, n_trials=n_trials, n_objectives=n_objectives
    )
    assert isinstance(sampler, AutoSampler)
    assert sampler.choice is not None and sampler.choice.name == name
    assert isinstance(sampler.sampler, cls)


def test_auto_without_torch_avoids_gp(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real(n, *a)
    )
    sampler = make_sampler("auto", space=CONTINUOUS, n_trials=100)
    assert isinstance(sampler, AutoSampler) and sampler.choice is not None
    assert sampler.choice.name == "tpe"


def test_auto_learns_define_by_run_space_from_first_trial() -> None:
    sampler = make_sampler("auto", seed=0, n_trials=100)
    assert isinstance(sampler, AutoSampler)
    assert sampler.choice is None
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=3)
    assert sampler.choice is not None and sampler.choice.name == "gp"
    assert isinstance(sampler.sampler, optuna.samplers.GPSampler)

    categorical = make_sampler("auto", seed=0, n_trials=100)
    assert isinstance(categorical, AutoSampler)
    study = optuna.create_study(sampler=categorical)
    study.optimize(lambda t: float(t.suggest_categorical("c", [1, 2, 3])), n_trials=2)
    assert categorical.choice is not None and categorical.choice.name == "bruteforce"


def test_auto_multi_objective_without_space_decides_from_study() -> None:
    sampler = AutoSampler(seed=0, n_trials=1000)
    study = optuna.create_study(sampler=sampler, directions=["minimize", "maximize"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=2)
    assert sampler.choice is not None and sampler.choice.name == "nsga2"


def _my_policy(ctx: AutoContext) -> AutoChoice:
    return AutoChoice("qmc", {"scramble": True}, f"custom for {ctx.dimension} params")


def test_auto_custom_policy_callable_and_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampler = make_sampler("auto", space=CONTINUOUS, options={"policy": _my_policy})
    assert isinstance(sampler, AutoSampler) and isinstance(
        sampler.sampler, optuna.samplers.QMCSampler
    )
    assert sampler.choice == AutoChoice("qmc", {"scramble": True}, "custom for 2 params")

    (tmp_path / "policy_mod.py").write_text(
        "def pick(ctx):\n    return ('random', {})\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    sampler = make_sampler("auto", space=CONTINUOUS, options={"policy": "policy_mod.py:pick"})
    assert isinstance(sampler, AutoSampler) and isinstance(
        sampler.sampler, optuna.samplers.RandomSampler
    )


def test_auto_rejects_bad_policies_and_options() -> None:
    with pytest.raises(ConfigError, match="the policy chose 'auto'"):
        make_sampler("auto", space=CONTINUOUS, options={"policy": lambda ctx: ("auto", {})})
    with pytest.raises(ConfigError, match="must return an AutoChoice"):
        make_sampler("auto", space=CONTINUOUS, options={"policy": lambda ctx: "tpe"})
    with pytest.raises(ConfigError, match=r"sampler\.options\.policy"):
        make_sampler("auto", space=CONTINUOUS, options={"policy": "nope_mod_xyz:f"})
    with pytest.raises(ConfigError, match="gp_max_dim: must be an integer"):
        make_sampler("auto", options={"gp_max_dim": -1})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) gp_max for sampler 'auto'"):
        make_sampler("auto", options={"gp_max": 3})


@pytest.mark.filterwarnings("ignore:`constraints_func` has been deprecated")
def test_auto_forwards_constraints_to_capable_samplers() -> None:
    def cons(trial: optuna.trial.FrozenTrial) -> list[float]:
        return [trial.params["a"] - 0.5]

    sampler = make_sampler(
        "auto",
        seed=0,
        space={"a": {"bounds": [0, 1]}, "c": {"values": [1, 2]}},
        n_trials=50,
        options={"constraints_func": cons},
    )
    assert isinstance(sampler, AutoSampler) and isinstance(
        sampler.sampler, optuna.samplers.TPESampler
    )
    assert sampler.sampler._constraints_func is cons
    # cmaes has no constraints: the option is dropped rather than failing
    sampler = make_sampler(
        "auto", space=CONTINUOUS, n_trials=1000, options={"constraints_func": cons}
    )
    assert isinstance(sampler, AutoSampler) and isinstance(
        sampler.sampler, optuna.samplers.CmaEsSampler
    )


def test_space_accepts_search_space_object() -> None:
    space = SearchSpace.from_dict({"n": {"value_type": "int", "bounds": [0, 2]}})
    sampler = make_sampler("grid", space=space)
    assert isinstance(sampler, optuna.samplers.GridSampler)


def test_auto_chooses_again_when_the_study_has_other_objectives() -> None:
    sampler = make_sampler("auto", seed=0, space=CONTINUOUS, n_trials=1000, n_objectives=1)
    assert isinstance(sampler, AutoSampler) and sampler.choice is not None
    assert sampler.choice.name == "cmaes"
    study = optuna.create_study(sampler=sampler, directions=["minimize", "minimize"])
    study.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), n_trials=2)
    assert sampler.choice.name == "nsga2"
    assert isinstance(sampler.sampler, optuna.samplers.NSGAIISampler)
