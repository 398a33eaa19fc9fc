"""Metrics against scikit-learn / closed forms / pyhf."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

import sigtune.pipelines.ml._metrics as mm
from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml import (
    METRICS,
    Monitor,
    Z0Metric,
    composite_metric,
    compute_metric,
    custom_metric,
    get_metric,
    metric_direction,
    register_metric,
    z0_workspace,
)

RNG = np.random.default_rng(0)
N = 400
Y = RNG.integers(0, 2, N)
P = np.clip(0.3 * Y + RNG.uniform(0.05, 0.7, N), 0.01, 0.99).round(2)  # ties on purpose
W = RNG.uniform(0.2, 3.0, N)


def test_auc_matches_sklearn_with_ties_and_weights() -> None:
    assert compute_metric("auc", Y, P) == pytest.approx(skm.roc_auc_score(Y, P), abs=1e-12)
    assert compute_metric("auc", Y, P, W) == pytest.approx(skm.roc_auc_score(Y, P), abs=1e-12)
    assert compute_metric("weighted_auc", Y, P, W) == pytest.approx(
        skm.roc_auc_score(Y, P, sample_weight=W), abs=1e-12
    )


def test_multiclass_auc_is_macro_one_vs_rest() -> None:
    y = RNG.integers(0, 3, N)
    logits = RNG.normal(size=(N, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ref = skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert compute_metric("auc", y, p) == pytest.approx(ref, abs=1e-12)
    assert compute_metric("accuracy", y, p) == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
    assert compute_metric("loss", y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-12)


def test_loss_and_accuracy_match_sklearn() -> None:
    assert compute_metric("loss", Y, P) == pytest.approx(skm.log_loss(Y, P), rel=1e-12)
    assert compute_metric("weighted_loss", Y, P, W) == pytest.approx(
        skm.log_loss(Y, P, sample_weight=W), rel=1e-12
    )
    assert compute_metric("accuracy", Y, P) == pytest.approx(skm.accuracy_score(Y, P >= 0.5))
    assert compute_metric("weighted_accuracy", Y, P, W) == pytest.approx(
        skm.accuracy_score(Y, P >= 0.5, sample_weight=W)
    )
    one_hot = np.eye(2)[Y]
    assert compute_metric("loss", one_hot, P) == pytest.approx(compute_metric("loss", Y, P))


def test_custom_and_composite_metrics() -> None:
    X = RNG.normal(size=(N, 2))
    seen: dict[str, object] = {}

    def fn(
        inputs: np.ndarray, targets: np.ndarray, weights: np.ndarray, preds: np.ndarray
    ) -> float:
        seen.update(inputs=inputs, targets=targets, weights=weights, preds=preds)
        return float(np.sum(weights * preds))

    value = compute_metric(fn, Y, P, W, X=X)
    assert value == pytest.approx(float(np.sum(W * P)))
    assert seen["inputs"] is X
    np.testing.assert_array_equal(seen["targets"], Y)
    comp = composite_metric("mix", {"auc": 2.0, "loss": -0.5})
    expected = 2.0 * compute_metric("auc", Y, P) - 0.5 * compute_metric("loss", Y, P)
    assert comp(Y, P) == pytest.approx(expected)
    assert comp.direction == "maximize"
    m = custom_metric(fn, direction="minimize")
    assert m.direction == "minimize" and m.name == "fn"
    with pytest.raises(ConfigError, match="at least one"):
        composite_metric("empty", {})


def test_registry_and_directions() -> None:
    assert set(METRICS) >= {"loss", "accuracy", "auc", "weighted_loss", "weighted_auc", "z0"}
    assert metric_direction("val_loss") == "minimize"
    assert metric_direction("val_auc") == "maximize"
    assert metric_direction("z0") == "maximize"
    assert metric_direction("val_my_loss") == "minimize"
    with pytest.raises(ConfigError, match="cannot infer the direction"):
        metric_direction("val_mystery")
    with pytest.raises(ConfigError, match="unknown metric"):
        get_metric("nope")
    name = "test_registry_tmp_metric"
    try:
        register_metric(name, lambda X, y, w, p: 1.0, "maximize")
        assert compute_metric(name, Y, P) == 1.0
        with pytest.raises(ConfigError, match="already registered"):
            register_metric(name, lambda X, y, w, p: 2.0, "maximize")
    finally:
        METRICS.pop(name, None)


def test_monitor_parsing_and_comparison() -> None:
    assert Monitor.parse("val_auc") == Monitor("val_auc", "maximize")
    assert Monitor.parse(("val_x", "min")).direction == "minimize"
    m = Monitor.parse({"metric": "val_loss", "min_delta": 0.1})
    assert m.better(0.5, 0.7) and not m.better(0.65, 0.7)
    assert not m.better(float("nan"), 1.0) and m.better(1.0, None)
    assert Monitor("val_auc", "maximize").best_index([0.5, 0.9, 0.7], [True, False, True]) == 2
    with pytest.raises(ConfigError, match="direction"):
        Monitor.parse(("val_x", "up"))


# ---------------------------------------------------------------------- significance
@pytest.mark.parametrize(
    ("s", "b", "sigma", "ref"),
    [(25.0, 50.0, None, 3.289), (50.0, 100.0, 7.0, 3.72), (5.0, 100.0, None, 0.4959)],
)
def test_z_asimov_reference_values(s: float, b: float, sigma: float | None, ref: float) -> None:
    assert mm.z_asimov(s, b, sigma) == pytest.approx(ref, abs=6e-4)


def test_z_asimov_limits() -> None:
    s, b = 3.0, 1000.0
    assert mm.z_asimov(s, b) == pytest.approx(s / math.sqrt(b), rel=2e-3)  # s << b
    assert mm.z_asimov(s, b, 1e-6) == pytest.approx(mm.z_asimov(s, b), rel=1e-6)
    assert mm.z_asimov(s, b, 50.0) < mm.z_asimov(s, b)


def test_z0_metric_uniform_bins_matches_manual_histogram() -> None:
    z0 = Z0Metric(n_bins=4, binning="uniform")
    s, b, _, edges = z0.histograms(Y, P, W)
    np.testing.assert_allclose(edges, [0, 0.25, 0.5, 0.75, 1.0])
    ref_s = np.histogram(P[Y == 1], bins=edges, weights=W[Y == 1])[0]
    ref_b = np.histogram(P[Y == 0], bins=edges, weights=W[Y == 0])[0]
    np.testing.assert_allclose(s, ref_s)
    np.testing.assert_allclose(b, ref_b)
    # the top bin has signal but no background: it is merged into the bin below
    assert ref_b[-1] == 0 and ref_s[-1] > 0 and np.all(ref_b[:-1] > 0)
    ms = np.concatenate([ref_s[:-2], [ref_s[-2] + ref_s[-1]]])
    mb = ref_b[:-1]
    manual = math.sqrt(
        sum(2 * ((si + bi) * math.log(1 + si / bi) - si) for si, bi in zip(ms, mb, strict=True))
    )
    assert z0(Y, P, W) == pytest.approx(manual, rel=1e-10)
    assert compute_metric(z0, Y, P, W) == pytest.approx(manual, rel=1e-10)


def test_merge_low_background_bins() -> None:
    s, b, w2 = mm.merge_low_background(
        np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 5.0, 0.0, 0.0]), np.ones(4), 1e-3
    )
    assert s.tolist() == [10.0] and b.tolist() == [5.0] and w2.tolist() == [4.0]
    s, b, _ = mm.merge_low_background(
        np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 5.0, 0.0, 7.0]), np.zeros(4), 1e-3
    )
    assert s.tolist() == [1.0, 5.0, 4.0] and b.tolist() == [2.0, 5.0, 7.0]


def test_z0_metric_transfo_d_binning_from_the_binning_pipeline() -> None:
    """TransfoD with z_s = 0 gives bins holding at least 1/z_b of the background each."""
    z0 = Z0Metric(n_bins=5, binning="transfo_d", z_s=0.0, z_b=5.0, fine_bins=400)
    s, b, _, edges = z0.histograms(Y, P, W)
    assert 3 <= len(b) <= 5
    assert np.all(b >= W[Y == 0].sum() / 5.0 - 1e-9)
    assert edges[0] == 0.0 and edges[-1] == 1.0
    np.testing.assert_allclose(s.sum(), W[Y == 1].sum())
    assert z0(Y, P, W) > 0


def test_z0_metric_equal_background_bins_and_scaling() -> None:
    z0 = Z0Metric(n_bins=5)
    p = RNG.uniform(size=N)
    _, b, _, _ = z0.histograms(Y, p, np.ones(N))
    assert b.max() - b.min() <= 2  # equal background per bin (up to the discreteness)
    base = z0(Y, P, W)
    scaled = Z0Metric(n_bins=5, weight_scale=4.0)(Y, P, W)
    assert scaled > base  # more luminosity, more significance
    tot = {0: 4 * W[Y == 0].sum(), 1: 4 * W[Y == 1].sum()}
    assert Z0Metric(n_bins=5, yields=tot)(Y, P, W) == pytest.approx(scaled)
    with_unc = Z0Metric(n_bins=5, sigma_b_rel=0.2)(Y, P, W)
    assert with_unc < base
    better = np.clip(0.6 * Y + RNG.uniform(0, 0.4, N), 0, 1)
    assert z0(Y, better, W) > base  # better separation, more significance
    with pytest.raises(ConfigError, match="n_bins"):
        Z0Metric(n_bins=0)


def test_z0_workspace_profile_matches_closed_form_in_pyhf() -> None:
    """pyhf as oracle: the workspace's discovery Z0 on Asimov data equals the closed form."""
    pyhf = pytest.importorskip("pyhf")
    s = np.array([5.0, 10.0, 20.0])
    b = np.array([100.0, 50.0, 10.0])
    spec = z0_workspace(s, b, b_sumw2=b * 1e-8)  # negligible MC stat error
    ws = pyhf.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    p0 = float(pyhf.infer.hypotest(0.0, data, model, test_stat="q0"))
    z_pyhf = float(stats.norm.isf(p0))
    assert z_pyhf == pytest.approx(mm.z_asimov(s, b), rel=2e-3)
    # a real staterror lowers it
    ws2 = pyhf.Workspace(z0_workspace(s, b, b_sumw2=b * 4.0))
    model2 = ws2.model()
    p0b = float(pyhf.infer.hypotest(0.0, ws2.data(model2), model2, test_stat="q0"))
    assert stats.norm.isf(p0b) < z_pyhf


