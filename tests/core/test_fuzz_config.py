"""Fuzzing the loaders: random run-configs, search spaces and workspaces give success or a
sigtune error (exit code 2 through the command line), never another exception or a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sigtune._config import build_objective, load_config
from sigtune._exceptions import SigtuneError
from sigtune._space import SearchSpace
from sigtune.cli import app

_FUZZ = settings(
    max_examples=30,
    deadline=None,  # a loaded machine is slow, not wrong
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "minimize",
            "maximize",
            "tpe",
            "random",
            "range",
            "choice",
            "int",
            "float",
            "log",
            "obj.py:f",
            "none",
            "median",
            "x > 1",
            "fail",
            "requeue",
            "",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)

_FIELDS = [
    "study_name",
    "run_dir",
    "n_trials",
    "n_jobs",
    "seed",
    "sampler",
    "pruner",
    "direction",
    "directions",
    "storage",
    "timeout",
    "trial_timeout",
    "max_failures",
    "enqueue",
    "warm_start",
    "on_stale_running",
    "report",
    "objective",
    "search_space",
    "constraints",
]

param_defs = st.one_of(
    values,
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["range", "choice", "fixed", "other"]),
            "value_type": st.sampled_from(["int", "float", "str", 1]),
            "bounds": st.one_of(
                st.lists(st.one_of(st.integers(-5, 5), st.floats(-5, 5)), max_size=3), values
            ),
            "values": st.one_of(st.lists(scalars, max_size=4), values),
            "sampling": st.sampled_from(["linear", "log", "normal", "bad"]),
            "only": st.sampled_from(["a > 1", "b == 'x'", "(", "a >", "c in [1, 2]"]),
            "value": scalars,
        },
    ),
)
spaces = st.dictionaries(
    st.sampled_from(["a", "b", "c", "1x", "class", "d"]), param_defs, max_size=4
)

configs = st.fixed_dictionaries(
    {},
    optional={
        **{f: values for f in _FIELDS},
        "search_space": spaces,
        "n_trials": st.one_of(st.integers(-2, 3), values),
        "objective": st.one_of(st.just("obj.py:f"), st.just("obj.py:missing"), values),
    },
)


def _objective_file(path: Path) -> None:
    path.write_text("def f(params, trial):\n    return 0.0\n")


@_FUZZ
@given(raw=configs)
def test_random_run_configs_load_or_fail_cleanly(tmp_path: Path, raw: dict[str, Any]) -> None:
    _objective_file(tmp_path / "obj.py")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw, allow_unicode=True))
    try:
        loaded = load_config(cfg)
        build_objective(loaded)
    except SigtuneError:
        pass  # a message for the user: fine


@_FUZZ
@given(space=spaces)
def test_random_search_spaces_validate_or_fail_cleanly(space: dict[str, Any]) -> None:
    try:
        built = SearchSpace.from_dict(space)
    except SigtuneError:
        return
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = built.suggest(study.ask())
    assert set(params) == set(built.names)


workspaces = st.fixed_dictionaries(
    {},
    optional={
        "channels": st.one_of(
            values,
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": st.one_of(st.just("ch"), values),
                        "samples": st.one_of(
                            values,
                            st.lists(
                                st.fixed_dictionaries(
                                    {},
                                    optional={
                                        "name": st.one_of(st.just("s"), values),
                                        "data": st.one_of(
                                            st.lists(
                                                st.one_of(st.floats(-1, 10), st.just(float("nan"))),
                                                max_size=3,
                                            ),
                                            values,
                                        ),
                                        "modifiers": st.one_of(
                                            st.just(
                                                [{"name": "mu", "type": "normfactor", "data": None}]
                                            ),
                                            values,
                                        ),
                                    },
                                ),
                                max_size=2,
                            ),
                        ),
                    },
                ),
                max_size=2,
            ),
        ),
        "observations": st.one_of(
            values,
            st.just([{"name": "ch", "data": [1.0, 2.0]}]),
        ),
        "measurements": st.one_of(
            values,
            st.just([{"name": "m", "config": {"poi": "mu", "parameters": []}}]),
        ),
        "version": st.one_of(st.just("1.0.0"), values),
    },
)


@_FUZZ
@given(spec=workspaces)
def test_random_workspaces_load_or_fail_cleanly(spec: dict[str, Any]) -> None:
    pytest.importorskip("numpy")
    from sigtune.hep import Workspace

    try:
        Workspace(spec).model()
    except SigtuneError:
        pass


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=configs)
def test_cli_exit_code_is_0_or_2_never_a_traceback(tmp_path: Path, raw: dict[str, Any]) -> None:
    _objective_file(tmp_path / "obj.py")
    raw = {**raw, "run_dir": str(tmp_path / "run"), "report": False}
    if isinstance(raw.get("n_trials"), int) and not isinstance(raw["n_trials"], bool):
        raw["n_trials"] = min(raw["n_trials"], 2)
    for key in ("timeout", "trial_timeout", "storage", "warm_start", "n_jobs"):
        raw.pop(key, None)  # keep each example short and in this directory
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw, allow_unicode=True))
    result = CliRunner().invoke(app, ["run", str(cfg), "--quiet"], catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
