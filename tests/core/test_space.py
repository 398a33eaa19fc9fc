"""Tests of the declarative search space (sigtune._space)."""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sigtune import SearchSpace, SearchSpaceError

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(space: SearchSpace, n: int, sampler: optuna.samplers.BaseSampler | None = None):
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return study, out


OPTIMA_LIKE: dict[str, Any] = {
    "num_layers": {"type": "range", "value_type": "int", "bounds": [2, 5]},
    "units_1": {"type": "range", "value_type": "int", "bounds": [8, 64], "sampling": "log"},
    "units_2": {"type": "range", "value_type": "int", "bounds": [4, "units_1"]},
    "dropout": {"type": "range", "bounds": [0.0, 0.5], "step": 0.1, "only": "num_layers >= 4"},
    "dropout_2": {"bounds": [0.0, "dropout"]},
    "lr": {"bounds": [1e-4, 1e-1], "sampling": "log"},
    "activation": {"type": "choice", "values": ["relu", "tanh", "swish"]},
    "epochs": 20,
    "optimizer": {"type": "fixed", "value": {"name": "adam"}},
}


def test_suggest_returns_every_parameter_with_types_and_bounds() -> None:
    space = SearchSpace.from_dict(OPTIMA_LIKE)
    _, samples = _sample(space, 200)
    seen_inactive = seen_active = False
    for p in samples:
        assert list(p) == list(OPTIMA_LIKE)
        assert isinstance(p["num_layers"], int) and 2 <= p["num_layers"] <= 5
        assert isinstance(p["units_1"], int) and 8 <= p["units_1"] <= 64
        assert isinstance(p["units_2"], int) and 4 <= p["units_2"] <= p["units_1"]
        assert 1e-4 <= p["lr"] <= 1e-1
        assert p["activation"] in ("relu", "tanh", "swish")
        assert p["epochs"] == 20
        assert p["optimizer"] == {"name": "adam"}
        if p["num_layers"] >= 4:
            seen_active = True
            assert p["dropout"] is not None
            assert math.isclose(p["dropout"] * 10, round(p["dropout"] * 10), abs_tol=1e-9)
            assert 0.0 <= p["dropout_2"] <= p["dropout"]
        else:
            seen_inactive = True
            assert p["dropout"] is None and p["dropout_2"] is None
    assert seen_active and seen_inactive


def test_inactive_parameters_are_not_suggested_to_optuna() -> None:
    space = SearchSpace.from_dict(OPTIMA_LIKE)
    study, samples = _sample(space, 40)
    for trial, p in zip(study.trials, samples, strict=True):
        assert ("dropout" in trial.params) == (p["dropout"] is not None)
        assert "epochs" not in trial.params and "optimizer" not in trial.params


def test_log_sampling_is_uniform_in_log() -> None:
    space = SearchSpace.from_dict({"lr": {"bounds": [1e-4, 1.0], "sampling": "log"}})
    _, samples = _sample(space, 2000)
    logs = np.log10([p["lr"] for p in samples])
    # oracle: log10(lr) ~ U(-4, 0)
    assert stats.kstest(logs, stats.uniform(loc=-4, scale=4).cdf).pvalue > 1e-3


def test_int_step_and_float_step() -> None:
    space = SearchSpace.from_dict(
        {
            "n": {"value_type": "int", "bounds": [10, 100], "step": 10},
            "x": {"bounds": [0.0, 1.0], "step": 0.25},
        }
    )
    _, samples = _sample(space, 100)
    assert {p["n"] for p in samples} <= set(range(10, 101, 10))
    assert {p["x"] for p in samples} <= {0.0, 0.25, 0.5, 0.75, 1.0}


