"""Epoch actions (checkpoint / load with new hyperparameters) of the Lightning and Keras
trainables, which PBT needs (issue 13: every per-epoch trainable works)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sigtune._exceptions import ConfigError  # noqa: E402
from sigtune.pipelines.ml import make_hep_dataset, make_trainable, split_random  # noqa: E402
from sigtune.pipelines.ml._history import EpochAction  # noqa: E402

DATA = make_hep_dataset(400, n_informative=3, n_correlated=0, n_noise=1, seed=3)
SPLITS = split_random(DATA, val_fraction=0.3, seed=1)
FAST = {"batch_size": 64, "learning_rate": 0.01, "max_epochs": 5, "patience": None}


def _weights(model: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def lightning_factory(n_in: int, n_out: int, params: Mapping[str, Any]) -> Any:
    import lightning as L
    import torch.nn.functional as F

    class Net(L.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(n_in, 8), torch.nn.ReLU(), torch.nn.Linear(8, n_out)
            )
            self.lr = float(params.get("learning_rate", 0.01))

        def forward(self, x: Any) -> Any:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y, w = batch
            logits = self(x).reshape(-1)
            loss = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
            return (loss * w).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    return Net()


def _lightning(**kw: Any) -> Any:
    pytest.importorskip("lightning")
    return make_trainable("lightning", module=lightning_factory, **kw)


def test_lightning_checkpoint_action_writes_the_full_state(tmp_path: Path) -> None:
    t = _lightning(seed=0)
    seen: dict[str, Any] = {}

    def report(epoch: int, m: Mapping[str, float]) -> EpochAction:
        if epoch == 3:
            seen["w"] = _weights(t._live["model"])
            return EpochAction.checkpoint(tmp_path / "c3")
        return EpochAction.proceed()

    t.fit(SPLITS.train, SPLITS.val, FAST, report=report)
    state = torch.load(tmp_path / "c3" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 3
    assert len(state["metrics"]["val_loss"]) == 3
    assert state["optimizer"]["state"]  # Adam moments are there
    assert state["scaler"]["mean"] is not None
    for k, v in seen["w"].items():
        np.testing.assert_array_equal(state["model"][k].numpy(), v)


def test_lightning_load_action_copies_weights_and_changes_the_learning_rate(
    tmp_path: Path,
) -> None:
    donor = _lightning(seed=1)
    donor.fit(SPLITS.train, SPLITS.val, {**FAST, "max_epochs": 3})
    donor.save_checkpoint(tmp_path / "donor")
    parent = torch.load(tmp_path / "donor" / "checkpoint.pt", weights_only=False)
    assert parent["epoch"] == 3 and parent["optimizer"]["param_groups"][0]["lr"] == 0.01

    child = _lightning(seed=0, restore_best_weights=False)
    after: dict[str, Any] = {}

    def report(epoch: int, m: Mapping[str, float]) -> EpochAction | None:
        live = child._live
        if epoch == 2 and "loaded" not in after:
            after["loaded"] = True
            # a vanishing rate: Adam's steps are ~1e-12, so the weights stay the donor's
            return EpochAction.load(tmp_path / "donor", {"learning_rate": 1e-12})
        after.setdefault("epochs", []).append(epoch)
        after["lr"] = [g["lr"] for g in live["opt"].param_groups]
        after["w"] = _weights(live["model"])
        return None

    h = child.fit(SPLITS.train, SPLITS.val, FAST, report=report)
    assert after["epochs"] == [1, 4, 5]  # the epoch counter came from the checkpoint (3)
    assert after["lr"] == [1e-12]
    assert len(h.metrics["val_loss"]) == 5  # donor's 3 epochs + 2 of its own
    np.testing.assert_allclose(h.metrics["val_loss"][:3], donor.history_.metrics["val_loss"])
    for k, v in after["w"].items():
        np.testing.assert_allclose(v, parent["model"][k].numpy(), rtol=0, atol=1e-9)
    assert child.params_["learning_rate"] == 1e-12
    assert child.loaded_digest_ is not None


def test_lightning_start_from_continues_with_a_new_rate(tmp_path: Path) -> None:
    donor = _lightning(seed=1, restore_best_weights=False)
    donor.fit(SPLITS.train, SPLITS.val, {**FAST, "max_epochs": 2})
    donor.save_checkpoint(tmp_path / "d")
    w0 = _weights(donor.model_)
    lrs: list[float] = []
    child = _lightning(seed=1, restore_best_weights=False)

    def report(epoch: int, m: Mapping[str, float]) -> None:
        lrs.append(child._live["opt"].param_groups[0]["lr"])

    h = child.fit(
        SPLITS.train,
        SPLITS.val,
        {**FAST, "max_epochs": 4, "learning_rate": 0.05},
        report=report,
        start_from=tmp_path / "d",
    )
    assert lrs == [0.05, 0.05] and h.n_epochs == 4
    w1 = _weights(child.model_)
    assert any(not np.array_equal(w0[k], w1[k]) for k in w0)
    with pytest.raises(ConfigError, match="no checkpoint at"):
        _lightning().fit(SPLITS.train, SPLITS.val, FAST, start_from=tmp_path / "missing")


# ---------------------------------------------------------------------- Keras (torch backend)
KERAS_SCRIPT = r"""
import json, sys, tempfile
from pathlib import Path
import numpy as np
import torch
from sigtune.pipelines.ml import make_hep_dataset, make_trainable, split_random
from sigtune.pipelines.ml._history import EpochAction