def test_z0_profile_method_uses_sigtune_hep() -> None:
    """method='profile' = sigtune.hep.discovery on z0_workspace; pyhf is the oracle."""
    pyhf = pytest.importorskip("pyhf")
    import sigtune.hep as hep

    if not hasattr(hep, "discovery"):  # sigtune.hep is written in parallel
        with pytest.raises(ConfigError, match=r"needs sigtune\.hep\.discovery"):
            Z0Metric(n_bins=3, method="profile")(Y, P, W)
        return
    w = 3.0 * np.where(Y == 1, 0.05, 1.0)
    z_prof = Z0Metric(n_bins=4, method="profile")(Y, P, w)
    s, b, b2, _ = Z0Metric(n_bins=4).histograms(Y, P, w)
    ws = pyhf.Workspace(z0_workspace(s, b, b_sumw2=b2))
    model = ws.model()
    p0 = float(pyhf.infer.hypotest(0.0, ws.data(model), model, test_stat="q0"))
    assert z_prof == pytest.approx(float(stats.norm.isf(p0)), rel=1e-4)
    assert z_prof < Z0Metric(n_bins=4)(Y, P, w)  # MC-stat uncertainties lower it


def test_cut_figures_of_merit_match_closed_forms() -> None:
    """At a perfect classifier the best cut keeps all signal and no background but the floor."""
    y = np.array([1] * 4 + [0] * 6)
    p = np.array([0.9, 0.8, 0.85, 0.95, 0.1, 0.2, 0.3, 0.4, 0.7, 0.05])
    w = np.array([2.0, 2.0, 2.0, 2.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0])
    # cuts are background quantiles: the tightest keeps the top background event (B = 10)
    s_cut, b_cut = 8.0, 10.0
    assert compute_metric("s_sqrt_b", y, p, w) == pytest.approx(s_cut / math.sqrt(b_cut))
    assert compute_metric("s_sqrt_b_db", y, p, w) == pytest.approx(
        s_cut / math.sqrt(b_cut + (0.1 * b_cut) ** 2)
    )
    assert compute_metric("z_asimov", y, p, w) == pytest.approx(mm.z_asimov(s_cut, b_cut))
    assert compute_metric("z_asimov_db", y, p, w) == pytest.approx(
        mm.z_asimov(s_cut, b_cut, 0.1 * b_cut)
    )
    assert metric_direction("z_asimov_db") == "maximize"
    llr = mm.get_metric("binned_llr")
    assert llr.name == "binned_llr" and compute_metric("binned_llr", y, p, w) > 0


def test_composite_expression_of_metrics() -> None:
    m = composite_metric("q", "auc * 2 - weighted_loss", direction="maximize")
    ref = 2 * compute_metric("auc", Y, P, W) - compute_metric("weighted_loss", Y, P, W)
    assert m(Y, P, W) == pytest.approx(ref)
    with pytest.raises(ConfigError):
        composite_metric("bad", "__import__('os')")
    with pytest.raises(ConfigError, match="unknown metric"):
        composite_metric("bad", "auc + nonsense")
