"""Physics pages checked against pyhf: yields, post-fit band and Brazil band."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

pyhf = pytest.importorskip("pyhf")
pytest.importorskip("mplhep")

from sigtune.reports import write_report  # noqa: E402
from sigtune.reports._physics import (  # noqa: E402
    PhysicsResults,
    _brazil_figure,
    _stack_figure,
    physics_results,
    write_physics_page,
)

WS = Path(__file__).resolve().parents[1] / "data" / "reports" / "physics_workspace.json"


@pytest.fixture(scope="module")
def results() -> PhysicsResults:
    return physics_results(WS)


@pytest.fixture(scope="module")
def pyhf_model() -> tuple[Any, np.ndarray, list[str]]:
    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(json.loads(WS.read_text()))
    model = ws.model()
    data = np.asarray(ws.data(model), dtype=float)
    names = []
    for name in model.config.par_order:
        n = model.config.param_set(name).n_parameters
        names += [name] if n == 1 else [f"{name}[{i}]" for i in range(n)]
    return model, data, names


def _to_pyhf(res: PhysicsResults, names: list[str]) -> np.ndarray:
    return np.array([res.bestfit[res.par_names.index(n)] for n in names])


def _main(model: Any, pars: np.ndarray) -> np.ndarray:
    return np.asarray(model.expected_actualdata(pars), dtype=float)


def _pyhf_covariance(model: Any, data: np.ndarray, pars: np.ndarray) -> np.ndarray:
    """Inverse of the numerical Hessian of pyhf's NLL (central differences)."""

    def nll(p: np.ndarray) -> float:
        return -float(model.logpdf(p, data)[0])

    n, h = pars.size, 1e-4
    hess = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            e_i, e_j = np.eye(n)[i] * h, np.eye(n)[j] * h
            hess[i, j] = hess[j, i] = (
                nll(pars + e_i + e_j)
                - nll(pars + e_i - e_j)
                - nll(pars - e_i + e_j)
                + nll(pars - e_i - e_j)
            ) / (4 * h * h)
    return np.linalg.inv(hess)


def test_postfit_yields_and_band_match_pyhf(
    results: PhysicsResults, pyhf_model: tuple[Any, np.ndarray, list[str]]
) -> None:
    model, data, names = pyhf_model
    ours = _to_pyhf(results, names)
    theirs = np.asarray(pyhf.infer.mle.fit(data, model), dtype=float)
    np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=2e-3)

    # per-sample stacks add up to pyhf's expected yields at the best fit, bin by bin
    total = np.concatenate([ch.postfit.sum(axis=0) for ch in results.channels])
    np.testing.assert_allclose(total, _main(model, ours), rtol=1e-9)
    prefit = np.concatenate([ch.prefit.sum(axis=0) for ch in results.channels])
    np.testing.assert_allclose(prefit, _main(model, np.asarray(model.config.suggested_init())))

    # band = sqrt(diag(J C J^T)): J and C both from pyhf, independently of sigtune
    cov = _pyhf_covariance(model, data, theirs)
    h = 1e-6
    jac = np.stack(
        [
            (_main(model, theirs + h * e) - _main(model, theirs - h * e)) / (2 * h)
            for e in np.eye(theirs.size)
        ],
        axis=1,
    )
    band = np.sqrt(np.einsum("ni,ij,nj->n", jac, cov, jac))
    ours_band = np.concatenate([ch.postfit_sigma for ch in results.channels])
    np.testing.assert_allclose(ours_band, band, rtol=5e-3)
    assert np.all(ours_band > 0)


def test_postfit_band_is_drawn_where_computed(results: PhysicsResults) -> None:
    ch = results.channels[1]
    assert ch.name == "SR" and ch.samples == ["background", "signal"]
    fig = _stack_figure(ch, "post")
    hatched = [p for p in fig.axes[0].patches if p.get_hatch() == "///"]
    assert len(hatched) == len(ch.data)
    total = ch.postfit.sum(axis=0)
    np.testing.assert_allclose([p.get_y() for p in hatched], total - ch.postfit_sigma)
    np.testing.assert_allclose([p.get_height() for p in hatched], 2 * ch.postfit_sigma)


def test_brazil_band_equals_pyhf_expected_cls(
    results: PhysicsResults, pyhf_model: tuple[Any, np.ndarray, list[str]]
) -> None:
    model, data, _ = pyhf_model
    cls = results.cls
    assert cls is not None and len(cls.mu) >= 10
    for i in range(0, len(cls.mu), 3):
        obs, exp = pyhf.infer.hypotest(
            float(cls.mu[i]), data, model, test_stat="qtilde", return_expected_set=True
        )
        np.testing.assert_allclose(cls.cls_obs[i], float(obs), rtol=2e-3, atol=1e-6)
        np.testing.assert_allclose(cls.cls_exp[i], np.asarray(exp, float), rtol=2e-3, atol=1e-6)
    # the drawn band's edges are exactly these quantiles
    fig = _brazil_figure(cls)
    two_sigma = fig.axes[0].collections[0].get_paths()[0].vertices
    for edge in (cls.cls_exp[:, 0], cls.cls_exp[:, 4]):
        for mu, y in zip(cls.mu, edge, strict=True):
            assert np.any(np.isclose(two_sigma[:, 0], mu) & np.isclose(two_sigma[:, 1], y))
    # the observed limit is where the observed CLs crosses 0.05
    assert cls.cls_obs[cls.mu < cls.limit_obs].min() > 0.05 > cls.cls_obs[-1]


