"""The pipeline: pruning saves epochs, stages resume where they stopped, run-config integration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml import _pipeline
from sigtune.pipelines.ml._pipeline import STAGES, load_pipeline_config, run_pipeline

LOGREG = {
    "kind": "sklearn",
    "options": {"estimator": "sklearn.linear_model.LogisticRegression", "metrics": ["auc"]},
}


def _mlp_search(run_dir: Path, pruner: dict[str, Any] | str) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "seed": 3,
        "data": {
            "generate": {
                "n_events": 1200,
                "n_informative": 3,
                "n_correlated": 0,
                "n_noise": 2,
                "seed": 1,
            }
        },
        "trainable": {"kind": "mlp", "options": {"metrics": [], "n_threads": 1}},
        "search_space": {
            "num_layers": 1,
            "units": {"type": "range", "value_type": "int", "bounds": [2, 12]},
            "learning_rate": {"type": "range", "bounds": [3e-4, 3e-2], "sampling": "log"},
            "batch_size": 128,
            "max_epochs": 10,
            "patience": None,
        },
        "presearch": {"enabled": False},
        "varsel": {"enabled": False},
        "search": {"n_trials": 10, "sampler": "random", "pruner": pruner},
        "selection": {"enabled": False},
        "cv": {"enabled": False},
        "evaluation": {"enabled": False},
    }


@pytest.mark.slow
def test_pruned_mlp_search_spends_fewer_epochs(tmp_path: Path) -> None:
    full = run_pipeline(_mlp_search(tmp_path / "none", "none")).outputs["search"]
    pruned = run_pipeline(
        _mlp_search(
            tmp_path / "median",
            {"name": "median", "options": {"n_startup_trials": 2, "n_warmup_steps": 1}},
        )
    ).outputs["search"]
    assert full["total_epochs"] == 10 * 10  # no early stopping: every trial runs max_epochs
    assert full["counts"]["pruned"] == 0
    assert pruned["counts"]["pruned"] >= 1
    assert pruned["total_epochs"] < full["total_epochs"]
    # the same seed samples the same trials: pruning must not lose the best one by much
    assert pruned["best_value"] <= full["best_value"] * 1.05


def _small(run_dir: Path) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "seed": 0,
        "data": {
            "generate": {
                "n_events": 900,
                "n_informative": 2,
                "n_correlated": 0,
                "n_noise": 2,
                "seed": 5,
            }
        },
        "trainable": LOGREG,
        "search_space": {"C": {"type": "range", "bounds": [0.01, 10.0], "sampling": "log"}},
        "presearch": {"n_trials": 3, "sampler": "random", "pruner": "none"},
        "varsel": {"k": 2, "num_repeats": 1},
        "search": {"n_trials": 4, "sampler": "random", "pruner": "none"},
        "selection": {"min_epochs": 10},
        "cv": {"k": 2},
        "evaluation": {"metrics": ["auc"]},
    }


def test_interrupted_pipeline_resumes_at_the_failed_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _small(tmp_path / "run")

    def broken(self: Any, stage_dir: Path) -> dict[str, Any]:
        raise RuntimeError("node lost during cross-validation")

    monkeypatch.setattr(_pipeline._Runner, "cv", broken)
    with pytest.raises(RuntimeError, match="node lost"):
        run_pipeline(cfg)
    run = tmp_path / "run"
    done = [s for s in STAGES if (run / s / "done.json").is_file()]
    assert done == ["presearch", "varsel", "search", "selection"]
    before = json.loads((run / "search" / "done.json").read_text())

    monkeypatch.undo()
    res = run_pipeline(cfg)
    assert res.skipped == ["presearch", "varsel", "search", "selection"]
    assert res.ran == ["cv", "evaluation"]
    # the finished search was not redone: its study still holds exactly n_trials trials
    study = optuna.load_study(
        study_name="search",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(run / "search" / "study.journal"))
        ),
    )
    assert len(study.trials) == 4
    assert res.outputs["search"]["best_params"] == before["best_params"]
    label = next(iter(res.outputs["cv"]["trials"]))
    assert (run / "cv" / label / "fold_1" / "model" / "trainable.json").is_file()
    assert (run / "evaluation" / label / "fold_0" / "roc.png").is_file()
    # everything done: a third call runs nothing
    assert run_pipeline(cfg).ran == []


def test_interrupted_search_resumes_its_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _small(tmp_path / "run")
    cfg.update(
        {
            "presearch": {"enabled": False},
            "varsel": {"enabled": False},
            "selection": {"enabled": False},
            "cv": {"enabled": False},
            "evaluation": {"enabled": False},
        }
    )
    cfg["search"]["n_trials"] = 6
    original = _pipeline.TrialObjective.__call__
    calls: list[int] = []

    def flaky(self: Any, params: Any, trial: Any) -> float:
        calls.append(trial.number)
        if trial.number == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the search
        return original(self, params, trial)

    monkeypatch.setattr(_pipeline.TrialObjective, "__call__", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg)
    assert not (tmp_path / "run" / "search" / "done.json").exists()
    monkeypatch.undo()
    res = run_pipeline(cfg)
    assert res.ran == ["search"]
    counts = res.outputs["search"]["counts"]
    # 3 complete + 1 interrupted (FAIL) before, the remaining 2 now: 6 finished in total
    assert sum(counts.values()) == 6
    assert counts["complete"] == 5


def test_sigtune_run_with_ml_objective(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sigtune.cli import app

    small = _small(tmp_path)
    config = {
        "study_name": "ml",
        "run_dir": str(tmp_path / "run"),
        "n_trials": 4,
        "seed": 2,
        "sampler": "random",
        "report": False,
        "search_space": small["search_space"],
        "objective": {
            "type": "ml",
            **{
                k: small[k]
                for k in ("data", "trainable", "presearch", "varsel", "cv", "evaluation")
            },
            "selection": {"enabled": False},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for stage in ("presearch", "varsel", "cv", "evaluation"):
        assert (run / stage / "done.json").is_file(), stage
    assert "ML pipeline stages run" in result.output
    selected = json.loads((run / "varsel" / "done.json").read_text())["selected"]
    cv = json.loads((run / "cv" / "done.json").read_text())
    assert all(entry["features"] == selected for entry in cv["trials"].values())
    # the same command again resumes: the study is full and every stage is done
    again = CliRunner().invoke(app, ["run", str(path)])
    assert again.exit_code == 0, again.output
    assert "none (all done before)" in again.output


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    cfg = _small(tmp_path)
    cfg["cv"]["folds"] = 3
    with pytest.raises(ConfigError, match=r"cv\.folds"):
        load_pipeline_config(cfg)
    cfg = _small(tmp_path)
    cfg["data"]["sklearn"] = "breast_cancer"
    with pytest.raises(ConfigError, match="exactly one of source, generate, sklearn"):
        load_pipeline_config(cfg)
    cfg = _small(tmp_path)
    cfg["search_space"] = {}
    with pytest.raises(ConfigError, match="search_space"):
        run_pipeline(cfg)


def test_pipeline_yaml_relative_data_path(tmp_path: Path) -> None:
    from sigtune.pipelines.ml._generate import make_hep_dataset

    make_hep_dataset(300, n_noise=1, seed=2).to_dataframe().to_csv(
        tmp_path / "events.csv", index=False
    )
    cfg = _small(tmp_path / "run")
    cfg["data"] = {
        "source": "events.csv",
        "target": "target",
        "weight": "weight",
        "event_number": "event_number",
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    loaded = load_pipeline_config(tmp_path / "p.yaml")
    assert loaded.base_dir == tmp_path.resolve()
    data = _pipeline.load_events(loaded.data, loaded.base_dir)
    assert len(data) == 300 and "noise_0" in data.features


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sigtune.pipelines.ml.__main__ import main

    cfg = _small(tmp_path / "run")
    for stage in ("presearch", "varsel", "selection", "evaluation"):
        cfg[stage] = {"enabled": False}
    cfg["search"]["n_trials"] = 2
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    assert main([str(tmp_path / "p.yaml")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ran"] == ["search", "cv"]
    assert set(next(iter(summary["cv"].values()))) >= {"test_auc", "val_weighted_loss"}
    cfg["bogus"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    assert main([str(tmp_path / "bad.yaml")]) == 2
    assert "bogus" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_pipeline_process_resumes_the_killed_trial(tmp_path: Path) -> None:
    """SIGKILL the pipeline during a trial; the rerun requeues it and resumes its checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = _mlp_search(tmp_path / "run", "none")
    cfg["data"]["generate"]["n_events"] = 3000
    # Enough epochs that the trial is still running when it is killed, even on an idle machine
    # (an epoch takes ~20 ms here); the kill follows the first checkpoint at once.
    cfg["search_space"]["max_epochs"] = 100
    cfg["search_space"]["batch_size"] = 64
    cfg["search"].update({"n_trials": 2, "checkpoints": True})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sigtune.pipelines.ml", str(path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpts = tmp_path / "run" / "search" / "checkpoints"
    deadline = time.monotonic() + 120
    try:
        while not list(ckpts.glob("*/checkpoint.pt")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert not (tmp_path / "run" / "search" / "done.json").exists()

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from" in rerun.stderr  # the requeued trial continued from its checkpoint
    summary = json.loads(rerun.stdout)
    assert summary["ran"] == ["search"]
    done = json.loads((tmp_path / "run" / "search" / "done.json").read_text())
    # the killed trial is FAIL (stale) and counts towards n_trials; its requeued copy completed
    assert done["counts"] == {"complete": 1, "pruned": 0, "fail": 1}


def test_lightgbm_pipeline_selects_on_per_iteration_curves(tmp_path: Path) -> None:
    """Boosting iterations are "epochs": best-fit selection works on their curves too."""
    cfg = _small(tmp_path / "run")
    cfg["data"]["generate"]["n_events"] = 1500
    cfg["trainable"] = {"kind": "lightgbm", "options": {"metrics": ["auc"]}}
    cfg["search_space"] = {
        "learning_rate": {"type": "range", "bounds": [0.02, 0.2], "sampling": "log"},
        "num_leaves": {"type": "range", "value_type": "int", "bounds": [4, 16]},
        "num_boost_round": 30,
        "verbosity": -1,
    }
    cfg["presearch"] = {"enabled": False}
    cfg["varsel"] = {"enabled": False}
    cfg["evaluation"] = {"enabled": False}
    cfg["search"]["n_trials"] = 3
    res = run_pipeline(cfg)
    sel = res.outputs["selection"]
    assert len(sel["best_value"]) == 1
    assert len(sel["best_fit"]) == 1  # smooth boosting curves: R^2 of val_loss >= 0.9
    for pick in sel["best_fit"]:
        assert pick["r2"]["val_loss"] >= 0.9 and 1 <= pick["epoch"] <= 30
    label = f"trial_{sel['selected'][0]['number']}"
    assert res.outputs["cv"]["trials"][label]["params"]["num_boost_round"] == 30


def test_downstream_stages_rerun_when_the_study_changes(tmp_path: Path) -> None:
    """More trials or another study name: selection/cv/evaluation are not shown stale."""
    cfg = _small(tmp_path / "run")
    cfg.update({"presearch": {"enabled": False}, "varsel": {"enabled": False}})
    cfg["evaluation"] = {"enabled": False}
    cfg["selection"] = {"min_epochs": 5}
    first = run_pipeline(cfg)
    assert first.ran == ["search", "selection", "cv"]
    record = first.outputs["selection"]["consumed"]["study"]
    assert record == {"study": "search", "n_finished": 4, "best_trial": record["best_trial"]}
    assert run_pipeline(cfg).ran == []
    cfg["search"]["study_name"] = "other"
    cfg["search"]["n_trials"] = 2
    again = run_pipeline(cfg)
    assert again.ran == ["search", "selection", "cv"]
    assert again.outputs["selection"]["consumed"]["study"]["study"] == "other"
    numbers = {s["number"] for s in again.outputs["selection"]["selected"]}
    assert numbers <= {0, 1}  # trials of the new study, which has two


@pytest.mark.parametrize(
    ("labels", "match"),
    [("one_class", "single class"), ("gap", "no events of class"), ("zero_w", "sums to 0")],
)
def test_degenerate_data_exits_2_at_config_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], labels: str, match: str
) -> None:
    import numpy as np
    import pandas as pd

    from sigtune.pipelines.ml.__main__ import main

    n = 60
    y = {"one_class": np.zeros(n), "gap": np.arange(n) % 2 * 2, "zero_w": np.arange(n) % 2}[labels]
    w = np.zeros(n) if labels == "zero_w" else np.ones(n)
    pd.DataFrame({"a": np.arange(n, dtype=float), "y": y.astype(int), "w": w}).to_csv(
        tmp_path / "events.csv", index=False
    )
    cfg = _small(tmp_path / "run")
    cfg["data"] = {"source": "events.csv", "target": "y", "weight": "w"}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    assert main([str(tmp_path / "p.yaml")]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1  # one line naming the file, the column and the problem
    assert match in errors[0] and "events.csv" in errors[0]
    assert ("'w'" if labels == "zero_w" else "'y'") in errors[0]  # the column at fault
    assert not (tmp_path / "run" / "search").exists()  # nothing ran


def test_unknown_trainable_kind_exits_2_before_any_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sigtune.pipelines.ml.__main__ import main

    cfg = _small(tmp_path / "run")
    cfg["trainable"] = {"kind": "mpl"}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    assert main([str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert "unknown trainable kind 'mpl'" in err
    assert not (tmp_path / "run" / "presearch").exists()


def test_cv_trains_the_selected_epoch(tmp_path: Path) -> None:
    cfg = _mlp_search(tmp_path / "run", "none")
    cfg["search"]["n_trials"] = 2
    cfg["search_space"]["max_epochs"] = 8
    cfg["search_space"]["patience"] = 2
    cfg["selection"] = {"min_epochs": 5, "use": "best_value"}
    cfg["cv"] = {"k": 2}
    res = run_pipeline(cfg)
    sel = res.outputs["selection"]["selected"][0]
    cv = res.outputs["cv"]["trials"][f"trial_{sel['number']}"]
    assert cv["training"] == f"fixed_epochs:{sel['epoch']}"
    assert cv["folds"]["epochs"] == [float(sel["epoch"])] * 2
    cfg["cv"] = {"k": 2, "early_stopping": True}  # the option changes what cv consumed
    again = run_pipeline(cfg)
    assert again.ran == ["cv"]
    assert again.outputs["cv"]["trials"][f"trial_{sel['number']}"]["training"] == "early_stopping"


def test_evaluation_writes_diagnostics_and_overview(tmp_path: Path) -> None:
    cfg = _mlp_search(tmp_path / "run", "none")
    cfg["search"]["n_trials"] = 2
    cfg["search_space"]["max_epochs"] = 6
    cfg["selection"] = {"min_epochs": 5, "use": "best_value"}
    cfg["cv"] = {"k": 2}
    cfg["evaluation"] = {"metrics": ["auc"]}
    res = run_pipeline(cfg)
    ev = tmp_path / "run" / "evaluation"
    label = next(iter(res.outputs["evaluation"]["trials"]))
    assert (ev / "inputs.png").stat().st_size > 0
    assert (ev / label / "history.png").stat().st_size > 0
    index = (ev / "index.html").read_text()
    for name in ("inputs.png", f"{label}/history.png", f"{label}/fold_0/roc.png"):
        assert f"src='{name}'" in index


def test_python_hooks_reader_finalize_and_evaluation(tmp_path: Path) -> None:
    """Input reading, final-model post-processing and custom evaluation as module:function."""
    from sigtune.pipelines.ml._generate import make_hep_dataset

    make_hep_dataset(400, n_noise=1, seed=2).to_dataframe().to_csv(tmp_path / "ev.txt", index=False)
    (tmp_path / "hooks.py").write_text(
        "import json\n"
        "import numpy as np\n"
        "import pandas as pd\n"
        "def reader(path):\n"
        "    df = pd.read_csv(path)\n"
        "    df['inf_0'] = np.log1p(np.abs(df['inf_0']))  # a non-linear input transform\n"
        "    return df\n"
        "def finalize(models, out_dir):\n"
        "    out_dir.mkdir(parents=True, exist_ok=True)\n"
        "    (out_dir / 'final.json').write_text(json.dumps({'n_models': len(models)}))\n"
        "def evaluate(models, splits, out_dir):\n"
        "    return {'n_val_events': sum(len(s.val) for s in splits)}\n"
    )
    cfg = _small(tmp_path / "run")
    cfg.update({"presearch": {"enabled": False}, "varsel": {"enabled": False}})
    cfg["base_dir"] = str(tmp_path)
    cfg["data"] = {
        "source": "ev.txt",
        "reader": "hooks.py:reader",
        "target": "target",
        "weight": "weight",
        "event_number": "event_number",
    }
    cfg["cv"] = {"k": 2, "finalize": "hooks.py:finalize"}
    cfg["evaluation"] = {"metrics": ["auc"], "hook": "hooks.py:evaluate"}
    res = run_pipeline(cfg)
    label = next(iter(res.outputs["cv"]["trials"]))
    final = json.loads((tmp_path / "run" / "cv" / label / "final.json").read_text())
    assert final == {"n_models": 2}
    assert res.outputs["evaluation"]["trials"][label]["custom"]["n_val_events"] > 0


def test_sigtune_run_reruns_selection_after_more_trials(tmp_path: Path) -> None:
    """The run-config path: a larger study re-runs selection/cv instead of "all done before"."""
    from typer.testing import CliRunner

    from sigtune.cli import app

    small = _small(tmp_path)
    config = {
        "study_name": "ml",
        "run_dir": str(tmp_path / "run"),
        "n_trials": 3,
        "seed": 2,
        "sampler": "random",
        "report": False,
        "search_space": small["search_space"],
        "objective": {
            "type": "ml",
            "data": small["data"],
            "trainable": small["trainable"],
            "presearch": {"enabled": False},
            "varsel": {"enabled": False},
            "selection": {"min_epochs": 5},
            "cv": {"k": 2},
            "evaluation": {"enabled": False},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert CliRunner().invoke(app, ["run", str(path)]).exit_code == 0
    first = json.loads((tmp_path / "run" / "selection" / "done.json").read_text())
    assert first["consumed"]["study"]["n_finished"] == 3
    config["n_trials"] = 5
    path.write_text(yaml.safe_dump(config))
    again = CliRunner().invoke(app, ["run", str(path)])
    assert again.exit_code == 0, again.output
    assert "stages run: selection, cv" in again.output
    second = json.loads((tmp_path / "run" / "selection" / "done.json").read_text())
    assert second["consumed"]["study"]["n_finished"] == 5
