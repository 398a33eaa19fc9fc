"""Tracking callbacks against real MLflow (SQLite store in tmp) and W&B (offline files)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from sigtune import ConfigError
from sigtune.reports._tracking import (
    MLflowCallback,
    WandbCallback,
    build_tracking_callbacks,
)

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -2, 2)
    layers = trial.suggest_int("layers", 1, 3)
    history = []
    for epoch in range(3):
        value = x * x + layers / (epoch + 1)
        history.append(value)
        trial.report(value, epoch)
    trial.set_user_attr("history", {"val_loss": history, "train_loss": [h / 2 for h in history]})
    if trial.number == 2:
        raise RuntimeError("boom")
    return x * x + layers


def test_mlflow_one_run_per_trial(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    cb = MLflowCallback(run_dir=tmp_path)
    study = optuna.create_study(study_name="trk", sampler=optuna.samplers.RandomSampler(seed=3))
    study.optimize(_objective, n_trials=4, callbacks=[cb], catch=(RuntimeError,))
    report = tmp_path / "report.html"
    report.write_text("<html>report</html>")
    cb.log_artifacts(study, [report])

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["trk"])
    assert len(runs) == 4
    by_number = {int(r["tags.sigtune.trial_number"]): r for _, r in runs.iterrows()}
    for t in study.trials:
        row = by_number[t.number]
        assert float(row["params.x"]) == pytest.approx(t.params["x"])
        assert int(row["params.layers"]) == t.params["layers"]
        assert row["tags.sigtune.state"] == t.state.name
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert row["metrics.value"] == pytest.approx(t.value)
            assert row["status"] == "FINISHED"
        else:
            assert row["status"] == "FAILED"
    # intermediate values and per-epoch metrics keep their steps
    client = mlflow.tracking.MlflowClient()
    run_id = by_number[0]["run_id"]
    steps = client.get_metric_history(run_id, "intermediate_value")
    assert [m.step for m in steps] == [0, 1, 2]
    assert [m.value for m in steps] == pytest.approx(
        list(study.trials[0].intermediate_values.values())
    )
    assert len(client.get_metric_history(run_id, "train_loss")) == 3
    # the artefact sits on the best trial's run
    best_run = by_number[study.best_trial.number]["run_id"]
    assert [a.path for a in client.list_artifacts(best_run)] == ["report.html"]


def _wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of an offline ``run-*.wandb`` file (LevelDB log format, 32 KiB
    blocks, 7-byte file header), decoded with W&B's own message types."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, block, pos, buf = path.read_bytes(), 32768, 7, b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        pos += 7
        data, pos = raw[pos : pos + length], pos + length
        if kind == 1:
            buf = data
        elif kind in (2, 3):
            buf = (buf if kind == 3 else b"") + data
            continue
        elif kind == 4:
            buf += data
        else:
            continue
        record = pb.Record()
        record.ParseFromString(buf)
        yield record


def _offline_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(config, summary, history rows) of one offline run directory."""
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    (wandb_file,) = run_dir.glob("run-*.wandb")
    for rec in _wandb_records(wandb_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            config.update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "summary":
            for u in rec.summary.update:
                summary[u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
        elif kind == "history":
            history.append(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in rec.history.item
                }
            )
    return config, summary, history


def test_wandb_offline_run_directories(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    cb = WandbCallback(project="trk", run_dir=tmp_path)
    study = optuna.create_study(study_name="trk", sampler=optuna.samplers.RandomSampler(seed=4))
    study.optimize(_objective, n_trials=2, callbacks=[cb])
    cb.close()  # flushes W&B's service: the offline files are complete
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    seen = {}
    for run in runs:
        config, summary, history = _offline_run(run)
        seen[config["trial_number"]] = (config, summary, history)
    for t in study.trials:
        config, summary, history = seen[t.number]
        assert config["x"] == t.params["x"] and config["layers"] == t.params["layers"]
        assert summary["value"] == pytest.approx(t.value)
        assert summary["state"] == "COMPLETE"
        inter = [h["intermediate_value"] for h in history if "intermediate_value" in h]
        assert inter == pytest.approx(list(t.intermediate_values.values()))
        losses = [h["val_loss"] for h in history if "val_loss" in h]
        assert losses == pytest.approx(t.user_attrs["history"]["val_loss"])


def test_build_from_run_config_section(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    assert build_tracking_callbacks(None, run_dir=tmp_path) == []
    cbs = build_tracking_callbacks({"mlflow": {"experiment": "e1"}}, run_dir=tmp_path)
    assert len(cbs) == 1 and isinstance(cbs[0], MLflowCallback)
    assert cbs[0].tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    with pytest.raises(Exception, match="extra"):
        build_tracking_callbacks({"mlflow": {"uri": "x"}}, run_dir=tmp_path)


def test_run_config_validates_tracking(tmp_path: Path) -> None:
    from sigtune._config import load_config

    base = "n_trials: 2\nobjective: m:f\n"
    path = tmp_path / "c.yaml"
    path.write_text(base + "tracking: {wandb: {mode: offline, project: p}}\n")
    cfg = load_config(path)
    assert cfg.tracking is not None and cfg.tracking.wandb is not None
    assert cfg.tracking.wandb.project == "p"
    path.write_text(base + "tracking: {wandb: {mode: sometimes}}\n")
    with pytest.raises(ConfigError, match="mode"):
        load_config(path)
