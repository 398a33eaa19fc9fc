"""The built-in PyTorch MLP: architecture, training loop, early stopping, overtraining, pruning
reports, checkpoint resume, save/load."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sigtune._exceptions import ConfigError  # noqa: E402
from sigtune.pipelines.ml import (  # noqa: E402
    InputScaler,
    build_mlp,
    compute_metric,
    load_trainable,
    make_hep_dataset,
    make_trainable,
    split_random,
    train_val_gap,
)
from sigtune.pipelines.ml._mlp import _per_event_loss  # noqa: E402

DATA = make_hep_dataset(900, n_informative=3, n_correlated=0, n_noise=2, seed=8)
SPLITS = split_random(DATA, val_fraction=0.3, seed=1)
FAST = {"num_layers": 2, "units": 16, "batch_size": 64, "learning_rate": 0.01, "max_epochs": 6}


class _Interrupt(Exception):
    pass


# ---------------------------------------------------------------------- architecture
def test_build_mlp_layers_and_overrides() -> None:
    net = build_mlp(5, 1, {"num_layers": 3, "units": 8, "units_i": {2: 4}, "batch_norm": True})
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 8), (8, 4), (4, 8), (8, 1)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in net) == 3
    flat = build_mlp(5, 3, {"num_layers": 2, "units": 8, "units_2": 6})
    assert [m.out_features for m in flat if isinstance(m, torch.nn.Linear)] == [8, 6, 3]
    selu = build_mlp(5, 1, {"num_layers": 1, "activation": "selu", "dropout": 0.1})
    assert any(isinstance(m, torch.nn.AlphaDropout) for m in selu)
    assert any(isinstance(m, torch.nn.SELU) for m in selu)
    gelu = build_mlp(5, 1, {"num_layers": 1, "activation": "gelu", "dropout": 0.2})
    assert any(type(m) is torch.nn.Dropout for m in gelu)


def test_build_mlp_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="batch_norm cannot be combined with activation 'selu'"):
        build_mlp(3, 1, {"activation": "selu", "batch_norm": True})
    with pytest.raises(ConfigError, match="activation must be one of"):
        build_mlp(3, 1, {"activation": "relu6"})
    with pytest.raises(ConfigError, match="initializer must be one of"):
        build_mlp(3, 1, {"kernel_initializer": "magic"})
    with pytest.raises(ConfigError, match="dropout"):
        build_mlp(3, 1, {"dropout": 1.0})
    with pytest.raises(ConfigError, match="units_i has layer 5"):
        build_mlp(3, 1, {"num_layers": 2, "units_i": {5: 3}})


def test_unknown_hyperparameter_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown MLP hyperparameter\(s\) \['unitz'\]"):
        make_trainable("mlp", unitz=3)
    t = make_trainable("mlp")
    with pytest.raises(ConfigError, match="learning_rat"):
        t.fit(SPLITS.train, SPLITS.val, {"learning_rat": 0.1})
    with pytest.raises(ConfigError, match="out of range"):
        t.fit(SPLITS.train, SPLITS.val, {"learning_rate": -1.0})
    with pytest.raises(ConfigError, match="needs 2 classes"):
        three = make_hep_dataset(60, seed=0)
        three = type(three)(three.X, three.y, three.w, three.event_number, three.features, 3)
        t.fit(three, three, {"loss_function": "BinaryCrossentropy"})


def test_kl_divergence_equals_categorical_crossentropy_for_one_hot_targets() -> None:
    logits = torch.randn(7, 3)
    y = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    ce = _per_event_loss(logits, y, "CategoricalCrossentropy")
    kl = _per_event_loss(logits, y, "KLDivergence")
    torch.testing.assert_close(ce, kl)
    ref = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(ce, ref)


# ---------------------------------------------------------------------- training
def test_training_learns_is_reproducible_and_reports_every_epoch() -> None:
    calls: list[tuple[int, float, int]] = []

    def report(epoch: int, metrics: Mapping[str, float]) -> bool:
        calls.append((epoch, metrics["val_loss"], torch.get_num_threads()))
        return False

    before = torch.get_num_threads()
    t = make_trainable("mlp", metrics=["auc", "weighted_auc"], n_threads=1, seed=3)
    h = t.fit(SPLITS.train, SPLITS.val, FAST, report=report)
    assert torch.get_num_threads() == before  # restored after fit
    assert [c[0] for c in calls] == list(range(1, 7))
    assert all(c[2] == 1 for c in calls)  # n_threads respected during training
    assert h.n_epochs == 6 and not h.pruned and h.stop_reason == "max_epochs"
    assert set(h.metrics) == {
        "loss",
        "val_loss",
        "auc",
        "val_auc",
        "weighted_auc",
        "val_weighted_auc",
    }
    assert h.metrics["val_auc"][-1] > 0.8
    assert h.best_epoch == int(np.argmin(h.metrics["val_loss"])) + 1
    p = t.predict(SPLITS.val.X)
    assert p.shape == (len(SPLITS.val),) and np.all((p >= 0) & (p <= 1))
    # restore_best_weights: the predictions reproduce the best epoch's validation AUC
    assert compute_metric("auc", SPLITS.val.y, p) == pytest.approx(h.best("val_auc"), abs=1e-6)
    h2 = make_trainable("mlp", metrics=["auc", "weighted_auc"], seed=3).fit(
        SPLITS.train, SPLITS.val, FAST
    )
    assert h2.metrics == h.metrics
    h3 = make_trainable("mlp", metrics=["auc"], seed=4).fit(SPLITS.train, SPLITS.val, FAST)
    assert h3.metrics["val_loss"] != h.metrics["val_loss"]


def test_scaler_is_fitted_on_the_training_split() -> None:
    transforms = {"inf_0": {"kind": "log10"}}
    t = make_trainable("mlp", scaling=transforms, metrics=[])
    t.fit(SPLITS.train, SPLITS.val, {**FAST, "max_epochs": 1})
    ref = InputScaler(transforms).fit(SPLITS.train)
    np.testing.assert_allclose(t.scaler_.mean_, ref.mean_)
    np.testing.assert_allclose(t.scaler_.std_, ref.std_)


def test_report_true_prunes() -> None:
    t = make_trainable("mlp", metrics=[])
    h = t.fit(SPLITS.train, SPLITS.val, FAST, report=lambda e, m: e >= 2)
    assert h.pruned and h.stop_reason == "pruned" and h.n_epochs == 2


def test_early_stopping_with_patience() -> None:
    t = make_trainable("mlp", metrics=[])
    # learning rate ~0: the validation loss never improves after epoch 1
    h = t.fit(
        SPLITS.train, SPLITS.val, {**FAST, "learning_rate": 1e-12, "patience": 2, "max_epochs": 20}
    )
    assert h.stop_reason == "early_stopping"
    assert h.n_epochs <= 4 and h.best_epoch <= 2


def test_overtraining_conditions_stop_and_exclude_epochs() -> None:
    t = make_trainable("mlp", metrics=[], overtraining_conditions=[lambda m: True])
    h = t.fit(SPLITS.train, SPLITS.val, {**FAST, "overtraining_patience": 2})
    assert h.stop_reason == "overtraining" and h.n_epochs == 2
    assert h.overtrained == [True, True]
    # a condition that flags late epochs keeps the best epoch among the early ones
    base = make_trainable("mlp", metrics=[]).fit(SPLITS.train, SPLITS.val, FAST)
    cut = sorted(base.metrics["val_loss"])[2]  # the three lowest losses count as overtrained
    late = make_trainable(
        "mlp", metrics=[], overtraining_conditions=[lambda m: m["val_loss"] <= cut]
    )
    h2 = late.fit(SPLITS.train, SPLITS.val, {**FAST, "overtraining_patience": None})
    assert h2.metrics == base.metrics  # conditions do not change the training
    flagged = [v <= cut for v in h2.metrics["val_loss"]]
    assert sum(flagged) == 3 and h2.overtrained == flagged
    assert not h2.overtrained[h2.best_epoch - 1]
    allowed = [v for v, f in zip(h2.metrics["val_loss"], flagged, strict=True) if not f]
    assert h2.best() == min(allowed)
    assert base.best() < h2.best()
    gap = train_val_gap("loss", max_gap=0.0)
    assert gap({"loss": 0.5, "val_loss": 0.6}) and not gap({"loss": 0.5, "val_loss": 0.5})
    with pytest.raises(ConfigError, match="val_auc"):
        train_val_gap("auc")({"loss": 1.0})


def test_class_loss_weights_and_regularisation() -> None:
    # with class 0 weighted zero only signal matters: everything is called signal
    t = make_trainable("mlp", metrics=[])
    t.fit(SPLITS.train, SPLITS.val, {**FAST, "loss_weight_class_0": 0.0})
    assert t.predict(SPLITS.val.X).mean() > 0.9
    norms = {}
    for l2 in (0.0, 0.05):
        m = make_trainable("mlp", metrics=[])
        m.fit(SPLITS.train, SPLITS.val, {**FAST, "l2_lambda": l2})
        norms[l2] = sum(
            float((p.detach() ** 2).sum())
            for n, p in m.model_.named_parameters()
            if n.endswith("weight")
        )
    assert norms[0.05] < 0.5 * norms[0.0]


def test_multiclass_and_categorical_losses() -> None:
    d = make_hep_dataset(600, seed=9)
    y3 = np.where(d.X[:, 0] > np.median(d.X[:, 0]), 2, d.y)
    d3 = type(d)(d.X, y3, d.w, d.event_number, d.features, 3)
    s = split_random(d3, val_fraction=0.3, seed=0)
    t = make_trainable("mlp", metrics=["accuracy"])
    h = t.fit(s.train, s.val, {**FAST, "loss_function": "KLDivergence"})
    p = t.predict(s.val.X)
    assert p.shape == (len(s.val), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert h.metrics["val_accuracy"][-1] > 0.6
    # binary data with a softmax output still predicts the class-1 probability
    t2 = make_trainable("mlp", metrics=[])
    t2.fit(SPLITS.train, SPLITS.val, {**FAST, "loss_function": "CategoricalCrossentropy"})
    assert t2.predict(SPLITS.val.X).shape == (len(SPLITS.val),)


def test_checkpoint_resume_gives_the_uninterrupted_history(tmp_path: Path) -> None:
    params = {**FAST, "max_epochs": 5, "dropout": 0.1}
    full_t = make_trainable("mlp", metrics=["auc"])
    full = full_t.fit(SPLITS.train, SPLITS.val, params)

    def crash(epoch: int, metrics: Mapping[str, float]) -> bool:
        if epoch == 3:
            raise _Interrupt
        return False

    t = make_trainable("mlp", metrics=["auc"])
    with pytest.raises(_Interrupt):
        t.fit(SPLITS.train, SPLITS.val, params, report=crash, checkpoint_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").exists()
    seen: list[int] = []
    resumed = make_trainable("mlp", metrics=["auc"]).fit(
        SPLITS.train,
        SPLITS.val,
        params,
        report=lambda e, m: seen.append(e) or False,
        checkpoint_dir=tmp_path,
    )
    assert seen == [3, 4, 5]  # epochs 1-2 came from the checkpoint (epoch 3 was not saved)
    assert resumed.metrics == full.metrics
    assert resumed.best_epoch == full.best_epoch
    # a finished checkpoint: nothing is retrained
    again: list[int] = []
    t3 = make_trainable("mlp", metrics=["auc"])
    h3 = t3.fit(
        SPLITS.train,
        SPLITS.val,
        params,
        report=lambda e, m: again.append(e) or False,
        checkpoint_dir=tmp_path,
    )
    assert again == [] and h3.metrics == full.metrics
    np.testing.assert_allclose(t3.predict(SPLITS.val.X), full_t.predict(SPLITS.val.X), rtol=1e-6)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    t = make_trainable("mlp", scaling={"inf_1": {"kind": "sqrt"}}, metrics=["auc"])
    h = t.fit(SPLITS.train, SPLITS.val, {**FAST, "max_epochs": 2, "batch_norm": True})
    t.save(tmp_path / "model")
    back = load_trainable(tmp_path / "model")
    np.testing.assert_allclose(back.predict(SPLITS.val.X), t.predict(SPLITS.val.X), rtol=1e-6)
    assert back.history_.metrics == h.metrics
    with pytest.raises(ConfigError, match=r"no trainable\.json"):
        load_trainable(tmp_path)


@pytest.mark.slow
def test_training_is_reproducible_in_a_subprocess() -> None:
    import subprocess
    import sys

    code = (
        "from sigtune.pipelines.ml import make_hep_dataset, make_trainable, split_random;"
        "d = make_hep_dataset(900, n_informative=3, n_correlated=0, n_noise=2, seed=8);"
        "s = split_random(d, val_fraction=0.3, seed=1);"
        "p = {'num_layers': 2, 'units': 16, 'batch_size': 64, 'learning_rate': 0.01,"
        " 'max_epochs': 3, 'dropout': 0.2};"
        "print(repr(make_trainable('mlp', metrics=[], seed=5).fit(s.train, s.val, p)"
        ".metrics['val_loss']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    params = {**FAST, "max_epochs": 3, "dropout": 0.2}
    here = make_trainable("mlp", metrics=[], seed=5).fit(SPLITS.train, SPLITS.val, params)
    assert out.stdout.strip() == repr(here.metrics["val_loss"])


def _nan_factory(n_in: int, n_out: int, params: Mapping[str, object]) -> object:
    net = torch.nn.Linear(n_in, n_out)
    with torch.no_grad():
        net.weight.fill_(float("nan"))
    return net


def test_non_finite_loss_stops_training() -> None:
    t = make_trainable("torch", module=_nan_factory, metrics=[])
    h = t.fit(SPLITS.train, SPLITS.val, {"max_epochs": 10, "patience": None})
    assert h.stop_reason == "non_finite" and h.n_epochs == 1
    assert np.isnan(h.best("val_loss"))


def test_physics_metric_can_be_monitored() -> None:
    """Tune for Z0: the monitored val_z0 is maximised; its value is Z0Metric on the predictions."""
    from sigtune.pipelines.ml import Z0Metric

    z0 = Z0Metric(n_bins=5, weight_scale=1.0 / 0.3)  # validation holds 30% of the events
    t = make_trainable("mlp", metrics=[z0], monitor="val_z0", seed=2)
    h = t.fit(SPLITS.train, SPLITS.val, {**FAST, "max_epochs": 4})
    assert h.monitor == "val_z0" and h.direction == "maximize"
    assert h.best_epoch == int(np.argmax(h.metrics["val_z0"])) + 1
    p = t.predict(SPLITS.val.X)
    assert z0(SPLITS.val.y, p, SPLITS.val.w) == pytest.approx(h.best("val_z0"), rel=1e-6)
    assert h.best("val_z0") > 1.0
