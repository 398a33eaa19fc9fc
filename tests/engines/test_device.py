"""Device selection for trainables (``auto | cpu | cuda | cuda:N``), GPU round robin over local
workers, the ``spawn`` start method once CUDA is initialised, and GPU checkpoints loaded on a CPU.

These run on the CPU: a checkpoint "written on a GPU" is produced by saving with torch's storage
location tag set to ``cuda:0`` -- the exact bytes a GPU save writes for the location.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
import pytest

import sigtune
from sigtune._exceptions import ConfigError
from sigtune.engines import _local

torch = pytest.importorskip("torch")

from sigtune.pipelines.ml import make_hep_dataset, make_trainable, split_random  # noqa: E402
from sigtune.pipelines.ml._device import (  # noqa: E402
    check_device,
    load_torch,
    resolve_device,
    worker_device,
)

HAS_CUDA = bool(torch.cuda.is_available())
FAST = {"num_layers": 2, "units": 8, "batch_size": 64, "learning_rate": 0.01, "max_epochs": 3}


def _save_as_if_on_gpu(obj: Any, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.save`` writing every storage with location ``cuda:0`` (as a GPU save does)."""
    import torch.serialization as ts

    with monkeypatch.context() as m:
        m.setattr(ts, "location_tag", lambda storage: "cuda:0")
        torch.save(obj, path)


def test_device_specs_are_checked() -> None:
    assert [check_device(s) for s in ("auto", "cpu", "cuda", "cuda:3", " CUDA:1 ")] == [
        "auto",
        "cpu",
        "cuda",
        "cuda:3",
        "cuda:1",
    ]
    for bad in ("gpu", "cuda:", "cuda:x", "tpu", ""):
        with pytest.raises(ConfigError, match="device must be"):
            check_device(bad)


def test_resolve_without_gpus() -> None:
    assert resolve_device("auto", n_gpus=0) == "cpu"
    assert resolve_device("cpu", n_gpus=4) == "cpu"
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        resolve_device("cuda", n_gpus=0)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        resolve_device("cuda:0", n_gpus=0)


def test_resolve_with_gpus_uses_the_worker_index() -> None:
    env = {"SIGTUNE_WORKER_INDEX": "5"}
    assert resolve_device("auto", n_gpus=4, env=env) == "cuda:1"
    assert resolve_device("cuda", n_gpus=4, env=env) == "cuda:1"
    assert resolve_device("cuda:3", n_gpus=4, env=env) == "cuda:3"
    assert resolve_device("auto", n_gpus=1, env={}) == "cuda:0"  # Ray: the one assigned GPU
    with pytest.raises(ConfigError, match="sees only 4 GPU"):
        resolve_device("cuda:4", n_gpus=4)


def test_round_robin_over_local_workers() -> None:
    got = [worker_device(4, {"SIGTUNE_WORKER_INDEX": str(i)}) for i in range(8)]
    assert got == [f"cuda:{i % 4}" for i in range(8)]
    assert worker_device(0, {"SIGTUNE_WORKER_INDEX": "3"}) == "cpu"


def test_auto_on_this_machine() -> None:
    assert resolve_device("auto") == ("cuda:0" if HAS_CUDA else "cpu")


def test_gpu_checkpoint_loads_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck.pt"
    _save_as_if_on_gpu({"w": torch.arange(4.0)}, path, monkeypatch)
    if not HAS_CUDA:
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=False)  # what a plain load does on a CPU machine
    state = load_torch(path, "cpu")
    assert state["w"].device.type == "cpu"
    assert state["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_mlp_resumes_from_a_gpu_checkpoint_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_hep_dataset(400, n_informative=2, n_correlated=0, n_noise=1, seed=3)
    splits = split_random(data, val_fraction=0.3, seed=1)
    full = make_trainable("mlp", device="cpu", metrics=[]).fit(splits.train, splits.val, FAST)

    ck = tmp_path / "ck"

    def stop_after_2(epoch: int, metrics: dict[str, float]) -> bool:
        if epoch == 2:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        make_trainable("mlp", device="auto", metrics=[]).fit(
            splits.train, splits.val, FAST, report=stop_after_2, checkpoint_dir=ck
        )
    state = torch.load(ck / "checkpoint.pt", weights_only=False)
    _save_as_if_on_gpu(state, ck / "checkpoint.pt", monkeypatch)  # as if epoch 2 ran on a GPU
    resumed = make_trainable("mlp", device="auto", metrics=[]).fit(
        splits.train, splits.val, FAST, checkpoint_dir=ck
    )
    assert resumed.metrics["val_loss"] == pytest.approx(full.metrics["val_loss"], rel=1e-6)


def test_saved_model_loads_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_hep_dataset(300, n_informative=2, n_correlated=0, n_noise=1, seed=4)
    splits = split_random(data, val_fraction=0.3, seed=1)
    t = make_trainable("mlp", device="auto", metrics=[])
    t.fit(splits.train, splits.val, FAST)
    t.save(tmp_path / "m")
    weights = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    _save_as_if_on_gpu(weights, tmp_path / "m" / "model.pt", monkeypatch)
    from sigtune.pipelines.ml import load_trainable

    again = load_trainable(tmp_path / "m")
    assert again.predict(splits.val.X) == pytest.approx(t.predict(splits.val.X))


def test_trainable_device_errors() -> None:
    with pytest.raises(ConfigError, match="device must be"):
        make_trainable("mlp", device="gpu")
    if not HAS_CUDA:
        data = make_hep_dataset(200, n_informative=2, n_correlated=0, n_noise=0, seed=5)
        splits = split_random(data, val_fraction=0.3, seed=1)
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            make_trainable("mlp", device="cuda", metrics=[]).fit(splits.train, splits.val, FAST)


# ---------------------------------------------------------------------- local workers
_MARK = "as imported"


def _record_worker(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1, 1)
    trial.set_user_attr("worker_index", os.environ.get("SIGTUNE_WORKER_INDEX"))
    trial.set_user_attr("mark", _MARK)
    trial.set_user_attr("device", resolve_device("auto"))
    return x * x


def test_local_workers_get_their_index(tmp_path: Path) -> None:
    study = sigtune.optimize(_record_worker, n_trials=6, n_jobs=2, run_dir=tmp_path, seed=0)
    attrs = [t.user_attrs for t in study.trials]
    assert len(attrs) == 6
    assert {a["worker_index"] for a in attrs} <= {"0", "1"}
    devices = {a["device"] for a in attrs}
    if HAS_CUDA:
        n = torch.cuda.device_count()
        assert devices <= {f"cuda:{i % n}" for i in range(2)}
    else:
        assert devices == {"cpu"}
    assert "SIGTUNE_WORKER_INDEX" not in os.environ  # set in the workers only


def test_spawn_once_cuda_is_initialised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    global _MARK
    assert _local.worker_start_method() == ("spawn" if _local.cuda_initialized() else "fork")
    monkeypatch.setattr(_local, "cuda_initialized", lambda: True)
    assert _local.worker_start_method() == "spawn"
    _MARK = "changed at run time"
    try:
        study = sigtune.optimize(_record_worker, n_trials=4, n_jobs=2, run_dir=tmp_path, seed=0)
    finally:
        _MARK = "as imported"
    marks = {t.user_attrs["mark"] for t in study.trials}
    # a spawned worker imports this module afresh: it never saw the run-time change (fork would)
    assert marks == {"as imported"}
    assert len(study.trials) == 4
    with pytest.raises(ConfigError, match="must be picklable"):
        sigtune.optimize(lambda t: 0.0, n_trials=2, n_jobs=2, run_dir=tmp_path / "b")
