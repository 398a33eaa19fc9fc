"""The binning objective: constraints, cuts + binning, figures of merit, multi-objective."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from sigtune.pipelines.binning import (
    BinningError,
    BinningObjective,
    EventSample,
    Histograms,
    UniformBinning,
    fill_histograms,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(obj: BinningObjective, n: int, seed: int = 0) -> optuna.Study:
    sampler = optuna.samplers.TPESampler(seed=seed)
    if len(obj.directions) == 1:
        study = optuna.create_study(direction=obj.directions[0], sampler=sampler)
    else:
        study = optuna.create_study(directions=obj.directions, sampler=sampler)
    study.optimize(obj, n_trials=n)
    return study


def test_constraints_mark_infeasible_trials(fine: Histograms) -> None:
    obj = BinningObjective(
        fine,
        binning=UniformBinning(n_bins=(2, 60)),
        figure="z_asimov",
        min_background=0.5,
        max_rel_stat=0.2,
    )
    study = _study(obj, 40)
    feasible, infeasible = [], []
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        cons = t.user_attrs["constraints"]
        edges = np.array(t.user_attrs["edges"])
        h = fine.rebin(edges)
        b = h.total("background")
        rel = np.sqrt(h.total_sumw2("background")) / b
        expect_ok = b.min() >= 0.5 and rel.max() <= 0.2
        assert (max(cons) <= 0) == expect_ok
        assert cons[1] == pytest.approx(0.5 - b.min())
        assert cons[2] == pytest.approx(rel.max() - 0.2)
        assert list(t.constraints.values()) == cons  # Optuna record (Trial.set_constraint)
        (feasible if expect_ok else infeasible).append(t)
    assert feasible and infeasible  # both kinds occur in this space
    # infeasible trials still carry the real figure, not a silent 0.0
    assert all(t.value > 0 for t in infeasible)


def test_empty_background_bin_is_infeasible_not_an_error() -> None:
    edges = np.linspace(0, 1, 11)
    s = EventSample.from_arrays("s", np.full(10, 0.95), np.ones(10))
    b = EventSample.from_arrays("b", np.linspace(0.0, 0.49, 50), np.ones(50))
    fine = fill_histograms([s, b], edges, signal=["s"])
    obj = BinningObjective(fine, binning=UniformBinning(n_bins=2, lo=0.0, hi=1.0))
    trial = optuna.create_study(direction="maximize").ask()
    value = obj(trial)
    assert trial.user_attrs["constraints"][0] == 1.0  # one bin without background
    assert value == 0.0 and "figure_error" in trial.user_attrs


def test_z_asimov_figure_is_the_closed_form(fine: Histograms) -> None:
    from sigtune.hep._closed_form import z_asimov

    obj = BinningObjective(
        fine, binning=UniformBinning(n_bins=5, lo=0.0, hi=1.0), figure="z_asimov"
    )
    cand = obj.replay({})
    h = fine.rebin(np.linspace(0, 1, 6))
    bkg = h["background"]
    var = bkg.sumw2.copy()
    for up, down in bkg.variations.values():
        var += np.maximum(np.abs(up - bkg.counts), np.abs(down - bkg.counts)) ** 2
    expected = z_asimov(h.total("signal"), h.total("background"), np.sqrt(var))
    assert cand.values[0] == pytest.approx(expected, rel=1e-12)


def test_cuts_and_binning_combine(events: list[EventSample]) -> None:
    edges = np.linspace(0, 1, 201)
    obj = BinningObjective(
        events,
        signal=["signal"],
        fine_edges=edges,
        binning=UniformBinning(n_bins=(3, 12), lo=(0.0, 0.2), hi=(0.8, 1.0)),
        cuts=[
            {"column": "eta", "op": "<", "abs": True, "range": [0.5, 2.5]},
            {"column": "discriminant", "op": ">", "range": [0.0, 0.4], "name": "score_cut"},
        ],
        figure="z_asimov",
    )
    study = _study(obj, 15)
    assert {"cut_eta", "score_cut", "n_bins", "lo", "hi"} <= set(study.trials[0].params)
    for t in study.trials[:6]:
        p = t.params
        cand = obj.replay(p)
        # independent computation: select events, histogram, merge
        masks = {s.name: np.abs(s.columns["eta"]) < p["cut_eta"] for s in events}
        ref = fill_histograms(events, edges, signal=["signal"], masks=masks)
        lo = max(p["lo"], p["score_cut"])
        req = np.linspace(p["lo"], p["hi"], p["n_bins"] + 1)
        req = np.concatenate([[lo], req[(req > lo) & (req < p["hi"])], [p["hi"]]])
        expect = ref.rebin(req)
        np.testing.assert_allclose(cand.edges, expect.edges)
        for name in ("signal", "background"):
            np.testing.assert_allclose(cand.hist[name].counts, expect[name].counts, rtol=1e-12)
            np.testing.assert_allclose(cand.hist[name].sumw2, expect[name].sumw2, rtol=1e-12)
        assert cand.edges[0] >= p["score_cut"] - 0.0025  # snapped to the 0.005 fine grid
        assert cand.values[0] == pytest.approx(t.value, rel=1e-12)
        assert t.user_attrs["cuts"] == {k: v for k, v in cand.cuts.items()}


def test_multi_objective_z0_vs_n_bins(fine: Histograms) -> None:
    obj = BinningObjective(
        fine,
        binning=UniformBinning(n_bins=(1, 30)),
        figure="z_asimov",
        objectives=("figure", "n_bins"),
    )
    assert obj.directions == ["maximize", "minimize"]
    study = _study(obj, 20)
    for t in study.trials:
        assert t.values[1] == t.user_attrs["n_bins"] == len(t.user_attrs["edges"]) - 1
    assert len(study.best_trials) >= 1


def test_invalid_objective_arguments(fine: Histograms, events: list[EventSample]) -> None:
    with pytest.raises(BinningError, match="unknown figure"):
        BinningObjective(fine, figure="auc")
    with pytest.raises(BinningError, match="objectives must start with 'figure'"):
        BinningObjective(fine, objectives=("n_bins",))
    with pytest.raises(BinningError, match="need event samples"):
        BinningObjective(fine, cuts=[{"column": "eta", "op": "<", "value": 1.0}])
    with pytest.raises(BinningError, match="missing from sample"):
        BinningObjective(
            events,
            signal=["signal"],
            fine_edges=np.linspace(0, 1, 11),
            cuts=[{"column": "pt", "op": ">", "value": 1.0}],
        )
    with pytest.raises(BinningError, match="op must be one of"):
        BinningObjective(fine, cuts=[{"column": "discriminant", "op": "=", "value": 1.0}])


def test_objective_pickles_for_worker_processes(events: list[EventSample]) -> None:
    import pickle

    obj = BinningObjective(
        events,
        signal=["signal"],
        fine_edges=np.linspace(0, 1, 101),
        binning=UniformBinning(n_bins=4, lo=0.0, hi=1.0),
        cuts=[{"column": "eta", "op": "<", "abs": True, "value": 2.0}],
        figure="z_asimov",
    )
    clone = pickle.loads(pickle.dumps(obj))
    assert clone.replay({}).values == obj.replay({}).values


def _small(fine: Histograms, **kwargs: object) -> BinningObjective:
    return BinningObjective(fine, binning=UniformBinning(n_bins=4, lo=0.0, hi=1.0), **kwargs)  # type: ignore[arg-type]


def test_expected_limit_figure_equals_pyhf(fine: Histograms) -> None:
    import pyhf

    cand = _small(fine, figure="cls_limit_exp").replay({})
    ws = pyhf.Workspace(cand.workspace)
    model = ws.model()
    _, exp = pyhf.infer.intervals.upper_limits.upper_limit(ws.data(model), model, scan=None)
    assert cand.values[0] == pytest.approx(float(exp[2]), rel=5e-3)
    assert _small(fine, figure="cls_limit_exp").directions == ["minimize"]


def test_observed_z0_and_impact_objective(fine: Histograms) -> None:
    from sigtune import hep

    from .test_workspace import pyhf_z0

    obj = _small(fine, figure="z0_obs", objectives=("figure", "impact"))
    assert obj.directions == ["maximize", "minimize"]
    cand = obj.replay({})
    assert cand.values[0] == pytest.approx(pyhf_z0(cand.workspace), rel=2e-3)
    ws = hep.Workspace(cand.workspace)
    model = ws.model()
    entries = hep.ranking(model, ws.data(model)).entries
    assert len(entries) > 1
    assert cand.values[1] == pytest.approx(np.sqrt(sum(e.total_impact**2 for e in entries)))


def test_multi_objective_outputs_list_the_pareto_front(fine: Histograms, tmp_path: object) -> None:
    import json
    from pathlib import Path

    from sigtune.pipelines.binning import write_outputs

    obj = BinningObjective(
        fine,
        binning=UniformBinning(n_bins=(1, 30)),
        figure="z_asimov",
        objectives=("figure", "n_bins"),
    )
    study = _study(obj, 25)
    res = write_outputs(obj, study, Path(str(tmp_path)), plot=False)
    front = json.loads(res.files["summary_json"].read_text())["pareto_front"]
    expected = {t.number for t in study.best_trials}  # Optuna's own front (all feasible here)
    assert {p["trial"] for p in front} == expected
    assert res.candidate.values[0] == max(t.values[0] for t in study.trials)
