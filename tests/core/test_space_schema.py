"""The search-space vocabulary is defined once (pydantic models) and the JSON Schema of the
run-config and the parser of SearchSpace agree on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import optuna
import pytest

from sigtune import SearchSpace, SearchSpaceError
from sigtune._config import config_json_schema
from sigtune._space_schema import PARAM_KEYS, PARAM_TYPES, SAMPLINGS, VALUE_TYPES


def _schema_accepts(definition: Any) -> bool:
    validator = jsonschema.Draft202012Validator(config_json_schema())
    doc = {"n_trials": 1, "objective": "m:f", "search_space": {"p": definition}}
    return not list(validator.iter_errors(doc))


def _parser_accepts(definition: Any) -> bool:
    try:
        SearchSpace.from_dict({"p": definition})
    except SearchSpaceError:
        return False
    return True


@pytest.mark.parametrize(
    "definition",
    [
        {"bounds": [0, 1]},
        {"type": "range", "value_type": "int", "bounds": [1, 8], "step": 1},
        {"bounds": [1e-4, 1.0], "sampling": "log"},
        {"sampling": "normal", "mean": 0.0, "std": 1.0, "bounds": [-2, 2]},
        {"values": ["a", "b"]},
        {"type": "choice", "values": [1, 2], "value_type": "int"},
        {"type": "fixed", "value": {"name": "adam"}},
        {"bounds": [0, 1], "only": "1 > 0"},
        3,
        "text",
        {"bounds": [0, 1], "bogus": 1},
        {"type": "fixed", "value": 1, "bounds": [0, 1]},
        {"values": ["a"], "sampling": "log"},
        {"type": "cube", "bounds": [0, 1]},
        {"bounds": [0, 1], "sampling": "cubic"},
        {"bounds": [0, 1], "value_type": "complex"},
        {"bounds": [0, 1], "mutable": True},
        {"values": [16, 32], "mutable": False},
        {"bounds": [0, 1], "mutable": "yes"},
        {"type": "fixed", "value": 1, "mutable": True},
    ],
)
def test_schema_and_parser_agree_on_the_shape(definition: Any) -> None:
    assert _schema_accepts(definition) == _parser_accepts(definition)


def test_vocabulary_comes_from_the_models() -> None:
    assert PARAM_TYPES == ("range", "choice", "fixed")
    assert SAMPLINGS == ("uniform", "log", "normal")
    assert VALUE_TYPES == ("float", "int")
    assert "step" in PARAM_KEYS["range"] and "step" not in PARAM_KEYS["choice"]


def test_mutable_is_accepted_and_changes_nothing_in_an_ordinary_search() -> None:
    plain = SearchSpace.from_dict({"lr": {"bounds": [1e-4, 1e-1], "sampling": "log"}})
    marked = SearchSpace.from_dict(
        {"lr": {"bounds": [1e-4, 1e-1], "sampling": "log", "mutable": True}}
    )
    assert marked.params["lr"].mutable and not plain.params["lr"].mutable
    assert marked.grid_size == plain.grid_size and marked.tuned == plain.tuned
    sampled = []
    for space in (plain, marked):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
        sampled.append([space.suggest(study.ask()) for _ in range(3)])
    assert sampled[0] == sampled[1]
    assert "mutable" in PARAM_KEYS["range"] and "mutable" in PARAM_KEYS["choice"]
    assert "mutable" not in PARAM_KEYS["fixed"]
    assert _schema_accepts({"bounds": [0, 1], "mutable": True})  # `sigtune schema` knows it
    assert not _schema_accepts({"bounds": [0, 1], "mutable": "yes"})
    with pytest.raises(SearchSpaceError, match=r"search_space\.lr\.mutable: must be true or"):
        SearchSpace.from_dict({"lr": {"bounds": [0, 1], "mutable": 1}})


def test_sigtune_run_accepts_mutable_parameters(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sigtune._study import load_study
    from sigtune.cli import app

    (tmp_path / "obj.py").write_text("def f(params, trial):\n    return params['lr']\n")
    (tmp_path / "cfg.yaml").write_text(
        f"study_name: m\nrun_dir: {json.dumps(str(tmp_path / 'run'))}\nn_trials: 3\n"
        "sampler: random\nreport: false\nobjective: obj.py:f\nsearch_space:\n"
        "  lr: {type: range, bounds: [0.001, 0.1], sampling: log, mutable: true}\n"
    )
    result = CliRunner().invoke(app, ["run", str(tmp_path / "cfg.yaml"), "--quiet"])
    assert result.exit_code == 0, result.output
    study = load_study("m", tmp_path / "run" / "study.journal")
    assert len(study.trials) == 3 and all(0.001 <= t.params["lr"] <= 0.1 for t in study.trials)
