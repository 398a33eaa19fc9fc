"""The `objective: {type: binning}` run-config section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sigtune import ConfigError
from sigtune._config import build_objective, load_config

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "binning"


def _config(tmp_path: Path, **objective: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.normal(0.5, 0.1, 500), "w": np.full(500, 0.02)}).to_parquet(
        tmp_path / "sig.parquet"
    )
    pd.DataFrame(
        {"x": rng.random(2000), "w": np.full(2000, 0.05), "eta": rng.normal(0, 2, 2000)}
    ).to_parquet(tmp_path / "bkg.parquet")
    section = {
        "type": "binning",
        "samples": [
            {
                "name": "sig",
                "path": str(tmp_path / "sig.parquet"),
                "discriminant": "x",
                "weight": "w",
            },
            {
                "name": "bkg",
                "path": str(tmp_path / "bkg.parquet"),
                "discriminant": "x",
                "weight": "w",
            },
        ],
        "signal": ["sig"],
        "fine_bins": {"n": 100},
        "binning": {"kind": "uniform", "n_bins": [2, 10]},
        "figure": "z_asimov",
    }
    section.update(objective)
    return {"n_trials": 5, "seed": 1, "run_dir": str(tmp_path / "run"), "objective": section}


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLES / "corrected.yaml")
    assert cfg.objective_config.figure == "z0_exp"  # type: ignore[union-attr]
    assert cfg.objective_config.max_rel_stat == 0.15  # type: ignore[union-attr]


def test_factory_builds_a_working_objective(tmp_path: Path) -> None:
    import optuna

    spec = build_objective(load_config(_config(tmp_path)))
    assert spec.directions == ["maximize"]
    study = optuna.create_study(direction="maximize")
    study.optimize(spec.objective, n_trials=3)
    assert all(t.value is not None and t.value > 0 for t in study.trials)
    assert spec.after_run is not None
    text = spec.after_run(study, tmp_path / "out")
    assert "best z_asimov" in str(text) and (tmp_path / "out" / "best_workspace.json").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"binning": {"kind": "magic"}}, "unknown binning kind 'magic'"),
        ({"bins": 3}, "bins"),
        ({"figure": "auc"}, "figure"),
        ({"cuts": [{"column": "eta", "op": "=", "value": 1}]}, "op must be one of"),
        ({"generator": "x.py:f"}, "exactly one of 'samples'"),
        ({"workspace": {"observations": "data"}}, "observations"),
    ],
)
def test_bad_sections_raise_config_error(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, **change))


def test_direction_mismatch_and_missing_column(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    cfg["direction"] = "minimize"
    with pytest.raises(ConfigError, match=r"needs directions \['maximize'\]"):
        build_objective(load_config(cfg))
    bad = _config(tmp_path)
    bad["objective"]["samples"][0]["weight"] = "nope"
    with pytest.raises(ConfigError, match="columns \\['nope'\\] not found"):
        build_objective(load_config(bad))