def builder(n_in, n_out, params):
    import keras
    return keras.Sequential([
        keras.Input((n_in,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(n_out, activation="sigmoid"),
    ])

d = make_hep_dataset(400, n_informative=3, n_correlated=0, n_noise=1, seed=3)
s = split_random(d, val_fraction=0.3, seed=1)
fast = {"batch_size": 64, "learning_rate": 0.01, "max_epochs": 5, "patience": None}
tmp = Path(tempfile.mkdtemp())
out = {}

# checkpoint action: the file holds this epoch's weights and the optimiser state
t = make_trainable("keras", builder=builder, seed=0)
seen = {}
def rep(e, m):
    if e == 3:
        seen["w"] = [np.array(w) for w in t._live["model"].get_weights()]
        return EpochAction.checkpoint(tmp / "c3")
t.fit(s.train, s.val, fast, report=rep)
st = torch.load(tmp / "c3" / "checkpoint.pt", weights_only=False)
out["ck_epoch"] = st["epoch"]
out["ck_metrics"] = len(st["metrics"]["val_loss"])
out["ck_weights_equal"] = all(np.array_equal(a, b) for a, b in zip(st["weights"], seen["w"]))
out["ck_opt_paths"] = st["optimizer_paths"]
out["ck_scaler"] = st["scaler"]["mean"] is not None

# load action: donor's weights (within 1e-9 at lr 1e-12), epoch counter, new learning rate
donor = make_trainable("keras", builder=builder, seed=1)
donor.fit(s.train, s.val, {**fast, "max_epochs": 3})
donor.save_checkpoint(tmp / "donor")
parent = torch.load(tmp / "donor" / "checkpoint.pt", weights_only=False)
child = make_trainable("keras", builder=builder, seed=0, restore_best_weights=False)
after = {"epochs": []}
def rep2(e, m):
    if e == 2 and "loaded" not in after:
        after["loaded"] = True
        return EpochAction.load(tmp / "donor", {"learning_rate": 1e-12})
    after["epochs"].append(e)
    opt = child._live["model"].optimizer
    after["lr"] = float(opt.learning_rate)
    after["w"] = [np.array(w) for w in child._live["model"].get_weights()]
h = child.fit(s.train, s.val, fast, report=rep2)
out["epochs"] = after["epochs"]
out["lr"] = after["lr"]
out["n_metrics"] = len(h.metrics["val_loss"])
out["head_diff"] = float(np.max(np.abs(
    np.array(h.metrics["val_loss"][:3]) - np.array(donor.history_.metrics["val_loss"]))))
out["w_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(after["w"], parent["weights"]))
out["params_lr"] = child.params_["learning_rate"]
out["digest"] = child.loaded_digest_ is not None

# start_from: continues from the checkpoint's epoch with the new rate, and trains
lrs = []
c2 = make_trainable("keras", builder=builder, seed=1, restore_best_weights=False)
h2 = c2.fit(s.train, s.val, {**fast, "max_epochs": 5, "learning_rate": 0.05},
            report=lambda e, m: lrs.append(float(c2._live["model"].optimizer.learning_rate)),
            start_from=tmp / "donor")
out["start_lrs"] = lrs
out["start_epochs"] = h2.n_epochs
out["start_moved"] = any(
    not np.array_equal(a, b) for a, b in zip(c2.model_.get_weights(), parent["weights"]))
print(json.dumps(out))
"""


def test_keras_torch_backend_checkpoint_load_and_learning_rate() -> None:
    import importlib.util
    import json
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    env = {**os.environ, "KERAS_BACKEND": "torch", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", KERAS_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["ck_epoch"] == 3 and res["ck_metrics"] == 3 and res["ck_scaler"]
    assert res["ck_weights_equal"]
    assert any("momentum" in p for p in res["ck_opt_paths"])  # Adam moments are there
    assert res["epochs"] == [1, 4, 5]  # the epoch counter came from the checkpoint (3)
    assert res["lr"] == pytest.approx(1e-12, rel=1e-6)
    assert res["n_metrics"] == 5 and res["head_diff"] < 1e-12
    assert res["w_diff"] < 1e-6  # float32 weights; steps at lr 1e-12 are ~1e-12
    assert res["params_lr"] == 1e-12 and res["digest"]
    assert res["start_lrs"] == [pytest.approx(0.05), pytest.approx(0.05)]
    assert res["start_epochs"] == 5 and res["start_moved"]


@pytest.mark.slow
def test_pbt_stage_runs_a_lightning_population(tmp_path: Path, local_ray: Any) -> None:
    """Two Lightning members on Ray Tune's PBT: exploits load the donor's weights."""
    pytest.importorskip("lightning")
    pytest.importorskip("ray.tune")
    import sys

    from ray import cloudpickle

    from sigtune.pipelines.ml._cv import TrainableSpec
    from sigtune.pipelines.ml._pbt import PBTStage, run_pbt

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]
    stage = PBTStage.model_validate(
        {
            "population": 2,
            "perturbation_interval": 2,
            "max_epochs": 4,
            "quantile_fraction": 0.5,
            "resample_probability": 1.0,
            "mutations": {"learning_rate": [0.1, 0.001]},
            "max_concurrent": 1,
            "num_cpus": 2,
        }
    )
    out = run_pbt(
        stage,
        factory=TrainableSpec("lightning", {"module": lightning_factory, "metrics": []}),
        train=SPLITS.train,
        val=SPLITS.val,
        monitor="val_loss",
        direction="minimize",
        members=[{**FAST, "learning_rate": lr} for lr in (0.1, 0.001)],
        mutations={k: stage.mutations[k] for k in stage.mutations},
        seed=0,
        stage_dir=tmp_path / "pbt",
    )
    assert out["epochs_trained"] == 2 * 4
    assert out["n_exploits"] >= 1
    assert len(out["schedule"]) == 4
    assert (tmp_path / "pbt" / "best_model" / "model.pt").is_file()
    _assert_exploits_copied_weights(tmp_path / "pbt", out["n_exploits"])


def _assert_exploits_copied_weights(stage_dir: Path, n_exploits: int) -> None:
    from sigtune.pipelines.ml._pbt import ROWS_FILE, member_rows

    rows: list[dict[str, Any]] = []
    for f in sorted((stage_dir / "ray").glob(f"*/*/{ROWS_FILE}")):
        rows.extend(member_rows(f.parent))
    exploited = [r for r in rows if r["exploited_from"]]
    assert len(exploited) == n_exploits
    for r in exploited:  # weights right after the copy == weights in the donor's checkpoint
        assert r["loaded_digest"] and r["loaded_digest"] == r["source_digest"]


def keras_builder(n_in: int, n_out: int, params: Mapping[str, Any]) -> Any:
    import keras

    return keras.Sequential(
        [
            keras.Input((n_in,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(n_out, activation="sigmoid"),
        ]
    )


@pytest.mark.slow
def test_pbt_stage_runs_a_keras_population(tmp_path: Path, local_ray: Any) -> None:
    """Two Keras (torch backend) members on Ray Tune's PBT: exploits load the donor's weights.

    In this process, on the module's Ray instance: ``local_ray`` (conftest.py) sets
    ``KERAS_BACKEND=torch`` before Ray starts, for this process and Ray's workers."""
    import sys

    keras = pytest.importorskip("keras")
    pytest.importorskip("ray.tune")
    from ray import cloudpickle

    from sigtune.pipelines.ml._cv import TrainableSpec
    from sigtune.pipelines.ml._pbt import PBTStage, run_pbt

    assert keras.backend.backend() == "torch", "keras was imported before KERAS_BACKEND was set"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]
    stage = PBTStage.model_validate(
        {
            "population": 2,
            "perturbation_interval": 2,
            "max_epochs": 4,
            "quantile_fraction": 0.5,
            "resample_probability": 1.0,
            "mutations": {"learning_rate": [0.1, 0.001]},
            "max_concurrent": 1,
            "num_cpus": 2,
        }
    )
    fast = {"batch_size": 64, "max_epochs": 4, "patience": None}
    stage_dir = tmp_path / "pbt"
    out = run_pbt(
        stage,
        factory=TrainableSpec("keras", {"builder": keras_builder, "metrics": []}),
        train=SPLITS.train,
        val=SPLITS.val,
        monitor="val_loss",
        direction="minimize",
        members=[{**fast, "learning_rate": lr} for lr in (0.1, 0.001)],
        mutations={k: stage.mutations[k] for k in stage.mutations},
        seed=0,
        stage_dir=stage_dir,
    )
    assert out["epochs_trained"] == 2 * 4
    assert out["n_exploits"] >= 1 and len(out["schedule"]) == 4
    assert (stage_dir / "best_model" / "model.keras").is_file()
    _assert_exploits_copied_weights(stage_dir, out["n_exploits"])