def test_step_not_dividing_range_is_accepted_without_warnings() -> None:
    space = SearchSpace.from_dict({"x": {"bounds": [0.0, 1.0], "step": 0.3}})
    assert space.grid() == {"x": [0.0, 0.3, 0.6, 0.9]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna's "range is not divisible by step" included
        _, samples = _sample(space, 50)
    assert {p["x"] for p in samples} == {0.0, 0.3, 0.6, 0.9}


def test_float_steps_are_exact_decimals() -> None:
    space = SearchSpace.from_dict({"x": {"bounds": [-1.05, 2.0], "step": 0.35}})
    expected = [-1.05, -0.7, -0.35, 0.0, 0.35, 0.7, 1.05, 1.4, 1.75]
    assert space.grid() == {"x": expected}
    _, samples = _sample(space, 300)
    assert {p["x"] for p in samples} == set(expected)  # no 0.34999999999999987


@pytest.mark.parametrize(
    ("definition", "oracle"),
    [
        ({"mean": 1.0, "std": 2.0}, stats.norm(loc=1.0, scale=2.0)),
        (
            {"mean": 0.0, "std": 1.0, "bounds": [-0.5, 2.0]},
            stats.truncnorm(-0.5, 2.0, loc=0.0, scale=1.0),
        ),
        (
            {"mean": 5.0, "std": 2.0, "bounds": [0.0, 6.0]},
            stats.truncnorm(-2.5, 0.5, loc=5.0, scale=2.0),
        ),
    ],
)
def test_normal_sampling_matches_scipy(definition: dict[str, Any], oracle: Any) -> None:
    space = SearchSpace.from_dict({"x": {"sampling": "normal", **definition}})
    study, samples = _sample(space, 2000)
    xs = np.array([p["x"] for p in samples])
    assert stats.kstest(xs, oracle.cdf).pvalue > 1e-3
    if "bounds" in definition:
        lo, hi = definition["bounds"]
        assert xs.min() >= lo and xs.max() <= hi
    # Optuna stores the CDF value under <name>__cdf
    assert set(study.trials[0].params) == {"x__cdf"}


def test_normal_int_with_step() -> None:
    space = SearchSpace.from_dict(
        {
            "n": {
                "value_type": "int",
                "sampling": "normal",
                "mean": 50,
                "std": 20,
                "bounds": [0, 100],
                "step": 5,
            }
        }
    )
    _, samples = _sample(space, 300)
    values = [p["n"] for p in samples]
    assert all(isinstance(v, int) and 0 <= v <= 100 and v % 5 == 0 for v in values)
    assert abs(np.mean(values) - 50) < 4


def test_declaration_order_does_not_matter() -> None:
    space = SearchSpace.from_dict(
        {
            "b": {"value_type": "int", "bounds": [1, "a"]},
            "c": {"values": ["x", "y"], "only": "b > 1"},
            "a": {"value_type": "int", "bounds": [1, 10]},
        }
    )
    assert space.order == ("a", "b", "c")
    assert space.names == ("b", "c", "a")
    _, samples = _sample(space, 50)
    assert all(1 <= p["b"] <= p["a"] for p in samples)
    assert all((p["c"] is None) == (p["b"] == 1) for p in samples)


def test_only_list_forms_and_callables() -> None:
    space = SearchSpace.from_dict(
        {
            "n": {"value_type": "int", "bounds": [1, 6]},
            "act": {"values": ["relu", "tanh"]},
            "a": {"bounds": [0, 1], "only": ["n", "n >= 3"]},
            "b": {"bounds": [0, 1], "only": ["n", "act", lambda n, act: n >= 3 and act == "relu"]},
            "c": {"bounds": [0, 1], "only": (["n"], lambda n: n == 1)},
            "d": {"bounds": [0, 1], "only": lambda p: p["n"] % 2 == 0},
        }
    )
    _, samples = _sample(space, 150)
    for p in samples:
        assert (p["a"] is not None) == (p["n"] >= 3)
        assert (p["b"] is not None) == (p["n"] >= 3 and p["act"] == "relu")
        assert (p["c"] is not None) == (p["n"] == 1)
        assert (p["d"] is not None) == (p["n"] % 2 == 0)


def test_dynamic_bounds_all_forms() -> None:
    space = SearchSpace.from_dict(
        {
            "u": {"value_type": "int", "bounds": [2, 64]},
            "whole": {"value_type": "int", "bounds": "[1, u // 2]"},
            "pair": {"bounds": (["u"], lambda u: (0.0, u / 10))},
            "element": {"bounds": [0.0, (["u"], lambda u: float(u))]},
            "bare": {"bounds": lambda p: (p["u"], p["u"] + 1), "value_type": "int"},
            "choice": {"values": "[u, 2 * u, 3 * u]"},
        }
    )
    study, samples = _sample(space, 100, optuna.samplers.TPESampler(seed=1, multivariate=True))
    for p in samples:
        assert 1 <= p["whole"] <= p["u"] // 2
        assert 0.0 <= p["pair"] <= p["u"] / 10
        assert 0.0 <= p["element"] <= p["u"]
        assert p["bare"] in (p["u"], p["u"] + 1)
        assert p["choice"] in (p["u"], 2 * p["u"], 3 * p["u"])
    assert "choice__index" in study.trials[0].params
    assert "whole" in study.trials[0].params  # changing ranges keep the parameter's name


def test_dependency_on_inactive_parameter_makes_parameter_inactive() -> None:
    space = SearchSpace.from_dict(
        {
            "n": {"value_type": "int", "bounds": [1, 2]},
            "a": {"value_type": "int", "bounds": [1, 5], "only": "n == 2"},
            "b": {"value_type": "int", "bounds": [1, "a"]},
        }
    )
    _, samples = _sample(space, 40)
    assert all((p["b"] is None) == (p["a"] is None) for p in samples)
    assert any(p["b"] is None for p in samples) and any(p["b"] is not None for p in samples)


def test_runtime_invalid_dynamic_bounds_raise_naming_parameter() -> None:
    space = SearchSpace.from_dict(
        {"a": {"bounds": [1, 2]}, "b": {"bounds": ["a + 5", 3]}},
    )
    study = optuna.create_study()
    with pytest.raises(SearchSpaceError, match=r"search_space\.b: `low <= high` must hold"):
        space.suggest(study.ask())


def test_cycle_is_reported_with_its_members() -> None:
    with pytest.raises(SearchSpaceError) as info:
        SearchSpace.from_dict(
            {
                "free": {"bounds": [0, 1]},
                "a": {"bounds": [0, "c"]},
                "b": {"bounds": [0, "a"]},
                "c": {"bounds": [0, 1], "only": "b > 0"},
            }
        )
    message = str(info.value)
    assert "cyclic dependency" in message
    cycle = message.split("cyclic dependency ")[1].split(" -> ")
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_self_reference_is_a_cycle() -> None:
    with pytest.raises(SearchSpaceError, match="cyclic dependency a -> a"):
        SearchSpace.from_dict({"a": {"bounds": [0, "a"]}})


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (
            {"bounds": [5, 1]},
            r"search_space\.p: `low <= high` must hold, but got \(low=5, high=1\)",
        ),
        ({"bounds": [0, 1], "sampling": "log"}, r"search_space\.p: sampling 'log' needs `low > 0`"),
        ({"bounds": [-1, "q"], "sampling": "log"}, r"search_space\.p: sampling 'log' needs"),
        ({"bounds": [1, 10], "sampling": "log", "step": 1}, r"search_space\.p: `step` cannot"),
        ({"bounds": [0, 1], "step": 0}, r"search_space\.p\.step: must be a number > 0"),
        ({"bounds": [0, 1], "step": -0.5}, r"search_space\.p\.step: must be a number > 0"),
        ({"bounds": [0, 10], "value_type": "int", "step": 0.5}, r"p\.step: must be an integer"),
        ({"bounds": [0, 1], "bouns": 1}, r"search_space\.p: unknown key\(s\) bouns"),
        ({"bounds": [0, "nope"]}, r"search_space\.p: refers to unknown parameter\(s\) nope"),
        ({"values": []}, r"search_space\.p\.values: must be a non-empty list"),
        ({"type": "choice"}, r"search_space\.p: type 'choice' needs `values`"),
        ({"values": [[1, 2], [3]]}, r"choices must be None, bool, int, float or str"),
        ({"values": ["a", "a"]}, r"choices must be unique"),
        (
            {"values": [1, 2.5], "value_type": "int"},
            r"value_type is 'int', but got choices \[2\.5\]",
        ),
        (
            {"values": [1, "x"], "value_type": "float"},
            r"value_type is 'float', but got choices \['x'\]",
        ),
        ({"values": [1], "value_type": "str"}, r"search_space\.p\.value_type: must be one of"),
        ({"sampling": "normal", "mean": 0}, r"search_space\.p: sampling 'normal' needs `std`"),
        ({"sampling": "normal", "std": 1}, r"search_space\.p: sampling 'normal' needs `mean`"),
        ({"sampling": "normal", "mean": 0, "std": 0}, r"search_space\.p\.std: must be > 0"),
        ({"bounds": [0, 1], "std": 1}, r"`std` is only allowed with sampling 'normal'"),
        ({"bounds": [0, 1], "sampling": "gauss"}, r"search_space\.p\.sampling: must be one of"),
        ({"bounds": [0, 1], "value_type": "str"}, r"search_space\.p\.value_type: must be one of"),
        ({"type": "ranges", "bounds": [0, 1]}, r"search_space\.p\.type: must be one of"),
        ({"bounds": [0.5, 3], "value_type": "int"}, r"low must be an integer for value_type int"),
        ({"bounds": [0, 1, 2]}, r"search_space\.p\.bounds: must be \[low, high\]"),
        ({"bounds": [0, None]}, r"search_space\.p\.bounds: high must be a number"),
        ({"bounds": [0, float("inf")]}, r"high must be finite"),
        ({"type": "range"}, r"type 'range' needs `bounds: \[low, high\]`"),
        ({"type": "fixed"}, r"type 'fixed' needs a `value`"),
        ({"bounds": [0, 1], "only": 3}, r"search_space\.p\.only: `only` must be"),
        ({"bounds": [0, 1], "only": ["q", 3]}, r"last entry of `only` must be a condition"),
        ({"bounds": [0, 1], "only": "q.attr"}, r"search_space\.p\.only: the construct Attribute"),
        ({"bounds": [0, "import os"]}, r"search_space\.p\.bounds\[1\]: invalid expression"),
    ],
)
def test_invalid_definitions_name_the_parameter(definition: dict[str, Any], message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        SearchSpace.from_dict({"q": {"bounds": [1, 2]}, "p": definition})


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ([1, 2], "must be a mapping"),
        ({"not valid": 1}, "must be identifiers"),
        ({"x__cdf": {"bounds": [0, 1]}}, "reserved"),
        ({"class": {"bounds": [0, 1]}}, "not a Python keyword"),
    ],
)
def test_invalid_space_shapes(space: Any, message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        SearchSpace.from_dict(space)


def test_properties() -> None:
    space = SearchSpace.from_dict(OPTIMA_LIKE)
    assert space.names == tuple(OPTIMA_LIKE)
    assert space.tuned == (
        "num_layers",
        "units_1",
        "units_2",
        "dropout",
        "dropout_2",
        "lr",
        "activation",
    )
    assert space.dimension == 7
    assert space.is_conditional and space.has_categorical and space.is_dynamic
    assert not space.is_discrete and space.grid_size is None
    assert len(space) == 9 and "lr" in space and list(space) == list(OPTIMA_LIKE)

    flat = SearchSpace.from_dict({"x": {"bounds": [0.0, 1.0]}, "fixed": 3})
    assert flat.dimension == 1 and not flat.is_conditional and not flat.has_categorical
    assert not flat.is_discrete


def test_grid_of_discrete_space() -> None:
    space = SearchSpace.from_dict(
        {
            "n": {"value_type": "int", "bounds": [1, 3]},
            "x": {"bounds": [0.0, 0.3], "step": 0.1},
            "act": {"values": ["relu", "tanh"]},
            "k": {"value_type": "int", "bounds": [1, 4], "sampling": "log"},
            "fixed": "abc",
        }
    )
    assert space.is_discrete and not space.is_dynamic
    grid = space.grid()
    assert grid == {
        "n": [1, 2, 3],
        "x": [0.0, 0.1, 0.2, 0.3],
        "act": ["relu", "tanh"],
        "k": [1, 2, 3, 4],
    }
    assert space.grid_size == 3 * 4 * 2 * 4


def test_grid_sampler_covers_the_grid() -> None:
    space = SearchSpace.from_dict(
        {"n": {"value_type": "int", "bounds": [1, 3]}, "act": {"values": ["a", "b"]}, "c": 1}
    )
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid(), seed=0))
    samples: list[dict[str, Any]] = []
    study.optimize(lambda t: float(len(samples.append(space.suggest(t)) or [])), n_trials=20)
    assert len(study.trials) == 6  # GridSampler stops the study when the grid is exhausted
    got = {(p["n"], p["act"]) for p in samples}
    assert got == set(itertools.product([1, 2, 3], ["a", "b"]))


