"""Trials table and its CSV / JSON / Parquet export, checked against the study's trials."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from sigtune._exceptions import ConfigError
from sigtune._export import export_trials, trial_rows, trials_table
from sigtune._study import optimize


def _two_objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0.0, 1.0)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    trial.set_user_attr("tags", ["t", trial.number])
    trial.set_user_attr("score", x * 2)
    if trial.number == 2:
        raise ArithmeticError("bad trial")
    if trial.number == 3:
        return float("nan"), 0.0
    return x, 1.0 - x + (kind == "b")


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    s = optimize(_two_objective, 8, directions=["minimize", "maximize"], sampler="random", seed=2)
    return s.optuna


def test_rows_match_trials(study: optuna.Study) -> None:
    columns, rows = trial_rows(study)
    assert columns[:4] == ["number", "state", "value_0", "value_1"]
    assert columns[-4:] == ["datetime_start", "datetime_complete", "duration_s", "fail_reason"]
    assert {"params_x", "params_kind", "user_attrs_tags", "user_attrs_score"} <= set(columns)
    assert "user_attrs_fail_reason" not in columns
    for row, trial in zip(rows, study.trials, strict=True):
        assert row["number"] == trial.number and row["state"] == trial.state.name
        if trial.values is not None:
            assert [row["value_0"], row["value_1"]] == trial.values
        else:
            assert row["value_0"] is None and row["value_1"] is None
        assert row["params_x"] == trial.params["x"]
        assert json.loads(row["user_attrs_tags"]) == ["t", trial.number]
        start = dt.datetime.fromisoformat(row["datetime_start"])
        end = dt.datetime.fromisoformat(row["datetime_complete"])
        assert row["duration_s"] == pytest.approx((end - start).total_seconds())
    assert rows[2]["fail_reason"] == "ArithmeticError: bad trial"
    assert rows[3]["fail_reason"] == "objective returned nan for value 0 (not a finite number)"
    assert rows[0]["fail_reason"] is None


def test_csv_and_json_round_trip(study: optuna.Study, tmp_path: Path) -> None:
    columns, rows = trial_rows(study)
    export_trials(study, "csv", tmp_path / "t.csv")
    with open(tmp_path / "t.csv", newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == columns and len(read) == len(rows)
    assert [float(r["params_x"]) for r in read] == [r["params_x"] for r in rows]
    text = export_trials(study, "json")
    assert text is not None and json.loads(text) == rows


def test_parquet_and_dataframe(study: optuna.Study, tmp_path: Path) -> None:
    export_trials(study, "parquet", tmp_path / "t.parquet")
    frame = pd.read_parquet(tmp_path / "t.parquet")
    expected = trials_table(study)
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    assert frame.loc[2, "state"] == "FAIL" and pd.isna(frame.loc[2, "value_0"])
    assert pd.api.types.is_datetime64_any_dtype(frame["datetime_start"])


def test_bad_format_and_parquet_without_path(study: optuna.Study) -> None:
    with pytest.raises(ConfigError, match="csv, parquet, json"):
        export_trials(study, "xml")
    with pytest.raises(ConfigError, match=r"-o FILE\.parquet"):
        export_trials(study, "parquet")


def test_empty_study_has_header_only() -> None:
    empty = optuna.create_study()
    columns, rows = trial_rows(empty)
    assert rows == [] and "value_0" in columns
    text = export_trials(empty, "csv")
    assert text is not None and text.strip().split(",")[0] == "number"
