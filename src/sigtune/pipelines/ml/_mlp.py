"""The built-in MLP classifier and the PyTorch training loop (also used for user ``nn.Module``\\ s).

PyTorch is imported inside functions only, so this module imports without it.

Hyperparameters (OPTIMA names; defaults in :data:`MLP_DEFAULTS` and :data:`LOOP_DEFAULTS`):

* architecture: ``num_layers``, ``units``, ``units_i`` (``{layer: units}`` or a list, layers
  counted from 1; flat keys ``units_1``, ``units_2`` ... work too), ``activation``,
  ``kernel_initializer``, ``bias_initializer``, ``dropout``, ``batch_norm`` (not with SELU),
  ``input_normalization`` (``standard``, or ``quantile``: a non-linear normalisation of every
  input to a normal distribution, see :class:`InputScaler`);
* regularisation: ``l1_lambda``, ``l2_lambda`` (on the kernels, added to the loss);
* optimiser (Adam): ``learning_rate``, ``Adam_beta_1``, ``one_minus_Adam_beta_2``,
  ``Adam_epsilon``;
* loss: ``loss_function`` (``BinaryCrossentropy`` -> 1 sigmoid output, ``CategoricalCrossentropy``
  or ``KLDivergence`` -> softmax outputs), ``loss_weight_class_N`` (factor on the loss weight of
  class N);
* loop: ``batch_size``, ``max_epochs``, ``patience`` (early stopping on the monitored metric,
  ``None`` disables), ``overtraining_patience``, ``max_event_weight``;
* ``schedule``: hyperparameters that change during training, ``{epoch: {name: value}}`` (the
  values take effect from that epoch on, e.g. ``{"11": {"learning_rate": 1e-4}}``); Population
  Based Training writes its winner's schedule in this form.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._data import EventData
from sigtune.pipelines.ml._device import check_device, load_torch, resolve_device
from sigtune.pipelines.ml._history import (
    EarlyStopping,
    EpochAction,
    History,
    Reporter,
    as_conditions,
    import_object,
)
from sigtune.pipelines.ml._metrics import MetricLike, Monitor, compute_metric, get_metric
from sigtune.pipelines.ml._scaling import InputScaler
from sigtune.pipelines.ml._weights import normalize_class_weights, training_weights

__all__ = ["LOOP_DEFAULTS", "MLP_DEFAULTS", "TorchTrainable", "build_mlp"]

log = logging.getLogger(__name__)

MLP_DEFAULTS: dict[str, Any] = {
    "num_layers": 3,
    "units": 32,
    "units_i": None,
    "activation": "relu",
    "kernel_initializer": "auto",
    "bias_initializer": "zeros",
    "l1_lambda": 0.0,
    "l2_lambda": 0.0,
    "dropout": 0.0,
    "batch_norm": False,
    "input_normalization": "standard",
}

LOOP_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "Adam_beta_1": 0.9,
    "one_minus_Adam_beta_2": 1e-3,
    "Adam_epsilon": 1e-7,
    "loss_function": "auto",
    "batch_size": 64,
    "max_epochs": 50,
    "patience": 10,
    "overtraining_patience": 5,
    "max_event_weight": None,
    "schedule": None,
}

ACTIVATIONS = (
    "relu",
    "tanh",
    "sigmoid",
    "selu",
    "elu",
    "gelu",
    "silu",
    "swish",
    "leaky_relu",
    "softplus",
    "softsign",
    "mish",
    "linear",
)
INITIALIZERS = (
    "auto",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "orthogonal",
    "zeros",
    "ones",
    "random_normal",
    "random_uniform",
)
LOSSES = ("auto", "BinaryCrossentropy", "CategoricalCrossentropy", "KLDivergence")
_DYNAMIC = re.compile(r"^(units_(\d+)|loss_weight_class_(\d+))$")
_CHECKPOINT = "checkpoint.pt"
#: Hyperparameters that define the network's shape: never changed during a training.
ARCHITECTURE = frozenset(
    {"num_layers", "units", "units_i", "activation", "batch_norm", "loss_function"}
)


# ---------------------------------------------------------------------- parameters
def _resolve_params(
    params: Mapping[str, Any], defaults: Mapping[str, Any], *, allowed: set[str] | None
) -> dict[str, Any]:
    """Merge defaults and trial params; with ``allowed`` set, unknown keys are errors."""
    merged = {**MLP_DEFAULTS, **LOOP_DEFAULTS, **defaults, **params}
    if allowed is not None:
        unknown = sorted(
            k for k in {**defaults, **params} if k not in allowed and not _DYNAMIC.match(k)
        )
        if unknown:
            raise ConfigError(
                f"unknown MLP hyperparameter(s) {unknown}; known: {sorted(allowed)} plus "
                "units_<i> and loss_weight_class_<N>"
            )
    return merged


def _units(p: Mapping[str, Any]) -> list[int]:
    n = int(p["num_layers"])
    if n < 0:
        raise ConfigError(f"num_layers must be >= 0, got {n}")
    units = [int(p["units"])] * n
    ui = p.get("units_i")
    if isinstance(ui, Mapping):
        for k, v in ui.items():
            i = int(k)
            if not 1 <= i <= n:
                raise ConfigError(f"units_i has layer {i}, but layers are 1..{n}")
            units[i - 1] = int(v)
    elif isinstance(ui, Sequence) and not isinstance(ui, str):
        if len(ui) != n:
            raise ConfigError(f"units_i list has {len(ui)} entries for num_layers={n}")
        units = [int(v) for v in ui]
    elif ui is not None:
        raise ConfigError(f"units_i must be a mapping {{layer: units}} or a list, got {ui!r}")
    for k, v in p.items():
        m = re.match(r"^units_(\d+)$", k)
        if m and v is not None:
            i = int(m.group(1))
            if 1 <= i <= n:
                units[i - 1] = int(v)
    if any(u < 1 for u in units):
        raise ConfigError(f"every layer needs >= 1 unit, got {units}")
    return units


def _loss_name(p: Mapping[str, Any], n_classes: int) -> str:
    name = p.get("loss_function") or "auto"
    if name not in LOSSES:
        raise ConfigError(f"loss_function must be one of {list(LOSSES[1:])}, got {name!r}")
    if name == "auto":
        return "BinaryCrossentropy" if n_classes == 2 else "CategoricalCrossentropy"
    if name == "BinaryCrossentropy" and n_classes != 2:
        raise ConfigError(
            f"loss_function BinaryCrossentropy needs 2 classes, data has {n_classes}: use "
            "CategoricalCrossentropy"
        )
    return str(name)


def _class_loss_weights(p: Mapping[str, Any], n_classes: int) -> np.ndarray:
    out = np.ones(n_classes)
    for k, v in p.items():
        m = re.match(r"^loss_weight_class_(\d+)$", k)
        if m and v is not None:
            c = int(m.group(1))
            if c >= n_classes:
                raise ConfigError(f"{k}: class {c} does not exist ({n_classes} classes)")
            if float(v) < 0:
                raise ConfigError(f"{k} must be >= 0, got {v}")
            out[c] = float(v)
    return out


def _check_loop(p: Mapping[str, Any]) -> None:
    checks = [
        ("learning_rate", p["learning_rate"] > 0),
        ("Adam_beta_1", 0 <= p["Adam_beta_1"] < 1),
        ("one_minus_Adam_beta_2", 0 < p["one_minus_Adam_beta_2"] <= 1),
        ("Adam_epsilon", p["Adam_epsilon"] > 0),
        ("batch_size", int(p["batch_size"]) >= 1),
        ("max_epochs", int(p["max_epochs"]) >= 1),
        ("l1_lambda", p.get("l1_lambda", 0.0) >= 0),
        ("l2_lambda", p.get("l2_lambda", 0.0) >= 0),
    ]
    for name, ok in checks:
        if not ok:
            raise ConfigError(f"hyperparameter {name}={p[name]!r} is out of range")


# ---------------------------------------------------------------------- network
def _activation(name: str) -> Any:
    import torch.nn as nn

    table: dict[str, Callable[[], Any]] = {
        "relu": nn.ReLU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "selu": nn.SELU,
        "elu": nn.ELU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "swish": nn.SiLU,
        "leaky_relu": nn.LeakyReLU,
        "softplus": nn.Softplus,
        "softsign": nn.Softsign,
        "mish": nn.Mish,
        "linear": nn.Identity,
    }
    if name not in table:
        raise ConfigError(f"activation must be one of {list(ACTIVATIONS)}, got {name!r}")
    return table[name]()


def _init(tensor: Any, name: str, activation: str) -> None:
    import torch.nn as nn

    if name == "auto":
        name = {"selu": "lecun_normal", "relu": "he_uniform", "leaky_relu": "he_uniform"}.get(
            activation, "glorot_uniform"
        )
    if name not in INITIALIZERS:
        raise ConfigError(f"initializer must be one of {list(INITIALIZERS)}, got {name!r}")
    if tensor.dim() < 2 and name in (
        "glorot_uniform",
        "glorot_normal",
        "he_uniform",
        "he_normal",
        "lecun_uniform",
        "lecun_normal",
        "orthogonal",
    ):
        raise ConfigError(f"bias_initializer {name!r} needs a matrix; use zeros, ones, random_*")
    if name == "glorot_uniform":
        nn.init.xavier_uniform_(tensor)
    elif name == "glorot_normal":
        nn.init.xavier_normal_(tensor)
    elif name == "he_uniform":
        nn.init.kaiming_uniform_(tensor, nonlinearity="relu")
    elif name == "he_normal":
        nn.init.kaiming_normal_(tensor, nonlinearity="relu")
    elif name == "lecun_uniform":
        fan_in = tensor.shape[1]
        lim = math.sqrt(3.0 / fan_in)
        nn.init.uniform_(tensor, -lim, lim)
    elif name == "lecun_normal":
        nn.init.kaiming_normal_(tensor, nonlinearity="linear")  # std = 1/sqrt(fan_in)
    elif name == "orthogonal":
        nn.init.orthogonal_(tensor)
    elif name == "zeros":
        nn.init.zeros_(tensor)
    elif name == "ones":
        nn.init.ones_(tensor)
    elif name == "random_normal":
        nn.init.normal_(tensor, 0.0, 0.05)
    else:
        nn.init.uniform_(tensor, -0.05, 0.05)


def build_mlp(n_inputs: int, n_outputs: int, params: Mapping[str, Any]) -> Any:
    """Build the MLP as a ``torch.nn.Sequential`` returning logits (``n_outputs`` columns).

    Each hidden layer is ``Linear -> [BatchNorm1d] -> activation -> [Dropout]`` (``AlphaDropout``
    with SELU, which keeps the self-normalising property).

    Raises:
        ConfigError: For unknown activations / initialisers, batch norm with SELU, bad dropout.
    """
    import torch.nn as nn

    p = {**MLP_DEFAULTS, **params}
    units = _units(p)
    act = str(p["activation"])
    if act not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {list(ACTIVATIONS)}, got {act!r}")
    dropout = float(p["dropout"] or 0.0)
    if not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    if bool(p["batch_norm"]) and act == "selu":
        raise ConfigError(
            "batch_norm cannot be combined with activation 'selu' (SELU networks are "
            "self-normalising); set batch_norm: false or choose another activation"
        )
    layers: list[Any] = []
    width = int(n_inputs)
    for u in units:
        lin = nn.Linear(width, u)
        _init(lin.weight, str(p["kernel_initializer"]), act)
        _init(lin.bias, str(p["bias_initializer"]), act)
        layers.append(lin)
        if p["batch_norm"]:
            layers.append(nn.BatchNorm1d(u))
        layers.append(_activation(act))
        if dropout > 0:
            layers.append(nn.AlphaDropout(dropout) if act == "selu" else nn.Dropout(dropout))
        width = u
    out = nn.Linear(width, int(n_outputs))
    _init(out.weight, "glorot_uniform", "linear")
    nn.init.zeros_(out.bias)
    layers.append(out)
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------- trainable
class TorchTrainable:
    """Trainable for the built-in MLP (``kind="mlp"``) or a user ``nn.Module`` (``kind="torch"``).

    Use :func:`~sigtune.pipelines.ml.make_trainable`. The model is trained with Adam on a
    weighted loss; inputs are scaled with an :class:`InputScaler` fitted on the training split.

    Args:
        kind: ``"mlp"`` or ``"torch"``.
        module: For ``"torch"``: ``factory(n_inputs, n_outputs, params) -> nn.Module`` (returns
            logits) or its import path ``"package.module:function"``.
        monitor: Monitored metric for early stopping / best epoch (``"val_loss"`` default).
        metrics: Extra metrics recorded per epoch on train and validation (``name``/``val_name``).
        overtraining_conditions: Callables ``fn(epoch_metrics) -> bool`` (True = overtrained),
            ``"module:function"`` strings, or ``{"metric", "max_gap"}`` train/val gap mappings.
        scaling: Per-variable transforms for the :class:`InputScaler` (or a scaler).
        normalize_weights: Equalise class totals of the training and validation weights.
        class_weights: Relative class factors used with the normalisation.
        n_threads: ``torch.set_num_threads`` during fit/predict (default 1).
        seed: Seed for initialisation, shuffling and dropout.
        restore_best_weights: Keep the weights of the best epoch at the end.
        device: ``auto`` (the GPU assigned to this worker if any, else the CPU), ``cpu``,
            ``cuda`` or ``cuda:N`` (see :mod:`sigtune.pipelines.ml._device`).
        **defaults: Default hyperparameters (overridden by ``params`` in :meth:`fit`).
    """

    def __init__(
        self,
        kind: str = "mlp",
        *,
        module: Callable[..., Any] | str | None = None,
        monitor: Any = "val_loss",
        metrics: Sequence[MetricLike] = ("auc",),
        overtraining_conditions: Sequence[Any] = (),
        scaling: Mapping[str, Mapping[str, Any]] | InputScaler | None = None,
        normalize_weights: bool = True,
        class_weights: Sequence[float] | Mapping[int, float] | None = None,
        n_threads: int = 1,
        seed: int | None = 0,
        restore_best_weights: bool = True,
        device: str = "auto",
        callbacks: Any = None,
        **defaults: Any,
    ) -> None:
        self.device = check_device(device)
        self.callback_factories = resolve_callbacks(callbacks)
        self.device_ = "cpu"  # the device of the trained model
        if kind not in ("mlp", "torch"):
            raise ConfigError(f"TorchTrainable kind must be 'mlp' or 'torch', got {kind!r}")
        if kind == "torch" and module is None:
            raise ConfigError("make_trainable('torch') needs module=<factory or 'pkg.mod:factory'>")
        if kind == "mlp" and module is not None:
            raise ConfigError(
                "make_trainable('mlp') builds its own network; use kind 'torch' for module="
            )
        self.kind = kind
        self.module_ref = module if isinstance(module, str) else _qualname(module)
        self.module_factory = import_object(module) if isinstance(module, str) else module
        if self.module_factory is not None and not callable(self.module_factory):
            raise ConfigError(f"module factory {module!r} is not callable")
        self.monitor = Monitor.parse(monitor)
        self.metrics = [get_metric(m) for m in metrics]
        self.metric_names = [m.name for m in self.metrics]
        self.conditions = as_conditions(overtraining_conditions)
        self.scaling = scaling
        self.normalize_weights = bool(normalize_weights)
        self.class_weights = class_weights
        if int(n_threads) < 1:
            raise ConfigError(f"n_threads must be >= 1, got {n_threads}")
        self.n_threads = int(n_threads)
        self.seed = seed
        self.restore_best_weights = bool(restore_best_weights)
        self.allowed = set(MLP_DEFAULTS) | set(LOOP_DEFAULTS) if kind == "mlp" else None
        _resolve_params({}, defaults, allowed=self.allowed)  # validate option keys early
        self.defaults = dict(defaults)
        # learned state
        self.model_: Any = None
        self.scaler_: InputScaler | None = None
        self.params_: dict[str, Any] | None = None
        self.n_classes_: int | None = None
        self.n_outputs_: int | None = None
        self.loss_name_: str | None = None
        self.features_: tuple[str, ...] | None = None
        self.history_: History | None = None
        self._live: dict[str, Any] | None = None  # the training state while/after fit()
        self.loaded_digest_: str | None = None  # weights_digest right after the last load

    # ------------------------------------------------------------------ building
    def _make_model(self, n_inputs: int, n_outputs: int, p: Mapping[str, Any]) -> Any:
        import torch.nn as nn

        if self.kind == "mlp":
            return build_mlp(n_inputs, n_outputs, p)
        assert self.module_factory is not None
        model = self.module_factory(n_inputs, n_outputs, dict(p))
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"module factory {self.module_ref!r} must return a torch.nn.Module, got "
                f"{type(model).__name__}"
            )
        return model

    def _scaler(self, normalization: str = "standard") -> InputScaler:
        if isinstance(self.scaling, InputScaler):
            return InputScaler.from_dict({**self.scaling.to_dict(), "mean": None, "std": None})
        return InputScaler(self.scaling, normalization=normalization)

    # ------------------------------------------------------------------ training
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
        """Train on ``train``, validate on ``val`` each epoch.

        Args:
            train: Training events (physics weights; normalised internally for the loss).
            val: Validation events.
            params: Hyperparameters (see module docstring); override the constructor defaults.
            report: ``report(epoch, metrics) -> EpochAction`` after every epoch (epochs are
                numbered from 1): continue, stop (pruned; a bare True too), checkpoint now (into
                the action's path), or load the action's checkpoint and continue with its
                params on top of the current ones (the optimiser's learning rate, the dropout
                rates, batch size, L1/L2, max_epochs and patience take the new values).
            checkpoint_dir: If given, the state after every epoch is saved there and a later call
                with the same directory and params resumes after the last saved epoch.
            start_from: A checkpoint directory written by :meth:`save_checkpoint`: training
                continues after its epoch with ``params`` (Population Based Training's exploit).

        Returns:
            The :class:`History`; the model keeps the best epoch's weights
            (``restore_best_weights``).
        """
        import torch

        if train.features != val.features or train.n_classes != val.n_classes:
            raise ConfigError("train and val need the same features and number of classes")
        if len(train) == 0 or len(val) == 0:
            raise ConfigError(f"empty split: {len(train)} training, {len(val)} validation events")
        p = _resolve_params(dict(params or {}), self.defaults, allowed=self.allowed)
        _check_loop(p)
        loss_name = _loss_name(p, train.n_classes)
        n_out = 1 if loss_name == "BinaryCrossentropy" else train.n_classes
        cls_w = _class_loss_weights(p, train.n_classes)
        es = EarlyStopping(
            self.monitor,
            patience=p["patience"],
            conditions=self.conditions,
            overtraining_patience=p["overtraining_patience"],
        )
        self.n_classes_, self.n_outputs_, self.loss_name_ = train.n_classes, n_out, loss_name
        self.features_ = train.features
        self.params_ = _jsonable(p)

        scaler = self._scaler(str(p.get("input_normalization") or "standard")).fit(train)
        tw = training_weights(
            train,
            normalize=self.normalize_weights,
            class_weights=self.class_weights,
            max_event_weight=p["max_event_weight"],
        )
        vw = (
            normalize_class_weights(val, class_weights=self.class_weights)
            if self.normalize_weights
            else val
        )
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / _CHECKPOINT
        self.device_ = resolve_device(self.device)
        old_threads = torch.get_num_threads()
        torch.set_num_threads(self.n_threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0 if self.seed is None else int(self.seed))
                history = self._loop(
                    train,
                    tw,
                    val,
                    vw,
                    scaler,
                    p,
                    cls_w,
                    es,
                    report,
                    ckpt,
                    None if start_from is None else Path(start_from),
                )
        finally:
            torch.set_num_threads(old_threads)
        self.history_ = history
        return history

    def _loop(
        self,
        train: EventData,
        tw: EventData,
        val: EventData,
        vw: EventData,
        scaler: InputScaler,
        p: dict[str, Any],
        cls_w: np.ndarray,
        es: EarlyStopping,
        report: Reporter | None,
        ckpt: Path | None,
        start_from: Path | None = None,
    ) -> History:
        import torch

        assert self.n_outputs_ is not None and self.loss_name_ is not None
        dev = torch.device(self.device_)
        model = self._make_model(train.n_features, self.n_outputs_, p).to(dev)
        opt = torch.optim.Adam(
            model.parameters(),
            lr=float(p["learning_rate"]),
            betas=(float(p["Adam_beta_1"]), 1.0 - float(p["one_minus_Adam_beta_2"])),
            eps=float(p["Adam_epsilon"]),
        )
        gen = torch.Generator().manual_seed(0 if self.seed is None else int(self.seed))
        Xt = torch.as_tensor(scaler.transform(tw), dtype=torch.float32, device=dev)
        yt = torch.as_tensor(np.array(tw.y), dtype=torch.int64, device=dev)
        wt = torch.as_tensor(tw.w * cls_w[tw.y], dtype=torch.float32, device=dev)
        Xv = scaler.transform(vw)
        Xtr_eval = scaler.transform(train)
        # the live training state: what save_checkpoint() writes and a "load" action replaces
        live: dict[str, Any] = {
            "model": model,
            "opt": opt,
            "gen": gen,
            "es": es,
            "p": p,
            "metrics": {},
            "best_state": None,
            "epoch": 0,
            "scaler": scaler,
            "n_train": len(tw),
            "fit_params": self.params_,
        }
        self._live = live
        stop_reason = "max_epochs"
        pruned = False

        if ckpt is not None and ckpt.exists():
            state = load_torch(ckpt, self.device_)  # a GPU checkpoint loads on a CPU machine
            fit_params = state.get("fit_params", state.get("params"))
            if fit_params != self.params_ or state.get("n_train") != len(tw):
                log.warning("checkpoint %s belongs to other params/data: starting afresh", ckpt)
            else:
                self._restore_live(state, None)
                if state.get("finished"):
                    stop_reason, pruned = state["stop_reason"], bool(state["pruned"])
                    live["epoch"] = int(p["max_epochs"]) + 1  # nothing left to do
                log.info("resuming from %s after epoch %d", ckpt, live["epoch"])
        if start_from is not None:
            self._restore_live(_read_checkpoint(start_from), p)

        n = len(tw)
        has_bn = any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
        user_callbacks = make_callbacks(self.callback_factories, p)
        while live["epoch"] < int(live["p"]["max_epochs"]):
            epoch = live["epoch"] = live["epoch"] + 1
            change = _scheduled(live["p"], epoch)
            if change:
                self._set_params(change)
            p = live["p"]
            batch = int(p["batch_size"])
            l1, l2 = float(p["l1_lambda"] or 0.0), float(p["l2_lambda"] or 0.0)
            metrics: dict[str, list[float]] = live["metrics"]
            model.train()
            perm = torch.randperm(n, generator=gen).to(dev)
            total, wsum = 0.0, 0.0
            for i in range(0, n, batch):
                idx = perm[i : i + batch]
                if len(idx) < 2 and has_bn:
                    continue  # batch norm needs >= 2 events
                logits = model(Xt[idx])
                per_event = _per_event_loss(logits, yt[idx], self.loss_name_)
                w = wt[idx]
                loss = (per_event * w).mean()
                reg = _regularisation(model, l1, l2)
                opt.zero_grad()
                (loss + reg if reg is not None else loss).backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                wsum += len(idx)
            epoch_metrics = {"loss": total / max(wsum, 1.0)}
            p_val = self._predict_scaled(model, Xv)
            epoch_metrics["val_loss"] = compute_metric(
                "weighted_loss", vw.y, p_val, vw.w * cls_w[vw.y]
            )
            if self.metrics:
                p_tr = self._predict_scaled(model, Xtr_eval)
                for m in self.metrics:
                    epoch_metrics[m.name] = float(m(train.y, p_tr, train.w, X=train.X))
                    epoch_metrics[f"val_{m.name}"] = float(m(val.y, p_val, val.w, X=val.X))
            for k, v in epoch_metrics.items():
                metrics.setdefault(k, []).append(float(v))
            for cb in user_callbacks:  # user hooks: cb(epoch, model, metrics)
                cb(epoch, model, dict(epoch_metrics))
            improved, reason = es.update(epoch, epoch_metrics)
            if improved or live["best_state"] is None:
                live["best_state"] = copy.deepcopy(model.state_dict())
            if not (
                math.isfinite(epoch_metrics["loss"]) and math.isfinite(epoch_metrics["val_loss"])
            ):
                log.warning(
                    "epoch %d: loss is not finite, stopping (lower the learning rate?)", epoch
                )
                reason = "non_finite"
            action = EpochAction.of(report(epoch, dict(epoch_metrics)) if report else None)
            if action.stops:
                pruned, reason = True, "pruned"
            elif action.kind == "checkpoint":
                assert action.path is not None
                self.save_checkpoint(action.path)
            if action.kind in ("continue", "checkpoint") and action.params:
                self._set_params(action.params)
            finished = reason is not None or epoch >= int(p["max_epochs"])
            if reason is not None:
                stop_reason = reason
            if ckpt is not None:
                _save_checkpoint(
                    ckpt,
                    {
                        **self._live_state(),
                        "finished": finished,
                        "stop_reason": stop_reason,
                        "pruned": pruned,
                    },
                )
            if action.kind == "load":
                assert action.path is not None
                self._restore_live(_read_checkpoint(action.path), {**p, **action.params})
                stop_reason = "max_epochs"
                continue
            if reason is not None:
                break
        best_state = live["best_state"]
        if self.restore_best_weights and best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        self.model_ = model
        self.scaler_ = live["scaler"]
        self.params_ = _jsonable(live["p"])
        return es.history(live["metrics"], pruned=pruned, stop_reason=stop_reason)

    # ------------------------------------------------------------------ checkpoints
    def _live_state(self) -> dict[str, Any]:
        import torch

        live = getattr(self, "_live", None)
        if live is None:
            raise ConfigError("no training state to checkpoint: call fit() first")
        return {
            "epoch": int(live["epoch"]),
            "model": live["model"].state_dict(),
            "optimizer": live["opt"].state_dict(),
            "generator": live["gen"].get_state(),
            "torch_rng": torch.get_rng_state(),
            "early_stopping": live["es"].state_dict(),
            "metrics": {k: list(v) for k, v in live["metrics"].items()},
            "best_model": live["best_state"],
            "params": _jsonable(live["p"]),
            "fit_params": live["fit_params"],
            "n_train": int(live["n_train"]),
            "scaler": live["scaler"].to_dict(),
        }

    def save_checkpoint(self, path: Path | str) -> Path:
        """Save the full training state into directory ``path`` (``checkpoint.pt``).

        The state is the weights, the optimiser state (Adam moments, learning rate), the
        shuffling generator and torch RNG, the epoch counter, the early-stopping counters, the
        per-epoch metrics so far, the best epoch's weights, the hyperparameters and the input
        scaler. Works during :meth:`fit` (from a ``report`` callback) and after it.

        Returns:
            The checkpoint file.
        """
        out = Path(path) / _CHECKPOINT
        _save_checkpoint(out, self._live_state())
        return out

    def _set_params(self, params: Mapping[str, Any]) -> None:
        """Switch the live training to ``params`` (training hyperparameters only)."""
        live = self._live
        assert live is not None
        old = live["p"]
        changed = sorted(k for k in params if is_architecture(k) and params[k] != old.get(k))
        if changed:
            raise ConfigError(
                f"architecture parameters {changed} cannot change during a training: only "
                "training hyperparameters (learning rate, dropout, ...) may"
            )
        merged = {**old, **_jsonable(dict(params))}
        _check_loop(merged)
        live["p"] = merged
        set_hyperparameters(live["model"], live["opt"], live["es"], merged)

    def _restore_live(self, state: Mapping[str, Any], params: Mapping[str, Any] | None) -> None:
        """Replace the live training state by a checkpoint; ``params`` are the hyperparameters
        to continue with (None: the checkpoint's own, i.e. a plain resume)."""
        import torch

        live = self._live
        assert live is not None
        old = dict(state["params"])
        new = dict(old) if params is None else {**old, **_jsonable(dict(params))}
        changed = sorted(
            k
            for k in set(new) | set(old)
            if is_architecture(k) and k in new and new.get(k) != old.get(k)
        )
        if changed:
            raise ConfigError(
                f"cannot load a checkpoint with other architecture parameters {changed}: only "
                "training hyperparameters (learning rate, dropout, ...) may change in training"
            )
        live["model"].load_state_dict(state["model"])
        self.loaded_digest_ = weights_digest(live["model"].state_dict())
        live["opt"].load_state_dict(state["optimizer"])
        live["gen"].set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        live["es"].load_state_dict(state["early_stopping"])
        live["metrics"] = {k: list(v) for k, v in state["metrics"].items()}
        live["best_state"] = state["best_model"]
        live["epoch"] = int(state["epoch"])
        if state.get("scaler") is not None:
            live["scaler"] = InputScaler.from_dict(state["scaler"])
        merged = {**live["p"], **new}
        _check_loop(merged)
        live["p"] = merged
        set_hyperparameters(live["model"], live["opt"], live["es"], merged)

    # ------------------------------------------------------------------ inference
    def _predict_scaled(self, model: Any, X: np.ndarray) -> np.ndarray:
        import torch

        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = model(torch.as_tensor(X, dtype=torch.float32, device=self.device_))
            if self.n_outputs_ == 1:
                out = torch.sigmoid(logits.reshape(-1)).cpu().numpy().astype(np.float64)
            else:
                out = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)
                if self.n_classes_ == 2:
                    out = out[:, 1]
        if was_training:
            model.train()
        return np.asarray(out)

    def predict(self, X: np.ndarray | EventData) -> np.ndarray:
        """Signal probability ``(n,)`` for binary problems, class probabilities ``(n, k)`` else.

        ``X`` holds the raw (unscaled) inputs; the stored scaler is applied.
        """
        import torch

        if self.model_ is None or self.scaler_ is None:
            raise ConfigError("the model is not trained: call fit() (or load_trainable()) first")
        old = torch.get_num_threads()
        torch.set_num_threads(self.n_threads)
        try:
            return self._predict_scaled(self.model_, self.scaler_.transform(X))
        finally:
            torch.set_num_threads(old)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path | str) -> None:
        """Save to directory ``path``: ``model.pt`` (weights) and ``trainable.json`` (config,
        scaler, history)."""
        import torch

        if self.model_ is None or self.scaler_ is None:
            raise ConfigError("nothing to save: the model is not trained")
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.model_.state_dict(), out / "model.pt")
        meta = {
            "kind": self.kind,
            "module": self.module_ref,
            "params": self.params_,
            "n_inputs": len(self.features_ or ()),
            "n_outputs": self.n_outputs_,
            "n_classes": self.n_classes_,
            "loss_function": self.loss_name_,
            "features": list(self.features_ or ()),
            "scaler": self.scaler_.to_dict(),
            "history": None if self.history_ is None else self.history_.to_dict(),
            "n_threads": self.n_threads,
        }
        (out / "trainable.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path | str, meta: Mapping[str, Any], module: Any = None) -> TorchTrainable:
        """Rebuild from :meth:`save` output (used by :func:`load_trainable`)."""
        kind = meta["kind"]
        ref = module if module is not None else meta.get("module")
        if kind == "torch" and ref is None:
            raise ConfigError(
                f"{path}: the module factory was not importable when saved; pass module=<factory>"
            )
        obj = cls(
            kind, module=ref if kind == "torch" else None, n_threads=int(meta.get("n_threads", 1))
        )
        obj.params_ = dict(meta["params"])
        obj.n_classes_, obj.n_outputs_ = int(meta["n_classes"]), int(meta["n_outputs"])
        obj.loss_name_ = meta["loss_function"]
        obj.features_ = tuple(meta["features"])
        obj.scaler_ = InputScaler.from_dict(meta["scaler"])
        if meta.get("history"):
            obj.history_ = History.from_dict(meta["history"])
        model = obj._make_model(int(meta["n_inputs"]), obj.n_outputs_, obj.params_)
        model.load_state_dict(load_torch(Path(path) / "model.pt", "cpu", weights_only=True))
        model.eval()
        obj.model_ = model
        return obj


def _per_event_loss(logits: Any, y: Any, loss_name: str) -> Any:
    import torch
    import torch.nn.functional as F

    if loss_name == "BinaryCrossentropy":
        return F.binary_cross_entropy_with_logits(
            logits.reshape(-1), y.to(logits.dtype), reduction="none"
        )
    logp = torch.log_softmax(logits, dim=1)
    if loss_name == "CategoricalCrossentropy":
        return -logp.gather(1, y.reshape(-1, 1)).reshape(-1)
    # KLDivergence(target || prediction) with one-hot targets: sum t (log t - log p)
    t = F.one_hot(y, num_classes=logits.shape[1]).to(logits.dtype)
    return (torch.xlogy(t, t) - t * logp).sum(dim=1)


def _regularisation(model: Any, l1: float, l2: float) -> Any:
    if l1 == 0 and l2 == 0:
        return None
    reg = None
    for name, param in model.named_parameters():
        if param.dim() < 2 or not name.endswith("weight"):
            continue  # kernels only (no biases, no batch-norm scales)
        term = 0.0
        if l1:
            term = term + l1 * param.abs().sum()
        if l2:
            term = term + l2 * (param * param).sum()
        reg = term if reg is None else reg + term
    return reg


def weights_digest(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 of a torch ``state_dict``'s tensors (names and values): equal digests, equal
    weights."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(np.ascontiguousarray(state_dict[k].detach().cpu().numpy()).tobytes())
    return h.hexdigest()


def _scheduled(p: Mapping[str, Any], epoch: int) -> dict[str, Any]:
    """The hyperparameters that the ``schedule`` sets from ``epoch`` on (empty if none)."""
    sched = p.get("schedule")
    if not sched:
        return {}
    if not isinstance(sched, Mapping):
        raise ConfigError(f"schedule must be a mapping {{epoch: {{name: value}}}}, got {sched!r}")
    change = sched.get(str(epoch), sched.get(epoch))  # type: ignore[call-overload]
    if change is None:
        return {}
    if not isinstance(change, Mapping):
        raise ConfigError(f"schedule[{epoch}] must be a mapping {{name: value}}, got {change!r}")
    return dict(change)


def is_architecture(name: str) -> bool:
    """True for a hyperparameter that changes the network's shape (layers, units, ...)."""
    return name in ARCHITECTURE or re.match(r"^units_\d+$", name) is not None


def set_hyperparameters(model: Any, opt: Any, es: EarlyStopping, p: Mapping[str, Any]) -> None:
    """Apply training hyperparameters to a live training: the optimiser's learning rate,
    betas and epsilon (every parameter group), the dropout rates and early-stopping patience.
    Batch size, L1/L2 and max_epochs are read from ``p`` by the loop at every epoch."""
    import torch.nn as nn

    for group in opt.param_groups:
        group["lr"] = float(p["learning_rate"])
        group["betas"] = (float(p["Adam_beta_1"]), 1.0 - float(p["one_minus_Adam_beta_2"]))
        group["eps"] = float(p["Adam_epsilon"])
    if "dropout" in p:
        rate = float(p["dropout"] or 0.0)
        if not 0 <= rate < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {rate}")
        for m in model.modules():
            if isinstance(m, nn.Dropout | nn.AlphaDropout):
                m.p = rate
    es.patience = None if p.get("patience") is None else int(p["patience"])


def _read_checkpoint(path: Path | str) -> dict[str, Any]:
    import torch

    file = Path(path)
    if file.is_dir():
        file = file / _CHECKPOINT
    if not file.is_file():
        raise ConfigError(f"no checkpoint at {file} (written by TorchTrainable.save_checkpoint)")
    state = torch.load(file, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model" not in state or "optimizer" not in state:
        raise ConfigError(f"{file} is not a TorchTrainable checkpoint")
    return state


def _save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a broken checkpoint


def _jsonable(p: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in p.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, Mapping):
            v = {str(a): b for a, b in v.items()}
        try:
            json.dumps(v)
        except TypeError:
            v = repr(v)
        out[k] = v
    return out


def resolve_callbacks(spec: Any) -> list[Callable[..., Any]]:
    """The callback factories of a trainable's ``callbacks`` option.

    ``spec`` is ``None``, one ``"module:function"`` reference or callable, or a list of them;
    each factory is later called as ``factory(params)`` and returns one framework callback or a
    list of them.
    """
    if spec is None:
        return []
    items = list(spec) if isinstance(spec, list | tuple) else [spec]
    out: list[Callable[..., Any]] = []
    for item in items:
        fn = import_object(item) if isinstance(item, str) else item
        if not callable(fn):
            raise ConfigError(f"callbacks: {item!r} is not callable (give 'module:function')")
        out.append(fn)
    return out


def make_callbacks(factories: Sequence[Callable[..., Any]], params: Mapping[str, Any]) -> list[Any]:
    """Call each factory with the training's params; flatten the returned callbacks."""
    out: list[Any] = []
    for fn in factories:
        made = fn(dict(params))
        out.extend(made if isinstance(made, list | tuple) else [made])
    return out


def _qualname(obj: Any) -> str | None:
    if obj is None:
        return None
    mod, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not mod or not name or "<" in name or mod == "__main__":
        return None
    return f"{mod}:{name}"


def _register() -> None:
    from functools import partial

    from sigtune.pipelines.ml._registry import register_trainable

    for kind in ("mlp", "torch"):
        register_trainable(
            kind, partial(TorchTrainable, kind), load=TorchTrainable.load, builtin=True
        )


_register()
