"""Trainables for user models in PyTorch Lightning and Keras 3.

* ``"lightning"``: ``module`` is ``factory(n_inputs, n_outputs, params) -> LightningModule``
  (or its import path). The module's ``forward(x)`` returns logits (``n_outputs`` = 1 for a
  binary problem, else the number of classes); ``training_step(batch, batch_idx)`` receives
  ``batch = (x, y, w)`` (inputs, class index, training weight) and returns the loss;
  ``configure_optimizers()`` as usual. It is trained by a ``lightning.Trainer`` on CPU; a
  callback computes the metrics after every epoch, calls ``report`` and stops the trainer when
  pruned, early-stopped or overtrained. With ``checkpoint_dir`` the callback writes ``last.ckpt``
  (``trainer.save_checkpoint``) every epoch and a new ``fit`` resumes from it. The epoch actions
  ``checkpoint`` / ``load`` (PBT) are supported: a load ends the current ``Trainer.fit`` at the
  epoch boundary and a new ``fit`` continues from the restored state (weights, optimiser state,
  epoch, metrics, scaler) with the optimiser's ``lr`` set to the new ``learning_rate``.
  With ``datamodule``, ``datamodule(train, val, params) -> LightningDataModule`` replaces the
  built-in loader: ``train``/``val`` are the scaled :class:`EventData` (inputs through the input
  scaler, training weights normalised); its ``train_dataloader()`` must yield ``(x, y, w)``
  batches. ``callbacks`` (``callbacks(params) -> Callback | [Callback]``, one reference or a
  list) adds ``lightning.Callback`` objects to the ``Trainer``.
* ``"keras"``: ``builder`` is ``builder(n_inputs, n_outputs, params) -> keras.Model`` whose
  outputs are probabilities (sigmoid for 1 output, softmax otherwise). Uncompiled models are
  compiled with Adam (``learning_rate``, ``Adam_beta_1``, ``one_minus_Adam_beta_2``,
  ``Adam_epsilon``) and binary / categorical cross-entropy. Keras 3 runs on any installed
  backend (set ``KERAS_BACKEND``); keras is optional and imported only here. On the torch
  backend the epoch actions ``checkpoint`` / ``load`` (PBT) are supported: weights, optimiser
  variables, epoch, metrics and scaler are saved / restored and the optimiser's
  ``learning_rate`` variable is set to the new value. ``callbacks``
  (``callbacks(params) -> keras.callbacks.Callback | [...]``) are passed to every
  ``model.fit`` call (one call per epoch, so ``on_train_begin/end`` run every epoch too).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._data import EventData
from sigtune.pipelines.ml._device import check_device, load_torch, resolve_device
from sigtune.pipelines.ml._history import EpochAction, History, Reporter, import_object
from sigtune.pipelines.ml._mlp import _qualname, make_callbacks, resolve_callbacks
from sigtune.pipelines.ml._registry import register_trainable
from sigtune.pipelines.ml._trainables import _Base, _binary_or_probs, _weighted_train_eval

__all__ = ["KerasTrainable", "LightningTrainable"]

log = logging.getLogger(__name__)


def _resolve_factory(obj: Callable[..., Any] | str | None, what: str) -> tuple[Any, str | None]:
    if obj is None:
        raise ConfigError(
            f"make_trainable({what!r}) needs a model factory (see sigtune docs/ml.md)"
        )
    factory = import_object(obj) if isinstance(obj, str) else obj
    if not callable(factory):
        raise ConfigError(f"{what} factory {obj!r} is not callable")
    return factory, obj if isinstance(obj, str) else _qualname(obj)


# ---------------------------------------------------------------------- Lightning
class LightningTrainable(_Base):
    """A user ``LightningModule`` trained by a Lightning ``Trainer`` (CPU) with per-epoch reports.

    Args:
        module: ``factory(n_inputs, n_outputs, params) -> LightningModule`` or its import path.
        defaults: Default params (``max_epochs`` default 10, ``batch_size`` default 64, plus
            anything the factory reads).
        device: ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` (see :mod:`sigtune.pipelines.ml._device`).
        restore_best_weights: Keep the best epoch's weights at the end (default) or the last.
        datamodule: ``datamodule(train, val, params) -> LightningDataModule`` (or its import
            path) used instead of the built-in training loader.
        callbacks: ``callbacks(params) -> Callback | [Callback]`` (or import paths, or a list).
        **options: Common trainable options (``monitor``, ``metrics``, ``patience``, ...).
    """

    kind = "lightning"

    def __init__(
        self,
        module: Callable[..., Any] | str | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
        device: str = "auto",
        restore_best_weights: bool = True,
        datamodule: Callable[..., Any] | str | None = None,
        callbacks: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.restore_best_weights = bool(restore_best_weights)
        self.device = check_device(device)
        self.factory, self.module_ref = _resolve_factory(module, "lightning")
        self.datamodule = None
        if datamodule is not None:
            self.datamodule, _ = _resolve_factory(datamodule, "lightning datamodule")
        self.callback_factories = resolve_callbacks(callbacks)
        self.defaults = dict(defaults or {})
        self.model_: Any = None
        self.n_outputs_: int | None = None

    def fit(
        self,
        train: EventData,
        val: EventData,
        params: Mapping[str, Any] | None = None,
        *,
        report: Reporter | None = None,
        checkpoint_dir: Path | str | None = None,
        start_from: Path | str | None = None,
    ) -> History:
        """Train with ``lightning.Trainer``; see the module docstring for the module's contract.

        ``report`` may return any :class:`EpochAction`: ``checkpoint`` writes the full training
        state (:meth:`save_checkpoint`); ``load`` ends the current ``Trainer.fit`` at the epoch
        boundary, restores a checkpoint (weights, optimiser state, epoch, metrics, scaler) and
        continues in a new ``fit`` from the checkpoint's epoch, with the optimiser's learning rate
        set to ``learning_rate`` of the new params. ``start_from`` does the same before the first
        epoch.
        """
        try:
            import lightning as L
            import torch
        except ImportError as exc:  # pragma: no cover
            raise ConfigError(
                "make_trainable('lightning') needs lightning: pip install 'sigtune[ml]'"
            ) from exc
        from sigtune.pipelines.ml._mlp import _read_checkpoint, weights_digest

        scaler, tw, vw = self._prepare(train, val)
        p = {**self.defaults, **dict(params or {})}
        max_epochs = int(p.get("max_epochs", 10))
        batch = int(p.get("batch_size", 64))
        if max_epochs < 1 or batch < 1:
            raise ConfigError(f"max_epochs and batch_size must be >= 1, got {max_epochs}, {batch}")
        n_out = 1 if train.n_classes == 2 else train.n_classes
        self.n_outputs_ = n_out
        self.params_ = {k: v for k, v in p.items() if _is_json(v)}
        ckdir = None if checkpoint_dir is None else Path(checkpoint_dir)
        train_eval = _weighted_train_eval(train, self.normalize_weights, self.class_weights)
        data: dict[str, Any] = {}
        es = self._early_stopping()
        owner = self
        seed = 0 if self.seed is None else int(self.seed)
        gen = torch.Generator().manual_seed(seed)
        offset = [0]  # epochs done before the current Trainer.fit (after a load)

        def set_data(sc: Any) -> None:
            data["Xtr_eval"], data["Xv"] = sc.transform(train), sc.transform(val)
            ds = torch.utils.data.TensorDataset(
                torch.as_tensor(sc.transform(tw), dtype=torch.float32),
                torch.as_tensor(np.array(tw.y), dtype=torch.int64),
                torch.as_tensor(np.array(tw.w), dtype=torch.float32),
            )
            data["loader"] = torch.utils.data.DataLoader(
                ds, batch_size=batch, shuffle=True, generator=gen
            )

        class _Report(L.Callback):  # type: ignore[misc]
            def __init__(self) -> None:
                self.metrics: dict[str, list[float]] = {}
                self.best: dict[str, Any] | None = None
                self.pruned = False
                self.reason = "max_epochs"
                self.pending: tuple[Path, dict[str, Any]] | None = None
                self.opt_state: dict[str, Any] | None = None

            def on_train_start(self, trainer: Any, pl_module: Any) -> None:
                live = owner._live
                assert live is not None
                live["opt"] = trainer.optimizers[0] if trainer.optimizers else None
                if self.opt_state is not None and live["opt"] is not None:
                    live["opt"].load_state_dict(self.opt_state)
                    self.opt_state = None
                    owner._apply_lr(live["p"])

            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                live = owner._live
                assert live is not None
                epoch = offset[0] + int(trainer.current_epoch) + 1
                live["epoch"] = epoch
                p_tr = owner._forward(pl_module, data["Xtr_eval"])
                p_val = owner._forward(pl_module, data["Xv"])
                m = owner._epoch_metrics(train, p_tr, val, vw, p_val, train_eval)
                for k, v in m.items():
                    self.metrics.setdefault(k, []).append(v)
                improved, reason = es.update(epoch, m)
                if improved or self.best is None:
                    self.best = copy.deepcopy(pl_module.state_dict())
                action = EpochAction.of(report(epoch, dict(m))) if report is not None else None
                if action is not None and action.kind == "checkpoint":
                    assert action.path is not None
                    owner.save_checkpoint(action.path)
                elif action is not None and action.kind == "load":
                    assert action.path is not None
                    self.pending = (Path(action.path), dict(action.params))
                    trainer.should_stop = True  # a new fit continues from the checkpoint
                    return
                elif action is not None and action.params:
                    owner._set_params(action.params)
                if action is not None and action.stops:
                    self.pruned, reason = True, "pruned"
                if reason is not None:
                    self.reason = reason
                    trainer.should_stop = True
                if ckdir is not None:  # includes this callback's state; atomic replace
                    ckdir.mkdir(parents=True, exist_ok=True)
                    tmp = ckdir / "last.ckpt.tmp"
                    trainer.save_checkpoint(str(tmp))
                    os.replace(tmp, ckdir / "last.ckpt")

            def state_dict(self) -> dict[str, Any]:
                return {
                    "metrics": self.metrics,
                    "best": self.best,
                    "pruned": self.pruned,
                    "reason": self.reason,
                    "early_stopping": es.state_dict(),
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "offset": offset[0],
                    "params": _jsonable_dict(owner._live["p"] if owner._live else p),
                }

            def load_state_dict(self, state_dict: dict[str, Any]) -> None:
                self.metrics = {k: list(v) for k, v in state_dict["metrics"].items()}
                self.best = state_dict["best"]
                self.pruned = bool(state_dict["pruned"])
                self.reason = str(state_dict["reason"])
                es.load_state_dict(state_dict["early_stopping"])
                gen.set_state(state_dict["generator"])  # same shuffles and dropout masks
                torch.set_rng_state(state_dict["torch_rng"])
                offset[0] = int(state_dict.get("offset", 0))

        cb = _Report()
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="lightning")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            torch.manual_seed(seed)
            module = self.factory(train.n_features, n_out, dict(p))
            if not isinstance(module, L.LightningModule):
                raise ConfigError(
                    f"lightning factory {self.module_ref!r} must return a LightningModule, got "
                    f"{type(module).__name__}"
                )
            self._live = {
                "model": module,
                "opt": None,
                "epoch": 0,
                "cb": cb,
                "es": es,
                "gen": gen,
                "p": dict(p),
                "scaler": scaler,
                "n_train": len(train),
            }
            done = None if ckdir is None else ckdir / "finished.json"
            last = None if ckdir is None else ckdir / "last.ckpt"
            if done is not None and done.exists() and last is not None and last.exists():
                state = load_torch(last, "cpu")
                module.load_state_dict(state["state_dict"])
                hist = History.from_dict(json.loads(done.read_text()))
                cb_state = next(
                    (v for k, v in state.get("callbacks", {}).items() if "_Report" in k), None
                )
                if cb_state is not None and cb_state.get("best") is not None:
                    module.load_state_dict(cb_state["best"])
                module.eval()
                self.model_, self.history_ = module, hist
                return hist
            resume = str(last) if last is not None and last.exists() else None
            load: tuple[Path, dict[str, Any]] | None = None
            if resume is not None and last is not None:  # the segment the resumed fit is in
                cb_state = next(
                    (
                        v
                        for k, v in load_torch(last, "cpu").get("callbacks", {}).items()
                        if "_Report" in k
                    ),
                    None,
                )
                if cb_state is not None:
                    offset[0] = int(cb_state.get("offset", 0))
                    self._live["p"] = {**dict(cb_state.get("params") or {}), **p}
            elif start_from is not None:
                load = (Path(start_from), dict(p))
            set_data(scaler)
            user_callbacks = make_callbacks(self.callback_factories, p)

            def fit_data() -> dict[str, Any]:
                if self.datamodule is None:
                    return {"train_dataloaders": data["loader"]}
                scaler_now = self._live["scaler"] if self._live is not None else scaler
                dm = self.datamodule(
                    tw.with_inputs(scaler_now.transform(tw)), val.with_inputs(data["Xv"]), dict(p)
                )
                if not isinstance(dm, L.LightningDataModule):
                    raise ConfigError(
                        f"lightning datamodule {self.datamodule!r} must return a "
                        f"LightningDataModule, got {type(dm).__name__}"
                    )
                return {"datamodule": dm}

            old_threads = torch.get_num_threads()
            torch.set_num_threads(self.n_threads)
            pl_log = logging.getLogger("lightning.pytorch")
            old_level = pl_log.level
            pl_log.setLevel(logging.WARNING)
            dev = resolve_device(self.device)
            try:
                while True:
                    if load is not None:
                        state = _read_checkpoint(load[0])
                        self._restore_lightning(state, load[1], module, cb, es, gen)
                        offset[0] = int(state["epoch"])
                        if self._live["scaler"] is not scaler:
                            scaler = self._live["scaler"]
                            self.scaler_ = scaler
                            set_data(scaler)
                        self.loaded_digest_ = weights_digest(module.state_dict())
                        load = None
                    remaining = max_epochs - offset[0]
                    if remaining < 1:
                        break
                    trainer = L.Trainer(
                        max_epochs=remaining,
                        accelerator="cpu" if dev == "cpu" else "gpu",
                        devices=1 if dev == "cpu" else [int(dev.split(":")[1])],
                        logger=False,
                        enable_progress_bar=False,
                        enable_model_summary=False,
                        enable_checkpointing=False,
                        callbacks=[cb, *user_callbacks],
                        num_sanity_val_steps=0,
                        limit_val_batches=0,
                        default_root_dir=str(ckdir) if ckdir is not None else None,
                    )
                    trainer.fit(module, **fit_data(), ckpt_path=resume)
                    resume = None
                    if cb.pending is None:
                        break
                    load, cb.pending = cb.pending, None
            finally:
                torch.set_num_threads(old_threads)
                pl_log.setLevel(old_level)
        self.params_ = {k: v for k, v in self._live["p"].items() if _is_json(v)}
        if cb.best is not None and self.restore_best_weights:
            module.load_state_dict(cb.best)
        module.eval()
        self.model_ = module
        self.history_ = es.history(cb.metrics, pruned=cb.pruned, stop_reason=cb.reason)
        if done is not None:
            done.write_text(json.dumps(self.history_.to_dict()))
        return self.history_

    _live: dict[str, Any] | None = None
    loaded_digest_: str | None = None

    def _apply_lr(self, params: Mapping[str, Any]) -> None:
        """Set the live optimiser's learning rate to ``params['learning_rate']`` (if given)."""
        live = self._live
        if live is None or live.get("opt") is None or "learning_rate" not in params:
            return
        for g in live["opt"].param_groups:
            g["lr"] = float(params["learning_rate"])

    def _set_params(self, params: Mapping[str, Any]) -> None:
        from sigtune.pipelines.ml._mlp import is_architecture

        live = self._live
        assert live is not None
        changed = sorted(k for k in params if is_architecture(k) and params[k] != live["p"].get(k))
        if changed:
            raise ConfigError(
                f"architecture parameters {changed} cannot change during a training: only "
                "training hyperparameters (learning rate, ...) may"
            )
        live["p"] = {**live["p"], **dict(params)}
        self._apply_lr(params)

    def _restore_lightning(
        self,
        state: Mapping[str, Any],
        params: Mapping[str, Any],
        module: Any,
        cb: Any,
        es: Any,
        gen: Any,
    ) -> None:
        import torch

        from sigtune.pipelines.ml._mlp import is_architecture
        from sigtune.pipelines.ml._scaling import InputScaler

        live = self._live
        assert live is not None
        old = dict(state.get("params") or {})
        changed = sorted(
            k for k in params if is_architecture(k) and k in old and params[k] != old[k]
        )
        if changed:
            raise ConfigError(
                f"cannot load a checkpoint with other architecture parameters {changed}: only "
                "training hyperparameters (learning rate, ...) may change in training"
            )
        module.load_state_dict(state["model"])
        cb.opt_state = state["optimizer"]  # loaded into the next fit's optimiser at its start
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        es.load_state_dict(state["early_stopping"])
        cb.metrics = {k: list(v) for k, v in state["metrics"].items()}
        cb.best = state["best_model"]
        cb.pruned, cb.reason = False, "max_epochs"
        live["epoch"] = int(state["epoch"])
        if state.get("scaler") is not None:
            loaded = InputScaler.from_dict(state["scaler"])
            if loaded.to_dict() != live["scaler"].to_dict():
                live["scaler"] = loaded
        live["p"] = {**live["p"], **old, **dict(params)}

    def save_checkpoint(self, path: Path | str) -> Path:
        """Save the full training state into directory ``path`` (``checkpoint.pt``, the format
        of :meth:`TorchTrainable.save_checkpoint`): weights, optimiser state, epoch, metrics,
        early-stopping counters, best weights, RNG states, hyperparameters and input scaler.
        Works during :meth:`fit` (from a ``report`` callback) and after it."""
        import torch

        from sigtune.pipelines.ml._mlp import _CHECKPOINT, _save_checkpoint

        live = self._live
        if live is None:
            raise ConfigError("no training state to checkpoint: call fit() first")
        cb = live["cb"]
        opt = live["opt"]
        out = Path(path) / _CHECKPOINT
        _save_checkpoint(
            out,
            {
                "epoch": int(live["epoch"]),
                "model": copy.deepcopy(live["model"].state_dict()),
                "optimizer": opt.state_dict() if opt is not None else {},
                "generator": live["gen"].get_state(),
                "torch_rng": torch.get_rng_state(),
                "early_stopping": live["es"].state_dict(),
                "metrics": {k: list(v) for k, v in cb.metrics.items()},
                "best_model": cb.best,
                "params": _jsonable_dict(live["p"]),
                "n_train": int(live["n_train"]),
                "scaler": live["scaler"].to_dict(),
            },
        )
        return out

    def _forward(self, module: Any, X: np.ndarray) -> np.ndarray:
        import torch

        was = module.training
        module.eval()
        dev = next((q.device for q in module.parameters()), None)
        with torch.no_grad():
            logits = module(torch.as_tensor(X, dtype=torch.float32, device=dev))
            if self.n_outputs_ == 1:
                out = torch.sigmoid(logits.reshape(-1)).cpu().numpy().astype(np.float64)
            else:
                out = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)
        if was:
            module.train()
        assert self.n_classes_ is not None
        return _binary_or_probs(out, self.n_classes_)

    def predict(self, X: np.ndarray | EventData) -> np.ndarray:
        """Class-1 probability (binary) or class probabilities, from raw inputs."""
        scaler = self._check_trained()
        return self._forward(self.model_, scaler.transform(X))

    def save(self, path: Path | str) -> None:
        """``trainable.json`` + ``model.pt`` (the module's state dict)."""
        import torch

        self._check_trained()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.model_.state_dict(), out / "model.pt")
        meta = {**self._meta(), "module": self.module_ref, "n_outputs": self.n_outputs_}
        (out / "trainable.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any], module: Any = None) -> LightningTrainable:
        """Rebuild from :meth:`save` output; ``module`` overrides the stored factory path."""

        ref = module if module is not None else meta.get("module")
        if ref is None:
            raise ConfigError(
                f"{path}: the module factory was not importable; pass module=<factory>"
            )
        obj = cls(ref, n_threads=int(meta.get("n_threads", 1)))
        obj._restore_meta(meta)
        obj.n_outputs_ = int(meta["n_outputs"])
        assert obj.features_ is not None
        model = obj.factory(len(obj.features_), obj.n_outputs_, dict(obj.params_))
        model.load_state_dict(load_torch(Path(path) / "model.pt", "cpu", weights_only=True))
        model.eval()
        obj.model_ = model
        return obj


# ---------------------------------------------------------------------- Keras
def _import_keras() -> Any:
    try:
        import keras  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise ConfigError(
            "make_trainable('keras') needs Keras 3 and a backend: pip install keras plus one of "
            "torch, tensorflow or jax (select it with KERAS_BACKEND); or use kind 'mlp' / 'torch'"
        ) from exc
    version = str(getattr(keras, "__version__", "0"))
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 3:
        raise ConfigError(f"make_trainable('keras') needs Keras >= 3, found {version}")
    return keras


class KerasTrainable(_Base):
    """A Keras 3 model from ``builder(n_inputs, n_outputs, params)``, trained epoch by epoch.

    Args:
        builder: The model builder or its import path.
        defaults: Default params (``max_epochs`` 10, ``batch_size`` 64, optimiser settings).
        restore_best_weights: Keep the best epoch's weights at the end (default) or the last.
        callbacks: ``callbacks(params) -> keras Callback | [...]`` (or import paths, or a list).
        **options: Common trainable options.
    """

    kind = "keras"

    def __init__(
        self,
        builder: Callable[..., Any] | str | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
        restore_best_weights: bool = True,
        callbacks: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.restore_best_weights = bool(restore_best_weights)
        self.builder, self.builder_ref = _resolve_factory(builder, "keras")
        self.callback_factories = resolve_callbacks(callbacks)
        self.defaults = dict(defaults or {})
        self.model_: Any = None
        self.n_outputs_: int | None = None

    def fit(
        self,
        train: EventData,
        val: EventData,
        params: Mapping[str, Any] | None = None,
        *,
        report: Reporter | None = None,
        checkpoint_dir: Path | str | None = None,
        start_from: Path | str | None = None,
    ) -> History:
        """Train one epoch per ``model.fit`` call; metrics, early stopping and reports per epoch.

        ``report`` may return any :class:`EpochAction`: ``checkpoint`` writes the full training
        state (:meth:`save_checkpoint`); ``load`` restores a checkpoint (weights, optimiser
        variables, epoch, metrics, scaler), sets the optimiser's ``learning_rate`` variable to
        the new params' ``learning_rate`` and continues after the checkpoint's epoch.
        ``start_from`` does the same before the first epoch. Checkpoints need the torch backend.
        """

        keras = _import_keras()
        scaler, tw, vw = self._prepare(train, val)
        p = {**self.defaults, **dict(params or {})}
        max_epochs = int(p.get("max_epochs", 10))
        n_out = 1 if train.n_classes == 2 else train.n_classes
        self.n_outputs_ = n_out
        self.params_ = {k: v for k, v in p.items() if _is_json(v)}
        keras.utils.set_random_seed(0 if self.seed is None else int(self.seed))
        model = self.builder(train.n_features, n_out, dict(p))
        if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
            model.compile(
                optimizer=keras.optimizers.Adam(
                    learning_rate=float(p.get("learning_rate", 1e-3)),
                    beta_1=float(p.get("Adam_beta_1", 0.9)),
                    beta_2=1.0 - float(p.get("one_minus_Adam_beta_2", 1e-3)),
                    epsilon=float(p.get("Adam_epsilon", 1e-7)),
                ),
                loss="binary_crossentropy" if n_out == 1 else "categorical_crossentropy",
            )
        yt = tw.y.astype(np.float32) if n_out == 1 else tw.one_hot().astype(np.float32)
        data: dict[str, Any] = {}

        def set_data(sc: Any) -> None:
            data["Xt"] = sc.transform(tw)
            data["Xtr_eval"], data["Xv"] = sc.transform(train), sc.transform(val)

        set_data(scaler)
        train_eval = _weighted_train_eval(train, self.normalize_weights, self.class_weights)
        es = self._early_stopping()
        live: dict[str, Any] = {
            "model": model,
            "epoch": 0,
            "metrics": {},
            "es": es,
            "best": None,
            "p": dict(p),
            "scaler": scaler,
            "n_train": len(train),
        }
        self._live = live
        pruned, stop_reason = False, "max_epochs"
        ckdir = None if checkpoint_dir is None else Path(checkpoint_dir)
        if ckdir is not None and (ckdir / "keras_state.json").exists():
            state = json.loads((ckdir / "keras_state.json").read_text())
            model.load_weights(str(ckdir / "last.weights.h5"))
            live["metrics"] = {k: list(v) for k, v in state["metrics"].items()}
            es.load_state_dict(state["early_stopping"])
            live["epoch"] = int(state["epoch"])
            if (ckdir / "best.weights.h5").exists():
                model.load_weights(str(ckdir / "best.weights.h5"))
                live["best"] = model.get_weights()
                model.load_weights(str(ckdir / "last.weights.h5"))
            if state.get("finished"):
                live["epoch"] = max_epochs
                pruned, stop_reason = bool(state["pruned"]), state["stop_reason"]
        elif start_from is not None:
            self._keras_restore(_read_keras_checkpoint(start_from), p)
            if live["scaler"] is not scaler:
                set_data(live["scaler"])
        user_callbacks = make_callbacks(self.callback_factories, p)
        while live["epoch"] < max_epochs:
            epoch = live["epoch"] + 1
            model.fit(
                data["Xt"],
                yt,
                sample_weight=tw.w,
                batch_size=int(live["p"].get("batch_size", 64)),
                epochs=epoch,
                initial_epoch=epoch - 1,
                verbose=0,
                shuffle=True,
                callbacks=user_callbacks,
            )
            live["epoch"] = epoch
            p_tr = self._probs(model, data["Xtr_eval"])
            p_val = self._probs(model, data["Xv"])
            m = self._epoch_metrics(train, p_tr, val, vw, p_val, train_eval)
            for k, v in m.items():
                live["metrics"].setdefault(k, []).append(v)
            improved, reason = es.update(epoch, m)
            if improved or live["best"] is None:
                live["best"] = model.get_weights()
            action = EpochAction.of(report(epoch, dict(m))) if report is not None else None
            if action is not None and action.kind == "checkpoint":
                assert action.path is not None
                self.save_checkpoint(action.path)
            elif action is not None and action.kind == "load":
                assert action.path is not None
                old_scaler = live["scaler"]
                self._keras_restore(_read_keras_checkpoint(action.path), action.params)
                if live["scaler"] is not old_scaler:
                    set_data(live["scaler"])
                continue
            elif action is not None and action.params:
                self._keras_set_params(action.params)
            if action is not None and action.stops:
                pruned, reason = True, "pruned"
            if reason is not None:
                stop_reason = reason
            if ckdir is not None:
                ckdir.mkdir(parents=True, exist_ok=True)
                model.save_weights(str(ckdir / "last.weights.h5"))
                if improved:
                    model.save_weights(str(ckdir / "best.weights.h5"))
                (ckdir / "keras_state.json").write_text(
                    json.dumps(
                        {
                            "epoch": epoch,
                            "metrics": live["metrics"],
                            "early_stopping": es.state_dict(),
                            "finished": reason is not None or epoch == max_epochs,
                            "pruned": pruned,
                            "stop_reason": stop_reason,
                        }
                    )
                )
            if reason is not None:
                break
        self.params_ = {k: v for k, v in live["p"].items() if _is_json(v)}
        if live["best"] is not None and self.restore_best_weights:
            model.set_weights(live["best"])
        self.model_ = model
        self.history_ = es.history(live["metrics"], pruned=pruned, stop_reason=stop_reason)
        return self.history_

    _live: dict[str, Any] | None = None
    loaded_digest_: str | None = None

    def _keras_set_params(self, params: Mapping[str, Any]) -> None:
        from sigtune.pipelines.ml._mlp import is_architecture

        live = self._live
        assert live is not None
        changed = sorted(k for k in params if is_architecture(k) and params[k] != live["p"].get(k))
        if changed:
            raise ConfigError(
                f"architecture parameters {changed} cannot change during a training: only "
                "training hyperparameters (learning rate, batch size, ...) may"
            )
        live["p"] = {**live["p"], **dict(params)}
        if "learning_rate" in params:
            live["model"].optimizer.learning_rate = float(params["learning_rate"])

    def _keras_restore(self, state: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        from sigtune.pipelines.ml._mlp import weights_digest
        from sigtune.pipelines.ml._scaling import InputScaler

        live = self._live
        assert live is not None
        model = live["model"]
        old = dict(state.get("params") or {})
        live["p"] = {**live["p"], **old}
        model.set_weights(state["weights"])
        opt = model.optimizer
        if not getattr(opt, "built", True):
            opt.build(model.trainable_variables)
        shapes = [tuple(v.shape) for v in opt.variables]
        saved = [tuple(np.shape(a)) for a in state["optimizer"]]
        if shapes != saved:  # variable names carry per-process suffixes: compare shapes
            raise ConfigError(
                f"the checkpoint's optimiser variables {state['optimizer_paths']} {saved} do not "
                f"match the model's {shapes}: the same builder and optimiser are needed"
            )
        for var, value in zip(opt.variables, state["optimizer"], strict=True):
            var.assign(value)
        live["es"].load_state_dict(state["early_stopping"])
        live["metrics"] = {k: list(v) for k, v in state["metrics"].items()}
        live["best"] = state["best_weights"]
        live["epoch"] = int(state["epoch"])
        if state.get("scaler") is not None:
            loaded = InputScaler.from_dict(state["scaler"])
            if loaded.to_dict() != live["scaler"].to_dict():
                live["scaler"] = self.scaler_ = loaded
        self._keras_set_params(dict(params))
        self.loaded_digest_ = weights_digest(model.state_dict())

    def save_checkpoint(self, path: Path | str) -> Path:
        """Save the full training state into directory ``path`` (``checkpoint.pt``): weights,
        optimiser variables (Adam moments, iteration, learning rate), epoch, metrics,
        early-stopping counters, best weights, hyperparameters and input scaler. Works during
        :meth:`fit` (from a ``report`` callback) and after it; needs the torch backend."""
        from sigtune.pipelines.ml._mlp import _CHECKPOINT, _save_checkpoint

        live = self._live
        if live is None:
            raise ConfigError("no training state to checkpoint: call fit() first")
        model = live["model"]
        if not hasattr(model, "state_dict"):
            raise ConfigError(
                "Keras checkpoints during training need the torch backend (KERAS_BACKEND=torch)"
            )
        opt = model.optimizer
        out = Path(path) / _CHECKPOINT
        _save_checkpoint(
            out,
            {
                "epoch": int(live["epoch"]),
                "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "weights": [np.array(w) for w in model.get_weights()],
                "optimizer": [np.array(v.numpy()) for v in opt.variables],
                "optimizer_paths": [v.path for v in opt.variables],
                "early_stopping": live["es"].state_dict(),
                "metrics": {k: list(v) for k, v in live["metrics"].items()},
                "best_weights": live["best"],
                "params": _jsonable_dict(live["p"]),
                "n_train": int(live["n_train"]),
                "scaler": live["scaler"].to_dict(),
            },
        )
        return out

    def _probs(self, model: Any, X: np.ndarray) -> np.ndarray:
        out = np.asarray(model.predict(X.astype(np.float32), verbose=0), dtype=np.float64)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        assert self.n_classes_ is not None
        return _binary_or_probs(out, self.n_classes_)

    def predict(self, X: np.ndarray | EventData) -> np.ndarray:
        """Class-1 probability (binary) or class probabilities, from raw inputs."""
        scaler = self._check_trained()
        return self._probs(self.model_, scaler.transform(X))

    def save(self, path: Path | str) -> None:
        """``trainable.json`` + ``model.keras``."""
        self._check_trained()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.model_.save(str(out / "model.keras"))
        meta = {**self._meta(), "builder": self.builder_ref, "n_outputs": self.n_outputs_}
        (out / "trainable.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any], builder: Any = None) -> KerasTrainable:
        """Rebuild from :meth:`save` output (``keras.models.load_model``)."""
        keras = _import_keras()
        ref = builder if builder is not None else meta.get("builder")
        obj = cls(
            ref if ref is not None else (lambda *a: None), n_threads=int(meta.get("n_threads", 1))
        )
        obj._restore_meta(meta)
        obj.n_outputs_ = int(meta["n_outputs"])
        obj.model_ = keras.models.load_model(str(Path(path) / "model.keras"))
        return obj


def _read_keras_checkpoint(path: Path | str) -> dict[str, Any]:
    from sigtune.pipelines.ml._mlp import _CHECKPOINT

    file = Path(path)
    if file.is_dir():
        file = file / _CHECKPOINT
    if not file.is_file():
        raise ConfigError(f"no checkpoint at {file} (written by KerasTrainable.save_checkpoint)")
    state = load_torch(file, "cpu")
    if not isinstance(state, dict) or "weights" not in state or "optimizer_paths" not in state:
        raise ConfigError(f"{file} is not a KerasTrainable checkpoint")
    return state


def _jsonable_dict(p: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in p.items() if _is_json(v)}


def _is_json(v: Any) -> bool:
    try:
        json.dumps(v)
    except TypeError:
        return False
    return True


register_trainable("lightning", LightningTrainable, builtin=True)
register_trainable("keras", KerasTrainable, builtin=True)