def test_pulls_and_ranking(results: PhysicsResults) -> None:
    by_name = {p["name"]: p for p in results.pulls}
    assert "mu" not in by_name and set(by_name) >= {"bkg_norm", "bkg_shape", "staterror_SR[0]"}
    i = results.par_names.index("bkg_norm")
    assert by_name["bkg_norm"]["pull"] == pytest.approx(results.bestfit[i] / 1.0)
    assert 0 < float(by_name["bkg_norm"]["constraint"]) < 1  # the CR constrains it
    assert results.ranking is not None
    impacts = [e.total_impact for e in results.ranking.entries]
    assert impacts == sorted(impacts, reverse=True)


def test_physics_page_has_every_plot(tmp_path: Path) -> None:
    out = write_physics_page(WS, tmp_path / "physics.html")
    text = out.read_text(encoding="utf-8")
    kinds = re.findall(r"data-kind='([\w-]+)'", text)
    assert kinds == ["prefit", "postfit", "prefit", "postfit", "pulls", "ranking", "brazil",
                     "nll-scan"]  # fmt: skip
    assert text.count("data:image/png;base64,") == len(kinds)


def test_binning_study_gets_a_physics_page(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(WS, run_dir / "best_workspace.json")
    study = optuna.create_study(direction="maximize")
    for n in (3, 4, 5, 6):
        t = study.ask()
        t.suggest_int("n_bins", 3, 6)
        t.set_user_attr("n_bins", n)
        t.set_user_attr("edges", list(np.linspace(0, 1, n + 1)))
        study.tell(t, 1.0 + n / 10)
    main = write_report(study, run_dir / "report.html", run_dir=run_dir)
    phys = (run_dir / "physics.html").read_text(encoding="utf-8")
    assert "href='physics.html'" in main.read_text(encoding="utf-8")
    kinds = re.findall(r"data-kind='([\w-]+)'", phys)
    assert {"postfit", "brazil", "z0-vs-bins", "binning"} <= set(kinds)
    assert "Not drawn" not in phys


def test_binning_run_draws_the_chosen_binning_over_its_fine_histograms(tmp_path: Path) -> None:
    """A real binning run saves its fine histograms; the physics page reads them back and the
    fine yields merged into the chosen edges equal the best workspace's sample data."""
    from sigtune.pipelines.binning import (
        BinningObjective,
        EventSample,
        UniformBinning,
        fill_histograms,
        write_outputs,
    )
    from sigtune.reports._physics import merge_fine, read_fine_histograms

    rng = np.random.default_rng(3)
    xs = np.clip(rng.normal(0.6, 0.1, 2000), 0.0, 1.0)
    xb = rng.uniform(0.0, 1.0, 2000)
    fine = fill_histograms(
        [
            EventSample.from_arrays("signal", xs, np.full(2000, 0.005)),
            EventSample.from_arrays(
                "background",
                xb,
                np.full(2000, 0.05),
                weight_variations={"bkg_w": (np.full(2000, 0.052), np.full(2000, 0.048))},
            ),
        ],
        np.linspace(0.0, 1.0, 41),
        signal=["signal"],
    )
    obj = BinningObjective(fine, binning=UniformBinning(n_bins=(2, 8)), figure="z_asimov")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(obj, n_trials=6)
    run_dir = tmp_path / "run"
    res = write_outputs(obj, study, run_dir, plot=False)

    saved = read_fine_histograms(run_dir / "fine_histograms.npz")
    assert saved["samples"] == ["signal", "background"] and saved["signal"] == ["signal"]
    np.testing.assert_array_equal(saved["edges"], np.linspace(0.0, 1.0, 41))
    np.testing.assert_allclose(saved["counts"][0], fine.templates[0].counts)
    np.testing.assert_allclose(saved["counts"].sum(), 2000 * 0.005 + 2000 * 0.05)
    assert saved["variations"] == ["background/bkg_w"]
    np.testing.assert_allclose(saved["up"].sum(), 2000 * 0.052)

    edges = json.loads((run_dir / "summary.json").read_text())["edges"]
    merged = merge_fine(saved, edges)
    ws = json.loads((run_dir / "best_workspace.json").read_text())
    data = {s["name"]: s["data"] for s in ws["channels"][0]["samples"]}
    np.testing.assert_allclose(merged[0], data["signal"], rtol=1e-12)
    np.testing.assert_allclose(merged[1], data["background"], rtol=1e-12)
    assert res.files["fine_histograms"] == run_dir / "fine_histograms.npz"

    write_report(study, run_dir / "report.html", run_dir=run_dir)
    phys = (run_dir / "physics.html").read_text(encoding="utf-8")
    kinds = re.findall(r"data-kind='([\w-]+)'", phys)
    assert {"fine-binning", "z0-vs-bins", "binning", "postfit"} <= set(kinds)
    assert f"chosen binning ({len(edges) - 1} bins)" not in phys  # title is in the PNG only
    assert "Chosen binning over the fine histograms" in phys
