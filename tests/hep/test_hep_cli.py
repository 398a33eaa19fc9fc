"""The ``sigtune hep`` command line (Typer app ``sigtune.hep.cli:app``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_infer import two_bin_spec
from typer.testing import CliRunner

from sigtune.hep._infer import discovery, hypotest, upper_limit
from sigtune.hep._workspace import Workspace
from sigtune.hep.cli import app

runner = CliRunner()
DATA = Path(__file__).resolve().parents[1] / "data" / "histfactory"


@pytest.fixture
def ws_file(tmp_path: Path) -> Path:
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(two_bin_spec()))
    return path


def _run(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _model() -> tuple[Any, np.ndarray]:
    ws = Workspace(two_bin_spec())
    model = ws.model()
    return model, ws.data(model)


def test_fit_json(ws_file: Path) -> None:
    out = json.loads(_run("fit", str(ws_file), "--json").stdout)
    assert out["poi"] == "mu" and out["converged"] is True
    assert set(out["parameters"]) == set(_model()[0].par_names)
    assert out["parameters"]["mu"]["error"] > 0
    cond = json.loads(_run("fit", str(ws_file), "--poi-value", "2.0", "--json").stdout)
    assert cond["parameters"]["mu"]["value"] == 2.0
    assert cond["twice_nll"] > out["twice_nll"]


def test_discovery_cls_limit_match_python_api(ws_file: Path) -> None:
    model, data = _model()
    disc = json.loads(_run("discovery", str(ws_file), "--json").stdout)
    assert disc["z0_obs"] == pytest.approx(discovery(model, data).z0_obs, rel=1e-9)
    cls = json.loads(_run("cls", str(ws_file), "--poi-value", "1.5", "--json").stdout)
    ref = hypotest(model, data, 1.5)
    assert cls["cls_obs"] == pytest.approx(ref.cls_obs, rel=1e-9)
    assert cls["cls_exp"] == pytest.approx(list(ref.cls_exp), rel=1e-9)
    lim = json.loads(_run("limit", str(ws_file), "--json").stdout)
    assert lim["obs"] == pytest.approx(upper_limit(model, data).obs, rel=1e-6)
    assert len(lim["exp"]) == 5


def test_ranking_and_scan(ws_file: Path) -> None:
    rank = json.loads(_run("ranking", str(ws_file), "--top", "2", "--json").stdout)
    assert len(rank["entries"]) == 2
    assert rank["entries"][0]["total_impact"] >= rank["entries"][1]["total_impact"]
    scan = json.loads(
        _run("scan", str(ws_file), "--low", "0", "--high", "3", "--points", "7", "--json").stdout
    )
    assert scan["poi_values"] == pytest.approx(list(np.linspace(0, 3, 7)))
    assert min(scan["delta_twice_nll"]) >= 0.0


def test_text_output(ws_file: Path) -> None:
    assert "Z0 observed" in _run("discovery", str(ws_file)).stdout
    assert "CLs observed" in _run("cls", str(ws_file)).stdout
    assert "upper limit" in _run("limit", str(ws_file)).stdout
    assert "-2 ln L" in _run("fit", str(ws_file)).stdout


@pytest.mark.slow
def test_patch_option_reproduces_sbottom_reference() -> None:
    ref = json.loads((DATA / "sbottom" / "reference.json").read_text())["points"][0]
    out = json.loads(
        _run(
            "cls",
            str(DATA / "sbottom" / ref["bkgonly"]),
            "--patch",
            str(DATA / "sbottom" / ref["patch"]),
            "--json",
        ).stdout
    )
    assert out["cls_obs"] == pytest.approx(ref["expected"]["obs"], rel=ref["tolerance"]["obs_rel"])


def test_errors_exit_2_with_message(ws_file: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["cls", str(ws_file), "--test-stat", "nope"])
    assert result.exit_code == 2
    assert "test_stat must be one of" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"channels": []}))
    result = runner.invoke(app, ["fit", str(bad)])
    assert result.exit_code == 2
    assert "error:" in result.output
    result = runner.invoke(app, ["scan", str(ws_file), "--low", "0"])
    assert result.exit_code == 2 and "--high" in result.output


def test_python_m_sigtune_hep() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sigtune.hep", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("fit", "discovery", "cls", "limit", "ranking", "scan"):
        assert command in out.stdout
