"""Tests of the run-config (sigtune._config)."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import optuna
import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from sigtune import ConfigError, ObjectiveError, SearchSpace
from sigtune._config import (
    BUILTIN_OBJECTIVE_TYPES,
    FunctionObjectiveConfig,
    ObjectiveSpec,
    RunConfig,
    build_objective,
    config_json_schema,
    load_config,
    register_objective_type,
    resolve_callable,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

FULL = """\
study_name: demo
run_dir: runs/demo
storage: null
n_trials: 100
n_jobs: 2
timeout: 3600
trial_timeout: 60
max_failures: 0.25
seed: 42
directions: [maximize, minimize]
sampler: {name: tpe, options: {multivariate: true, n_startup_trials: 5}}
pruner: {name: median, options: {n_warmup_steps: 5}}
search_space:
  num_layers: {type: range, value_type: int, bounds: [2, 6]}
  units: {type: range, value_type: int, bounds: [8, 256], sampling: log}
  dropout: {type: range, bounds: [0.0, 0.5], only: "num_layers >= 4"}
  activation: {type: choice, values: [relu, tanh]}
  epochs: 10
objective: {type: function, target: "objective.py:evaluate", kwargs: {scale: 2.0}}
constraints: "objective.py:constraints"
enqueue:
  - {num_layers: 2, units: 64, activation: relu}
warm_start: {storage: null, study_name: earlier}
on_stale_running: requeue
report: false
"""

OBJECTIVE_PY = """\
def evaluate(params, trial, scale=1.0):
    return scale * params["units"], float(params["num_layers"])

def plain(trial, offset=0.0):
    return trial.suggest_float("x", 0, 1) + offset

def constraints(frozen):
    return [frozen.params["units"] - 128.0]

WHERE = "config-dir"

def where(trial):
    return WHERE
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "objective.py").write_text(OBJECTIVE_PY, encoding="utf-8")
    (tmp_path / "config.yaml").write_text(FULL, encoding="utf-8")
    return tmp_path


def test_full_config_loads(config_dir: Path) -> None:
    config = load_config(config_dir / "config.yaml")
    assert config.study_name == "demo"
    assert config.run_dir == Path("runs/demo")
    assert config.n_trials == 100 and config.n_jobs == 2
    assert config.timeout == 3600 and config.trial_timeout == 60
    assert config.max_failures == 0.25 and config.seed == 42
    assert config.resolved_directions == ["maximize", "minimize"] and config.n_objectives == 2
    assert config.sampler.name == "tpe"
    assert config.sampler.options == {"multivariate": True, "n_startup_trials": 5}
    assert config.pruner.name == "median" and config.pruner.options == {"n_warmup_steps": 5}
    assert isinstance(config.space, SearchSpace)
    assert config.space.names == ("num_layers", "units", "dropout", "activation", "epochs")
    assert config.enqueue == [{"num_layers": 2, "units": 64, "activation": "relu"}]
    assert config.warm_start is not None and config.warm_start.study_name == "earlier"
    assert config.on_stale_running == "requeue" and config.report is False
    assert config.base_dir == config_dir.resolve()
    assert config.objective_type == "function"


def test_defaults() -> None:
    config = load_config({"n_trials": 3, "objective": "mod:fn"})
    assert config.study_name == "sigtune"
    assert config.run_dir == Path("runs/sigtune")
    assert config.storage is None and config.n_jobs == 1 and config.seed is None
    assert config.sampler.name == "auto" and config.sampler.options == {}
    assert config.pruner.name == "none"
    assert config.resolved_directions == ["minimize"]
    assert config.space is None and config.enqueue == [] and config.warm_start is None
    assert config.on_stale_running == "fail" and config.report is True
    assert config.base_dir is None
    assert isinstance(config.objective_config, FunctionObjectiveConfig)
    assert config.objective_config.target == "mod:fn"


def test_named_sections_accept_plain_names() -> None:
    config = load_config(
        {"n_trials": 1, "objective": "m:f", "sampler": "CMAES", "pruner": "hyperband"}
    )
    assert config.sampler.name == "cmaes" and config.pruner.name == "hyperband"