def test_grid_rejects_continuous_and_dynamic() -> None:
    with pytest.raises(SearchSpaceError, match="x is continuous"):
        SearchSpace.from_dict({"x": {"bounds": [0, 1]}}).grid()
    with pytest.raises(SearchSpaceError, match="b depends on other parameters"):
        SearchSpace.from_dict(
            {
                "a": {"value_type": "int", "bounds": [1, 3]},
                "b": {"value_type": "int", "bounds": [1, "a"]},
            }
        ).grid()


def test_bruteforce_enumerates_conditional_space_exactly() -> None:
    space = SearchSpace.from_dict(
        {
            "n": {"value_type": "int", "bounds": [1, 3]},
            "m": {"value_type": "int", "bounds": [1, "n"]},
            "extra": {"values": [True, False], "only": "n == 3"},
        }
    )
    # oracle: n=1 -> 1, n=2 -> 2, n=3 -> 3 * 2 = 6 distinct points
    study = optuna.create_study(sampler=optuna.samplers.BruteForceSampler(seed=0))
    study.optimize(lambda t: float(sum(v or 0 for v in space.suggest(t).values())), n_trials=50)
    points = {tuple(sorted(t.params.items())) for t in study.trials}
    assert len(study.trials) == 9 and len(points) == 9


def test_params_from_trial_round_trip() -> None:
    space = SearchSpace.from_dict(
        {
            **OPTIMA_LIKE,
            "noise": {"sampling": "normal", "mean": 0.0, "std": 1.0, "bounds": [-2, 2]},
            "dyn": {"values": "[units_2, units_2 + 1]"},
        }
    )
    study, samples = _sample(space, 30)
    for trial, p in zip(study.trials, samples, strict=True):
        assert space.params_from_trial(trial) == p
        assert space.params_from_trial(trial.params) == p


