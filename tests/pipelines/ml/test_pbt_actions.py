"""Epoch actions of the trainables (issue 9's reporting seam that PBT needs): continue, stop,
checkpoint now, load a checkpoint and continue with new hyperparameters."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sigtune._exceptions import ConfigError  # noqa: E402
from sigtune.pipelines.ml import make_hep_dataset, make_trainable, split_random  # noqa: E402
from sigtune.pipelines.ml._history import EpochAction, report_stops  # noqa: E402

DATA = make_hep_dataset(600, n_informative=3, n_correlated=0, n_noise=1, seed=3)
SPLITS = split_random(DATA, val_fraction=0.3, seed=1)
FAST = {
    "num_layers": 1,
    "units": 8,
    "batch_size": 64,
    "learning_rate": 0.01,
    "max_epochs": 6,
    "patience": None,
}


def _weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_epoch_action_normalises_bools_and_checks_paths() -> None:
    assert EpochAction.of(True).stops
    assert EpochAction.of(False).kind == "continue"
    assert EpochAction.of(None).kind == "continue"
    act = EpochAction.load("/tmp/x", {"learning_rate": 0.1})
    assert act.kind == "load" and act.params == {"learning_rate": 0.1}
    with pytest.raises(ConfigError, match="needs a checkpoint path"):
        EpochAction("checkpoint")
    with pytest.raises(ConfigError, match="kind must be"):
        EpochAction("explode")  # type: ignore[arg-type]


def test_stop_action_prunes_like_the_bool() -> None:
    for stop in (True, EpochAction.stop()):
        t = make_trainable("mlp", seed=0)
        h = t.fit(SPLITS.train, SPLITS.val, FAST, report=lambda e, m, s=stop: s if e == 2 else None)
        assert h.pruned and h.stop_reason == "pruned" and h.n_epochs == 2


def test_checkpoint_action_writes_the_full_state(tmp_path: Path) -> None:
    t = make_trainable("mlp", seed=0)
    seen: dict[str, dict[str, np.ndarray]] = {}

    def report(epoch: int, m: Mapping[str, float]) -> EpochAction:
        if epoch == 3:
            seen["w"] = _weights(t._live["model"])  # type: ignore[attr-defined]
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


def test_load_action_copies_weights_and_changes_the_learning_rate(tmp_path: Path) -> None:
    donor = make_trainable("mlp", seed=1)
    donor.fit(SPLITS.train, SPLITS.val, {**FAST, "max_epochs": 4})
    donor.save_checkpoint(tmp_path / "donor")  # type: ignore[attr-defined]
    parent = torch.load(tmp_path / "donor" / "checkpoint.pt", weights_only=False)

    child = make_trainable("mlp", seed=0, restore_best_weights=False)
    after: dict[str, Any] = {}

    def report(epoch: int, m: Mapping[str, float]) -> EpochAction | None:
        live = child._live  # type: ignore[attr-defined]
        if epoch == 2 and "loaded" not in after:
            after["loaded"] = True
            # a vanishing rate: Adam's steps are ~1e-12, so the weights stay the donor's
            return EpochAction.load(tmp_path / "donor", {"learning_rate": 1e-12})
        after.setdefault("epochs", []).append(epoch)
        after["lr"] = [g["lr"] for g in live["opt"].param_groups]
        after["w"] = _weights(live["model"])
        return None

    h = child.fit(SPLITS.train, SPLITS.val, FAST, report=report)
    # the epoch counter came from the checkpoint (4): epochs 5 and 6 follow
    assert after["epochs"] == [1, 5, 6]
    assert after["lr"] == [1e-12]
    assert len(h.metrics["val_loss"]) == 6  # donor's 4 epochs + 2 of its own
    np.testing.assert_allclose(h.metrics["val_loss"][:4], donor.history_.metrics["val_loss"])  # type: ignore[attr-defined]
    for k, v in after["w"].items():
        np.testing.assert_allclose(v, parent["model"][k].numpy(), rtol=0, atol=1e-9)
    assert child.params_["learning_rate"] == 1e-12  # type: ignore[attr-defined]


def test_start_from_continues_with_new_params_and_a_new_rate_trains(tmp_path: Path) -> None:
    donor = make_trainable("mlp", seed=1, restore_best_weights=False)
    donor.fit(SPLITS.train, SPLITS.val, {**FAST, "max_epochs": 3})
    donor.save_checkpoint(tmp_path / "d")  # type: ignore[attr-defined]
    w0 = _weights(donor.model_)  # type: ignore[attr-defined]
    lrs: list[float] = []

    def report(epoch: int, m: Mapping[str, float]) -> None:
        lrs.append(child._live["opt"].param_groups[0]["lr"])  # type: ignore[attr-defined]

    child = make_trainable("mlp", seed=1, restore_best_weights=False)
    h = child.fit(
        SPLITS.train,
        SPLITS.val,
        {**FAST, "max_epochs": 5, "learning_rate": 0.05},
        report=report,
        start_from=tmp_path / "d",
    )
    assert lrs == [0.05, 0.05] and h.n_epochs == 5
    w1 = _weights(child.model_)  # type: ignore[attr-defined]
    assert any(not np.array_equal(w0[k], w1[k]) for k in w0)


def test_load_refuses_architecture_changes_and_dropout_changes(tmp_path: Path) -> None:
    donor = make_trainable("mlp", seed=1)
    donor.fit(SPLITS.train, SPLITS.val, {**FAST, "max_epochs": 2, "dropout": 0.1})
    donor.save_checkpoint(tmp_path / "d")  # type: ignore[attr-defined]
    child = make_trainable("mlp", seed=1)
    with pytest.raises(ConfigError, match="architecture parameters \\['units'\\]"):
        child.fit(SPLITS.train, SPLITS.val, {**FAST, "units": 9}, start_from=tmp_path / "d")
    child.fit(
        SPLITS.train,
        SPLITS.val,
        {**FAST, "max_epochs": 3, "dropout": 0.4},
        start_from=tmp_path / "d",
    )
    rates = [m.p for m in child.model_.modules() if isinstance(m, torch.nn.Dropout)]  # type: ignore[attr-defined]
    assert rates == [0.4]


def test_trainables_without_checkpoints_say_so() -> None:
    with pytest.raises(ConfigError, match="cannot load during training"):
        report_stops(lambda e, m: EpochAction.load("/x"), 1, {}, "sklearn")
    assert report_stops(lambda e, m: EpochAction.stop(), 1, {}, "sklearn")
    assert not report_stops(None, 1, {}, "sklearn")


def test_schedule_param_and_continue_with_params_change_the_rate() -> None:
    lrs: list[float] = []

    def report(epoch: int, m: Mapping[str, float]) -> EpochAction:
        lrs.append(t._live["opt"].param_groups[0]["lr"])  # type: ignore[attr-defined]
        return EpochAction("continue", params={"learning_rate": 0.002}) if epoch == 4 else None  # type: ignore[return-value]

    t = make_trainable("mlp", seed=0)
    sched = {"3": {"learning_rate": 0.001}}
    t.fit(SPLITS.train, SPLITS.val, {**FAST, "schedule": sched}, report=report)
    assert lrs == [0.01, 0.01, 0.001, 0.001, 0.002, 0.002]
    # a scheduled training is reproducible: same schedule, same weights
    t2 = make_trainable("mlp", seed=0)
    t2.fit(SPLITS.train, SPLITS.val, {**FAST, "schedule": {**sched, "5": {"learning_rate": 0.002}}})
    for k, v in _weights(t.model_).items():  # type: ignore[attr-defined]
        np.testing.assert_array_equal(v, _weights(t2.model_)[k])  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="architecture parameters \\['units'\\]"):
        make_trainable("mlp").fit(
            SPLITS.train, SPLITS.val, {**FAST, "schedule": {"2": {"units": 4}}}
        )