def test_every_problem_is_listed_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            n_trials: 0
            n_jobs: two
            sampler: {name: tpe, options: {n_startup_trials: many, multivariat: true}}
            pruner: {name: median, options: {n_warmup_steps: x}}
            direction: sideways
            search_space:
              units: {bounds: [5, 1]}
            objective: "m:f"
            warm_start: {study_name: s, extra: 1}
            bogus: 1
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    expected = [
        "n_trials: Input should be greater than or equal to 1",
        "n_jobs: Input should be a valid integer",
        "sampler.options.multivariat: unknown option for sampler 'tpe'",
        "pruner.options.n_warmup_steps: Input should be a valid integer",
        "direction: Input should be 'minimize' or 'maximize'",
        "search_space.units: `low <= high` must hold, but got (low=5, high=1)",
        "warm_start.extra: unknown field",
        "bogus: unknown field",
    ]
    for line in expected:
        assert f"  - {line}" in message, (line, message)


def test_sampler_option_type_error_message() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            {
                "n_trials": 1,
                "objective": "m:f",
                "sampler": {"name": "tpe", "options": {"n_startup_trials": "x"}},
            }
        )
    assert "sampler.options.n_startup_trials: Input should be a valid integer" in str(info.value)


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("n_trials: 3\nsampler: {name: tpe\nobjective: m:f\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line 3, column \d+"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- 1\n- 2\n", "top level must be a mapping"),
        ("", "n_trials: Field required"),
    ],
)
def test_bad_top_level(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/sigtune.yaml")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"direction": "maximize", "directions": ["minimize"]}, "direction: give either"),
        ({"directions": []}, "directions: List should have at least 1 item"),
        ({"directions": ["up"]}, "directions[0]: Input should be 'minimize' or 'maximize'"),
        ({"max_failures": 1.5}, "max_failures: a fraction must be in"),
        ({"max_failures": -1}, "max_failures: a count must be >= 0"),
        ({"max_failures": True}, "max_failures: must be an integer count"),
        ({"objective": "no_colon"}, "objective: must be 'module:function'"),
        ({"objective": {"target": "m:f"}}, "objective: a mapping needs a `type`"),
        ({"objective": 3}, "objective: must be 'module:function'"),
        ({"objective": {"type": "function"}}, "objective.target: Field required"),
        (
            {"objective": {"type": "function", "target": "m:f", "kw": {}}},
            "objective.kw: unknown field",
        ),
        ({"objective": {"type": "nope"}}, "objective.type: unknown objective type 'nope'"),
        ({"sampler": "bogus"}, "sampler.name: unknown sampler 'bogus'"),
        ({"pruner": "bogus"}, "pruner.name: unknown pruner 'bogus'; valid names: none, median"),
        ({"pruner": {"name": "percentile"}}, "pruner.options.percentile: required"),
        ({"timeout": 0}, "timeout: Input should be greater than 0"),
        ({"on_stale_running": "ignore"}, "on_stale_running: Input should be 'fail' or 'requeue'"),
        (
            {"search_space": {"a": {"bounds": [0, "b"]}}},
            "search_space.a: refers to unknown parameter",
        ),
        (
            {"search_space": {"a": {"bounds": [0, "b"]}, "b": {"bounds": [0, "a"]}}},
            "search_space: cyclic dependency",
        ),
    ],
)
def test_field_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"n_trials": 1, "objective": "m:f", **fields})
    assert message in str(info.value)


def test_space_and_objective_problems_listed_with_field_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            {
                "n_trials": 0,
                "objective": {"type": "function"},
                "search_space": {"a": {"bounds": [2, 1]}},
            }
        )
    message = str(info.value)
    assert "n_trials:" in message
    assert "objective.target: Field required" in message
    assert "search_space.a: `low <= high`" in message


