"""User hooks of the framework trainables: a Lightning DataModule instead of the built-in
loader, and per-framework callbacks (Lightning Trainer, torch MLP loop; the Keras callbacks
run with real Keras in test_keras_backend.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml import make_hep_dataset, make_trainable, split_random
from sigtune.pipelines.ml._data import EventData

DATA = make_hep_dataset(400, n_informative=3, n_correlated=0, n_noise=1, seed=5)
SPLITS = split_random(DATA, val_fraction=0.3, seed=1)

SEEN: list[tuple[int, int, float]] = []


def epoch_logger(params: Mapping[str, Any]) -> Any:
    """A torch-loop callback factory, referenced as ``"<this module>:epoch_logger"``."""
    tag = int(params["units"])  # the training's params

    def cb(epoch: int, model: Any, metrics: Mapping[str, float]) -> None:
        import torch

        assert isinstance(model, torch.nn.Module)
        SEEN.append((tag, epoch, metrics["val_loss"]))

    return cb


def test_torch_mlp_loop_calls_user_callbacks_every_epoch() -> None:
    pytest.importorskip("torch")
    SEEN.clear()
    direct: list[int] = []
    t = make_trainable(
        "mlp",
        callbacks=[f"{__name__}:epoch_logger", lambda p: [lambda e, m, x: direct.append(e)]],
    )
    h = t.fit(SPLITS.train, SPLITS.val, {"max_epochs": 3, "num_layers": 1, "units": 5})
    assert [(tag, e) for tag, e, _ in SEEN] == [(5, 1), (5, 2), (5, 3)]
    assert [v for *_, v in SEEN] == pytest.approx(h.metrics["val_loss"])
    assert direct == [1, 2, 3]
    with pytest.raises(ConfigError, match=r"callbacks: 3 is not callable"):
        make_trainable("mlp", callbacks=3)


def _lightning_module(n_in: int, n_out: int, params: Mapping[str, Any]) -> Any:
    import lightning as L
    import torch
    import torch.nn.functional as F

    class Net(L.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(n_in, n_out)

        def forward(self, x: Any) -> Any:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y, w = batch
            loss = F.binary_cross_entropy_with_logits(
                self(x).reshape(-1), y.float(), reduction="none"
            )
            return (loss * w).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=0.05)

    return Net()


def test_lightning_datamodule_and_callbacks() -> None:
    pytest.importorskip("lightning")
    import lightning as L
    import torch

    got: dict[str, Any] = {"batches": 0}
    epochs: list[int] = []

    class DM(L.LightningDataModule):  # type: ignore[misc]
        def __init__(self, train: EventData, batch_size: int) -> None:
            super().__init__()
            self.train, self.batch_size = train, batch_size

        def train_dataloader(self) -> Any:
            ds = torch.utils.data.TensorDataset(
                torch.tensor(np.array(self.train.X), dtype=torch.float32),
                torch.tensor(np.array(self.train.y), dtype=torch.int64),
                torch.tensor(np.array(self.train.w), dtype=torch.float32),
            )
            return torch.utils.data.DataLoader(ds, batch_size=self.batch_size)

    def datamodule(train: EventData, val: EventData, params: Mapping[str, Any]) -> Any:
        got.update(n_train=len(train), n_val=len(val), X=train.X, batch=params["batch_size"])
        return DM(train, int(params["batch_size"]))

    class Count(L.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, *args: Any) -> None:
            got["batches"] += 1

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            epochs.append(int(trainer.current_epoch) + 1)

    t = make_trainable(
        "lightning",
        module=_lightning_module,
        datamodule=datamodule,
        callbacks=lambda p: Count(),
    )
    h = t.fit(SPLITS.train, SPLITS.val, {"max_epochs": 2, "batch_size": 100})
    assert h.n_epochs == 2 and epochs == [1, 2]
    assert got["n_train"] == len(SPLITS.train) and got["n_val"] == len(SPLITS.val)
    assert got["batch"] == 100
    assert t.scaler_ is not None  # the hook sees the inputs after the input scaler
    np.testing.assert_allclose(got["X"], t.scaler_.transform(SPLITS.train), rtol=1e-12)
    assert got["batches"] == 2 * int(np.ceil(len(SPLITS.train) / 100))  # the user's loader
    assert np.all(np.isfinite(t.predict(SPLITS.val.X)))
    with pytest.raises(ConfigError, match=r"must return a LightningDataModule"):
        make_trainable(
            "lightning", module=_lightning_module, datamodule=lambda tr, va, p: "nope"
        ).fit(SPLITS.train, SPLITS.val, {"max_epochs": 1})
