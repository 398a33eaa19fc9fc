"""The `sigtune` command line: run/resume/status/best/export/schema/hep, exit codes, --json."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

import sigtune.reports
from sigtune._config import ObjectiveSpec, register_objective_type
from sigtune._study import load_study
from sigtune.cli import app

runner = CliRunner()

OBJECTIVE = """
def quad(params, trial):
    print("noise on stdout from the objective")
    return (params["x"] - 1.0) ** 2 + params["k"]

def broken(params, trial):
    raise ValueError("broken on purpose")
"""


def _config(tmp_path: Path, **extra: Any) -> Path:
    (tmp_path / "obj.py").write_text(OBJECTIVE)
    fields = {
        "study_name": "clitest",
        "run_dir": str(tmp_path / "run"),
        "n_trials": 12,
        "seed": 4,
        "sampler": "random",
        "report": False,
        "objective": "obj.py:quad",
        **extra,
    }
    lines = [f"{k}: {json.dumps(v)}" for k, v in fields.items()]
    lines.append("search_space:")
    lines.append("  x: {type: range, value_type: float, bounds: [-2, 2]}")
    lines.append("  k: {type: choice, values: [0, 1]}")
    path = tmp_path / "cfg.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _invoke(*args: str) -> Any:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_run_prints_best_and_stores_trials(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    result = _invoke("run", cfg, "--quiet")
    assert result.exit_code == 0, result.stderr
    study = load_study("clitest", tmp_path / "run" / "study.journal")
    assert len(study.trials) == 12
    assert f"Best value (minimize): {study.best_value:.6g}" in result.stdout
    assert "  x: " in result.stdout and "  k: " in result.stdout


def test_run_json_is_one_document(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    result = _invoke("run", cfg, "--json", "--n-trials", "8", "--jobs", "2")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)  # nothing but the JSON document on stdout
    study = load_study("clitest", tmp_path / "run" / "study.journal")
    assert doc["n_trials"] == 8 and doc["counts"]["COMPLETE"] == 8
    assert doc["best_value"] == min(t.values[0] for t in study.trials)
    assert doc["best_params"] == {"x": study.best_params["x"], "k": study.best_params["k"]}
    assert doc["run"]["finished"] == 8 and doc["run"]["stop_reason"] == "done"


def test_overrides_study_name_and_storage(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    url = f"sqlite:///{tmp_path}/other.db"
    result = _invoke("run", cfg, "--quiet", "--storage", url, "--study-name", "renamed")
    assert result.exit_code == 0, result.stderr
    assert len(load_study("renamed", url).trials) == 12


def test_status_best_resume(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert _invoke("run", cfg, "--quiet", "--n-trials", "5").exit_code == 0
    status = _invoke("status", cfg, "--json")
    assert status.exit_code == 0
    doc = json.loads(status.stdout)
    assert doc["n_finished"] == 5 and doc["n_trials"] == 12 and doc["running"] == []
    resumed = _invoke("resume", cfg, "--quiet")
    assert resumed.exit_code == 0, resumed.stderr
    best = json.loads(_invoke("best", cfg, "--json").stdout)
    study = load_study("clitest", tmp_path / "run" / "study.journal")
    assert len(study.trials) == 12
    assert best["best_value"] == study.best_value and best["best_trial"] == study.best_trial.number
    by_storage = _invoke("status", "--storage", str(tmp_path / "run" / "study.journal"))
    assert by_storage.exit_code == 0 and "12 finished" in by_storage.stdout


def test_export_formats(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert _invoke("run", cfg, "--quiet").exit_code == 0
    text = _invoke("export", cfg, "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 12 and {"number", "state", "value_0", "params_x"} <= set(rows[0])
    as_json = json.loads(_invoke("export", cfg, "--format", "json").stdout)
    assert [r["number"] for r in as_json] == list(range(12))
    out = tmp_path / "t.parquet"
    assert _invoke("export", cfg, "--format", "parquet", "-o", out).exit_code == 0
    import pandas as pd

    assert len(pd.read_parquet(out)) == 12
    bad = _invoke("export", cfg, "--format", "xlsx")
    assert bad.exit_code == 2 and "csv, parquet, json" in bad.stderr


def test_schema_is_json_schema() -> None:
    result = _invoke("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert "n_trials" in schema["properties"] and "n_trials" in schema["required"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"n_trails": 3}, "n_trails"),
        ({"objective": "obj.py:nope"}, "nope"),
        ({"objective": "missing_module_xyz:f"}, "missing_module_xyz"),
        ({"n_trials": 0}, "n_trials"),
        ({"storage": "not-a-url.txt"}, "neither a URL nor a path"),
    ],
)
def test_bad_input_exit_code_2(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    result = _invoke("run", _config(tmp_path, **extra), "--quiet")
    assert result.exit_code == 2
    assert message in result.stderr and result.stdout == ""


def test_missing_study_exit_code_2(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    for cmd in ("resume", "status", "best"):
        result = _invoke(cmd, cfg)
        assert result.exit_code == 2, cmd
        assert "sigtune run" in result.stderr or "no study" in result.stderr
    # Read-only commands and resume never create the storage they did not find.
    assert not list(tmp_path.rglob("*.journal"))


def test_run_failure_exit_code_1(tmp_path: Path) -> None:
    cfg = _config(tmp_path, objective="obj.py:broken", max_failures=2)
    result = _invoke("run", cfg, "--quiet")
    assert result.exit_code == 1
    assert (
        "3 of 3 trials failed" in result.stderr and "ValueError: broken on purpose" in result.stderr
    )
    # Without max_failures every trial fails: the run ends, but nothing completed -> 1.
    cfg = _config(tmp_path, objective="obj.py:broken", study_name="allfail")
    result = _invoke("run", cfg, "--quiet", "--json")
    assert result.exit_code == 1 and "no COMPLETE trial" in result.stderr
    doc = json.loads(result.stdout)  # --json: one error document on stdout
    assert doc["exit_code"] == 1 and "no COMPLETE trial" in doc["error"]


class _AfterRunSection(BaseModel):
    target_value: float = 0.5


def _after_run_factory(section: _AfterRunSection, config: Any) -> ObjectiveSpec:
    def objective(trial: optuna.Trial) -> float:
        return abs(trial.suggest_float("x", 0, 1) - section.target_value)

    def after_run(study: Any, run_dir: Path) -> str:
        (run_dir / "best.txt").write_text(str(study.best_value))
        return f"wrote {run_dir / 'best.txt'}"

    return ObjectiveSpec(objective=objective, after_run=after_run)


def test_after_run_text_is_printed(tmp_path: Path) -> None:
    register_objective_type("cli_after_run_test", _AfterRunSection, _after_run_factory)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"study_name: ar\nrun_dir: {tmp_path}/run\nn_trials: 5\nsampler: random\nreport: false\n"
        "objective: {type: cli_after_run_test, target_value: 0.25}\n"
    )
    result = _invoke("run", cfg, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert f"wrote {tmp_path}/run/best.txt" in result.stdout
    best = load_study("ar", tmp_path / "run" / "study.journal").best_value
    assert float((tmp_path / "run" / "best.txt").read_text()) == best
    doc = json.loads(_invoke("run", cfg, "--json", "--n-trials", "6").stdout)
    assert doc["after_run"] == f"wrote {tmp_path}/run/best.txt"


def test_report_written_and_report_failure_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path, report=True)

    def failing(study: Any, path: Any, **kwargs: Any) -> Path:
        raise RuntimeError("plotting backend exploded")

    monkeypatch.setattr(sigtune.reports, "write_report", failing)
    result = _invoke("run", cfg, "--quiet")
    assert result.exit_code == 0
    assert "warning: report not written: RuntimeError: plotting backend exploded" in result.stderr
    assert len(load_study("clitest", tmp_path / "run" / "study.journal").trials) == 12

    calls: list[Path] = []

    def recording(study: Any, path: Any, **kwargs: Any) -> Path:
        calls.append(Path(path))
        Path(path).write_text("<html></html>")
        return Path(path)

    monkeypatch.setattr(sigtune.reports, "write_report", recording)
    result = _invoke("run", cfg, "--json")
    assert result.exit_code == 0
    assert calls == [tmp_path / "run" / "report.html"]
    assert json.loads(result.stdout)["report"] == str(tmp_path / "run" / "report.html")


def test_hep_is_forwarded() -> None:
    result = _invoke("hep", "--help")
    assert result.exit_code == 0
    assert "sigtune hep" in result.stdout and "HistFactory" in result.stdout


def test_help_lists_commands() -> None:
    result = _invoke("--help")
    for cmd in ("run", "resume", "status", "best", "export", "schema", "hep"):
        assert cmd in result.stdout