def test_overrides(config_dir: Path) -> None:
    config = load_config(
        config_dir / "config.yaml",
        overrides={
            "n_trials": 7,
            "n_jobs": None,  # not given -> keep the file's value
            "sampler": "random",  # a plain value replaces the whole section
            "pruner": {"options": {"n_warmup_steps": 1}},
            "study_name": "other",
        },
    )
    assert config.n_trials == 7 and config.n_jobs == 2
    assert config.sampler.name == "random"
    assert config.pruner.name == "median" and config.pruner.options == {"n_warmup_steps": 1}
    assert config.study_name == "other"
    overridden = load_config(
        {"n_trials": 1, "objective": "m:f", "sampler": "tpe"},
        {"sampler.options.multivariate": True},
    )
    assert overridden.sampler.name == "tpe" and overridden.sampler.options == {"multivariate": True}


def test_overrides_are_validated() -> None:
    with pytest.raises(ConfigError, match="n_trials: Input should be a valid integer"):
        load_config({"n_trials": 1, "objective": "m:f"}, {"n_trials": "lots"})


# ---------------------------------------------------------------------- resolve_callable


def test_resolve_module_reference() -> None:
    import math
    from collections import OrderedDict

    assert resolve_callable("math:sqrt") is math.sqrt
    assert resolve_callable("collections:OrderedDict.fromkeys") == OrderedDict.fromkeys


def test_resolve_file_prefers_base_dir_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, cwd = tmp_path / "base", tmp_path / "cwd"
    base.mkdir()
    cwd.mkdir()
    (base / "objective.py").write_text(OBJECTIVE_PY, encoding="utf-8")
    (cwd / "objective.py").write_text(OBJECTIVE_PY.replace("config-dir", "cwd"), encoding="utf-8")
    (cwd / "only_here.py").write_text("def f():\n    return 'cwd-only'\n", encoding="utf-8")
    monkeypatch.chdir(cwd)
    assert resolve_callable("objective.py:where", base_dir=base)(None) == "config-dir"
    assert resolve_callable("objective.py:where")(None) == "cwd"
    assert resolve_callable("only_here.py:f", base_dir=base)() == "cwd-only"
    assert resolve_callable(f"{base / 'objective.py'}:where")(None) == "config-dir"


def test_resolve_file_can_import_its_neighbours(tmp_path: Path) -> None:
    (tmp_path / "helper_mod_for_sigtune_test.py").write_text("VALUE = 41\n", encoding="utf-8")
    (tmp_path / "main.py").write_text(
        "import helper_mod_for_sigtune_test as h\ndef f():\n    return h.VALUE + 1\n",
        encoding="utf-8",
    )
    assert resolve_callable("main.py:f", base_dir=tmp_path)() == 42


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("math.sqrt", "is not a callable reference"),
        ("math:", "both the module/file and the function name"),
        (":sqrt", "both the module/file and the function name"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("math:nope", "'math' has no attribute 'nope'"),
        ("math:pi", "'pi' is not callable"),
        ("missing_file.py:f", "file 'missing_file.py' not found"),
    ],
)
def test_resolve_errors(ref: str, message: str) -> None:
    with pytest.raises(ObjectiveError, match=re.escape(message)):
        resolve_callable(ref)