def test_params_from_trial_of_partial_trial_gives_none() -> None:
    space = SearchSpace.from_dict({"a": {"bounds": [0, 1]}, "b": {"bounds": [0, 1]}, "c": 7})
    assert space.params_from_trial({"a": 0.5}) == {"a": 0.5, "b": None, "c": 7}


def test_to_optuna_params_enqueue_round_trip() -> None:
    space = SearchSpace.from_dict(
        {
            **OPTIMA_LIKE,
            "noise": {"sampling": "normal", "mean": 0.0, "std": 1.0, "bounds": [-2, 2]},
            "dyn": {"values": "[units_2, units_2 + 1]"},
        }
    )
    wanted = {
        "num_layers": 4,
        "units_1": 32,
        "units_2": 10,
        "dropout": 0.2,
        "dropout_2": 0.1,
        "lr": 0.01,
        "activation": "tanh",
        "epochs": 20,
        "optimizer": {"name": "adam"},
        "noise": 0.5,
        "dyn": 11,
    }
    internal = space.to_optuna_params(wanted)
    assert internal["dyn__index"] == 1 and "noise__cdf" in internal
    study = optuna.create_study()
    study.enqueue_trial(internal)
    got = space.suggest(study.ask())
    assert got.pop("noise") == pytest.approx(0.5, abs=1e-9)
    wanted.pop("noise")
    assert got == wanted


