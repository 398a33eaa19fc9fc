"""``sigtune import-optima``: an OPTIMA run-config read as data and translated."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from sigtune._config import load_config
from sigtune.cli import app

OPTIMA_CONFIG = """
import numpy as np
import OPTIMA.builtin.figures_of_merit  # never imported: the file is parsed, not run

perform_variable_opt = True
num_samples_variableOpt = 6
perform_main_hyperopt = True
num_samples_main = 12
perform_PBT_hyperopt = False
output_name = "ttH"
output_path = "DNN_storage"
inputs_file = "inputs/events.pkl"
input_vars = ["jet1_pt", "jet1_eta", "m_bb"]
input_scaling = {"jet1_pt": ("log10", (1.0, 0.0)), "m_bb": ("linear", (0.01, 0.0))}
max_num_events = np.inf
use_eventNums_splitting = True
eventNums_splitting_N = 5
eventNums_splitting_offset_val = 0
eventNums_splitting_offset_test = 1
max_epochs = 40
early_stopping_patience = 4
random_seed = 7
use_ASHAScheduler = True
ASHA_grace_period = 5
use_early_stopping_for_crossvalidation = False
optimize_on_best_value = False
variable_optimization_mode = "shuffle"
evaluation_class_labels = ["Signal", "Background"]
search_space = {
    "num_layers": {"type": "range", "value_type": "int", "bounds": [2, 4]},
    "units": {"type": "range", "value_type": "int", "bounds": [16, 64], "sampling": "log"},
    "dropout": {
        "type": "range",
        "bounds": [0.0, 0.2],
        "supports_mutation": True,
        "only": (("num_layers",), lambda n: n >= 3),
    },
    "batch_size": 128,
}
overtraining_conditions = [
    ("gap", ("train_loss", "val_loss"), lambda train_loss, val_loss: val_loss - train_loss > 0.05),
]
custom_metrics = [("SoverSqrtB", OPTIMA.builtin.figures_of_merit.build_FoM(name="SoverSqrtB"))]


def get_inputs(run_config, nevts, input_vars_list=None):
    raise RuntimeError("executed!")  # must never run
"""


def test_import_optima_translates_without_executing(tmp_path: Path) -> None:
    src = tmp_path / "run_config.py"
    src.write_text(OPTIMA_CONFIG)
    out = tmp_path / "config.yaml"
    result = CliRunner().invoke(app, ["import-optima", str(src), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "not translated: get_inputs" in result.output
    assert "not translated: custom_metrics" in result.output
    cfg = yaml.safe_load(out.read_text())
    assert cfg["n_trials"] == 12 and cfg["seed"] == 7 and cfg["study_name"] == "ttH"
    assert cfg["pruner"] == {
        "name": "successive_halving",
        "options": {"min_resource": 5, "reduction_factor": 2},
    }
    obj = cfg["objective"]
    assert obj["data"] == {
        "source": "inputs/events.pkl",
        "allow_pickle": True,
        "features": ["jet1_pt", "jet1_eta", "m_bb"],
        "target": "targets",
    }
    assert obj["split"]["method"] == "event_number" and obj["split"]["test_fold"] == 4
    assert obj["trainable"]["options"]["scaling"]["jet1_pt"] == {
        "kind": "log10",
        "scale": 1.0,
        "offset": 0.0,
    }
    assert obj["presearch"]["n_trials"] == 6 and obj["varsel"]["mode"] == "shuffle"
    assert obj["trial_value"] == "last_valid_epoch"
    assert obj["selection"]["overtraining"] == ["val_loss - loss > 0.05"]
    assert obj["evaluation"]["class_names"] == ["Background", "Signal"]
    space = cfg["search_space"]
    assert space["dropout"] == {
        "type": "range",
        "bounds": [0.0, 0.2],
        "mutable": True,
        "only": "num_layers >= 3",
    }
    assert space["max_epochs"] == 40 and space["patience"] == 4
    assert "# NOT translated:" in out.read_text()
    # the written file is a valid sigtune run-config
    loaded = load_config(out)
    assert loaded.objective_config is not None


def test_import_optima_bad_file_exits_2(tmp_path: Path) -> None:
    src = tmp_path / "broken.py"
    src.write_text("search_space = {\n")
    result = CliRunner().invoke(app, ["import-optima", str(src)])
    assert result.exit_code == 2
    assert "not valid Python" in result.output
    result = CliRunner().invoke(app, ["import-optima", str(tmp_path / "missing.py")])
    assert result.exit_code == 2