def test_resolve_file_with_import_error(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    with pytest.raises(ObjectiveError, match=r"importing .*broken\.py failed: RuntimeError: boom"):
        resolve_callable("broken.py:f", base_dir=tmp_path)


# ---------------------------------------------------------------------- build_objective


def test_function_objective_with_space(config_dir: Path) -> None:
    config = load_config(config_dir / "config.yaml")
    spec = build_objective(config)
    assert spec.space is config.space and spec.directions is None and spec.after_run is None
    study = optuna.create_study(
        directions=config.resolved_directions, sampler=optuna.samplers.RandomSampler(0)
    )
    study.optimize(spec.objective, n_trials=5)
    for trial in study.trials:
        params = config.space.params_from_trial(trial)  # type: ignore[union-attr]
        assert trial.values == [2.0 * params["units"], float(params["num_layers"])]
    assert spec.constraints is not None
    assert spec.constraints(study.trials[0]) == [study.trials[0].params["units"] - 128.0]


def test_function_objective_without_space(config_dir: Path) -> None:
    config = load_config(
        {
            "n_trials": 2,
            "objective": {
                "type": "function",
                "target": str(config_dir / "objective.py") + ":plain",
                "kwargs": {"offset": 10.0},
            },
        }
    )
    spec = build_objective(config)
    study = optuna.create_study()
    study.optimize(spec.objective, n_trials=3)
    assert all(t.value == pytest.approx(t.params["x"] + 10.0) for t in study.trials)
    assert spec.constraints is None and spec.space is None


def test_string_objective_resolved_relative_to_config(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config_dir / "plain.yaml"
    path.write_text("n_trials: 1\nobjective: objective.py:plain\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = build_objective(load_config(path))
    study = optuna.create_study()
    study.optimize(spec.objective, n_trials=1)
    assert 0.0 <= study.best_value <= 1.0


def test_build_objective_reports_missing_function(config_dir: Path) -> None:
    config = load_config({"n_trials": 1, "objective": str(config_dir / "objective.py") + ":nope"})
    with pytest.raises(ObjectiveError, match="has no attribute 'nope'"):
        build_objective(config)


def test_function_objective_is_picklable(config_dir: Path) -> None:
    import pickle

    config = load_config({"n_trials": 1, "objective": "math:fabs"})
    spec = build_objective(config)
    clone = pickle.loads(pickle.dumps(spec.objective))
    assert clone(-3.0) == 3.0  # fabs(trial) with a number standing in for the trial


# ---------------------------------------------------------------------- registry


class _ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: float
    width: float = 1.0


def _toy_factory(section: _ToyConfig, config: RunConfig) -> ObjectiveSpec:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", section.target - section.width, section.target + section.width)
        return (x - section.target) ** 2

    return ObjectiveSpec(objective=objective, directions=["minimize"])


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Types registered by a test do not leak into other tests."""
    import sigtune._config as config_module

    monkeypatch.setattr(config_module, "_REGISTRY", dict(config_module._REGISTRY))


def test_registered_objective_type() -> None:
    register_objective_type("toy", _ToyConfig, _toy_factory)
    config = load_config({"n_trials": 1, "objective": {"type": "toy", "target": 3.0}})
    assert config.objective_type == "toy"
    assert isinstance(config.objective_config, _ToyConfig) and config.objective_config.target == 3.0
    spec = build_objective(config)
    study = optuna.create_study()
    study.optimize(spec.objective, n_trials=3)
    assert all(2.0 <= t.params["x"] <= 4.0 for t in study.trials)
    assert spec.directions == ["minimize"]

    with pytest.raises(ConfigError) as info:
        load_config({"n_trials": 1, "objective": {"type": "toy", "target": "far", "colour": 1}})
    assert "objective.target: Input should be a valid number" in str(info.value)
    assert "objective.colour: unknown field" in str(info.value)
    assert (
        "toy"
        in config_json_schema()["properties"]["objective"]["anyOf"][2]["properties"]["type"]["enum"]
    )


def test_register_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="other than 'function'"):
        register_objective_type("function", _ToyConfig, _toy_factory)
    with pytest.raises(ConfigError, match="pydantic model"):
        register_objective_type("x", dict, _toy_factory)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="factory must be callable"):
        register_objective_type("x", _ToyConfig, 3)  # type: ignore[arg-type]


def test_builtin_types_are_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the core never imports pipelines at import time
    import subprocess

    code = "import sys, sigtune._config; print(any(m.startswith('sigtune.pipelines') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

    pkg = tmp_path / "fake_plugin_for_sigtune"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "good.py").write_text(
        textwrap.dedent(
            """\
            from pydantic import BaseModel
            from sigtune._config import ObjectiveSpec, register_objective_type

            class Section(BaseModel):
                type: str
                bins: int

            register_objective_type("lazy_good", Section, lambda s, c: ObjectiveSpec(objective=lambda t: float(s.bins)))
            """
        ),
        encoding="utf-8",
    )
    (pkg / "silent.py").write_text("", encoding="utf-8")
    (pkg / "needs_dep.py").write_text("import no_such_dependency_xyz\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        "sigtune._config.BUILTIN_OBJECTIVE_TYPES",
        {
            **BUILTIN_OBJECTIVE_TYPES,
            "lazy_good": ("fake_plugin_for_sigtune.good", "x"),
            "lazy_silent": ("fake_plugin_for_sigtune.silent", "x"),
            "lazy_dep": ("fake_plugin_for_sigtune.needs_dep", "hep"),
            "lazy_missing": ("fake_plugin_for_sigtune.not_there", "ml"),
        },
    )
    config = load_config({"n_trials": 1, "objective": {"type": "lazy_good", "bins": 4}})
    assert build_objective(config).objective(None) == 4.0  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="did not register it"):
        load_config({"n_trials": 1, "objective": {"type": "lazy_silent"}})
    with pytest.raises(ConfigError, match=re.escape("pip install 'sigtune[hep]'")):
        load_config({"n_trials": 1, "objective": {"type": "lazy_dep"}})
    with pytest.raises(ConfigError, match="unavailable in this installation"):
        load_config({"n_trials": 1, "objective": {"type": "lazy_missing"}})


# ---------------------------------------------------------------------- schema and docs


def test_json_schema_is_valid_and_matches_the_models(config_dir: Path) -> None:
    schema = config_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    data = yaml.safe_load(FULL)
    assert list(validator.iter_errors(data)) == []
    assert list(validator.iter_errors({"n_trials": 1, "objective": "m:f", "sampler": "tpe"})) == []
    assert list(validator.iter_errors({**data, "bogus": 1}))
    assert list(validator.iter_errors({**data, "n_trials": 0}))
    assert list(validator.iter_errors({**data, "sampler": "nope"}))
    assert list(
        validator.iter_errors({**data, "search_space": {"x": {"bounds": [0, 1], "bad": 1}}})
    )


def _doc_yaml_blocks() -> list[str]:
    doc = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    return re.findall(r"```yaml\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)


def test_complete_example_in_docs_is_valid() -> None:
    blocks = _doc_yaml_blocks()
    assert blocks, "docs/config.md has no yaml example"
    complete = [b for b in blocks if re.search(r"^n_trials:", b, flags=re.M)]
    assert complete
    validator = jsonschema.Draft202012Validator(config_json_schema())
    for block in complete:
        data = yaml.safe_load(block)
        assert list(validator.iter_errors(data)) == []
        config = load_config(data)
        assert config.n_trials >= 1
        assert config.space is not None and config.space.dimension >= 1
    snippets = [b for b in blocks if re.search(r"^sampler:", b, flags=re.M) and b not in complete]
    assert snippets
    for block in snippets:
        config = load_config({"n_trials": 1, "objective": "m:f", **yaml.safe_load(block)})
        assert config.sampler.name == "auto"


def test_constraints_and_enqueue_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match="constraints: must be 'module:function'"):
        load_config({"n_trials": 1, "objective": "m:f", "constraints": "nocolon"})
    with pytest.raises(ConfigError, match=r"enqueue\[1\]: unknown parameter\(s\) y"):
        load_config(
            {
                "n_trials": 1,
                "objective": "m:f",
                "search_space": {"x": {"bounds": [0, 1]}},
                "enqueue": [{"x": 0.5}, {"y": 1}],
            }
        )


def test_duplicate_yaml_keys_are_rejected_with_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(
        "n_trials: 3\nobjective: m:f\nsearch_space:\n  x: {bounds: [0, 1]}\n  x: 2\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"line 5, column 3: found duplicate key 'x'"):
        load_config(path)
    merged = tmp_path / "merge.yaml"
    # anchors and merge keys still work
    merged.write_text(
        "n_trials: 3\nobjective: m:f\nsearch_space:\n  x: &b {bounds: [0, 1]}\n  y: {<<: *b, step: 0.5}\n",
        encoding="utf-8",
    )
    config = load_config(merged)
    assert config.space is not None and config.space.grid_size is None
    assert config.search_space == {"x": {"bounds": [0, 1]}, "y": {"bounds": [0, 1], "step": 0.5}}