def test_to_optuna_params_rejects_unknown_names() -> None:
    space = SearchSpace.from_dict({"a": {"bounds": [0, 1]}})
    with pytest.raises(SearchSpaceError, match="unknown parameter"):
        space.to_optuna_params({"b": 1})


def test_choice_accepts_value_type_for_optima_compatibility() -> None:
    space = SearchSpace.from_dict(
        {"k": {"type": "choice", "values": [1, 3, 5], "value_type": "int"}}
    )
    _, samples = _sample(space, 10)
    assert {p["k"] for p in samples} <= {1, 3, 5}


def test_from_dict_returns_existing_space() -> None:
    space = SearchSpace.from_dict({"a": 1})
    assert SearchSpace.from_dict(space) is space
    assert repr(space) == "SearchSpace(a)"


@pytest.mark.parametrize("multivariate", [False, True])
def test_tpe_runs_on_conditional_dynamic_space(multivariate: bool) -> None:
    space = SearchSpace.from_dict(OPTIMA_LIKE)
    sampler = optuna.samplers.TPESampler(
        seed=3, multivariate=multivariate, group=multivariate, n_startup_trials=5
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(
        lambda t: (lambda p: p["units_2"] / p["units_1"] + p["lr"])(space.suggest(t)), n_trials=25
    )
    assert len(study.trials) == 25
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


@st.composite
def _range_definitions(draw: st.DrawFn) -> dict[str, Any]:
    value_type = draw(st.sampled_from(["int", "float"]))
    sampling = draw(st.sampled_from(["uniform", "log"]))
    low = draw(st.integers(1, 50)) if sampling == "log" else draw(st.integers(-50, 50))
    high = low + draw(st.integers(0, 60))
    definition: dict[str, Any] = {
        "value_type": value_type,
        "sampling": sampling,
        "bounds": [low, high],
    }
    if sampling == "uniform" and draw(st.booleans()):
        definition["step"] = (
            draw(st.integers(1, 7))
            if value_type == "int"
            else draw(st.sampled_from([0.25, 0.5, 1.5]))
        )
    return definition


@settings(max_examples=40, deadline=None)
@given(definition=_range_definitions(), seed=st.integers(0, 2**16))
def test_sampled_values_respect_any_valid_range(definition: dict[str, Any], seed: int) -> None:
    space = SearchSpace.from_dict({"p": definition})
    _, samples = _sample(space, 5, optuna.samplers.RandomSampler(seed=seed))
    low, high = definition["bounds"]
    for p in samples:
        value = p["p"]
        assert low <= value <= high
        assert isinstance(value, int) == (definition["value_type"] == "int")
        if "step" in definition:
            k = (value - low) / definition["step"]
            assert abs(k - round(k)) < 1e-9
    if space.is_discrete:
        grid = space.grid()["p"]
        assert all(p["p"] in grid or min(abs(p["p"] - g) for g in grid) < 1e-9 for p in samples)
