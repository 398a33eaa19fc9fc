"""Binning parametrisations and the TRExFitter baselines."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigtune.pipelines.binning import (
    BinningError,
    Histograms,
    QuantileBinning,
    TransfoBinning,
    UniformBinning,
    VariableBinning,
    make_binning,
    transfo_d,
    transfo_f,
)


def test_uniform_uses_the_tutorial_parameter_names(fine: Histograms) -> None:
    trial = optuna.trial.FixedTrial({"n_bins": 4, "lo": 0.2, "hi": 0.8})
    edges = UniformBinning(n_bins=(3, 40), lo=(0.0, 0.3), hi=(0.7, 1.0)).suggest(trial, fine)
    np.testing.assert_allclose(edges, [0.2, 0.35, 0.5, 0.65, 0.8])
    fixed = UniformBinning(n_bins=2).suggest(optuna.trial.FixedTrial({}), fine)
    np.testing.assert_allclose(fixed, [0.0, 0.5, 1.0])  # default range = fine range


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(1e-3, 1.0), min_size=1, max_size=40),
    st.floats(-5, 5),
    st.floats(1e-3, 10),
)
def test_variable_edges_are_increasing_by_construction(
    widths: list[float], lo: float, span: float
) -> None:
    edges = VariableBinning.edges(np.array(widths), lo, lo + span)
    assert edges.shape == (len(widths) + 1,)
    assert np.all(np.diff(edges) > 0)
    assert edges[0] == lo and edges[-1] == lo + span


def test_variable_binning_through_a_study(fine: Histograms) -> None:
    binning = VariableBinning(n_bins=(2, 6), min_ratio=0.05)
    seen = []

    def objective(trial: optuna.Trial) -> float:
        e = binning.suggest(trial, fine)
        seen.append(e)
        return float(len(e))

    optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).optimize(objective, 30)
    assert all(np.all(np.diff(e) > 0) for e in seen)
    assert {len(e) - 1 for e in seen} == {2, 3, 4, 5, 6}


@pytest.mark.parametrize("reference", ["background", "signal"])
def test_quantile_bins_hold_equal_fractions(fine: Histograms, reference: str) -> None:
    q = QuantileBinning(n_bins=5, reference=reference)  # type: ignore[arg-type]
    edges = q.suggest(optuna.trial.FixedTrial({}), fine)
    merged = fine.rebin(edges)
    y = merged.total(reference)
    # equal up to the granularity of one fine bin
    assert np.max(np.abs(y - y.mean())) <= fine.total(reference).max() + 1e-9
    assert np.all(np.diff(edges) > 0)


def _check_transfo_d(fine: Histograms, edges: np.ndarray, z_s: float, z_b: float) -> None:
    h = fine.rebin(edges)
    n_s, n_b = fine.total("signal").sum(), fine.total("background").sum()
    cond = z_b * h.total("background") / n_b + z_s * h.total("signal") / n_s
    assert np.all(cond[1:] > 1.0)  # every bin closed by the condition (lowest one holds the rest)
    assert cond[0] > 1.0 or h.n_bins == 1


@pytest.mark.parametrize(("z_s", "z_b"), [(0.0, 5.0), (4.0, 4.0), (10.0, 2.0)])
def test_transfo_d(fine: Histograms, z_s: float, z_b: float) -> None:
    edges = transfo_d(fine, z_s, z_b)
    _check_transfo_d(fine, edges, z_s, z_b)
    # about z_s + z_b bins (floor, the remainder merges into the lowest bin)
    assert int(z_s + z_b) - 2 <= len(edges) - 1 <= int(z_s + z_b)
    if z_s == 0:
        b = fine.rebin(edges).total("background")
        assert np.all(b[1:] >= fine.total("background").sum() / z_b)  # flat background


def test_transfo_f_respects_the_mc_stat_limit(fine: Histograms) -> None:
    edges = transfo_f(fine, 5.0, 5.0, max_rel_stat=0.1)
    h = fine.rebin(edges)
    rel = np.sqrt(h.total_sumw2("background")) / h.total("background")
    assert np.all(rel < 0.1)
    assert h.n_bins >= 3
    ts = TransfoBinning(transform="F", z_s=(1.0, 9.0), z_b=5.0)
    e2 = ts.suggest(optuna.trial.FixedTrial({"z_s": 5.0}), fine)
    np.testing.assert_allclose(e2, edges)


def test_make_binning_and_errors() -> None:
    b = make_binning({"kind": "uniform", "n_bins": [3, 40], "lo": [0.0, 0.3]})
    assert b == UniformBinning(n_bins=(3, 40), lo=(0.0, 0.3))
    t = make_binning({"kind": "transfo", "transform": "F", "z_s": [1, 5], "z_b": 3})
    assert t == TransfoBinning(transform="F", z_s=(1, 5), z_b=3)
    with pytest.raises(BinningError, match="unknown binning kind 'magic'"):
        make_binning({"kind": "magic"})
    with pytest.raises(BinningError, match="unexpected keyword"):
        make_binning({"kind": "uniform", "nbins": 3})
    with pytest.raises(BinningError, match="n_bins must satisfy"):
        UniformBinning(n_bins=(5, 2))
    with pytest.raises(BinningError, match="min_ratio"):
        VariableBinning(min_ratio=0.0)
    with pytest.raises(BinningError, match="TransfoD needs"):
        transfo_d(None, -1.0, 1.0)  # type: ignore[arg-type]
