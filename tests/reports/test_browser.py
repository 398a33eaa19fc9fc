"""Reports opened in a real headless Chromium: every plot present and rendered, no console error,
one screenshot per page; the offline single file works with the network disabled."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from _cdp import Page, keep_screenshot

from sigtune.reports import write_report

optuna.logging.set_verbosity(optuna.logging.ERROR)

WS = Path(__file__).resolve().parents[1] / "data" / "reports" / "physics_workspace.json"

RENDERED = """(() => {
  const divs = [...document.querySelectorAll('.plotly-graph-div')];
  const imgs = [...document.querySelectorAll('figure.plot img')];
  return divs.every(d => d.querySelector('.main-svg') !== null)
      && imgs.every(i => i.complete && i.naturalWidth > 0);
})()"""
KINDS = "[...document.querySelectorAll('figure.plot')].map(f => f.dataset.kind)"
DRAWN = """[...document.querySelectorAll('figure.plot')].filter(f =>
  f.querySelector('.plotly-graph-div .main-svg') !== null
  || (f.querySelector('img') && f.querySelector('img').naturalWidth > 0)).length"""


def _single(tmp: Path) -> tuple[optuna.Study, Path | None]:
    study = optuna.create_study(study_name="single", sampler=optuna.samplers.TPESampler(seed=0))

    def objective(t: optuna.Trial) -> float:
        x, y = t.suggest_float("x", -3, 3), t.suggest_int("y", 0, 4)
        t.suggest_categorical("act", ["relu", "tanh"])
        t.set_user_attr("constraints", [x - 2.0])
        return x * x + y

    study.optimize(objective, n_trials=20)
    return study, None


def _multi(tmp: Path) -> tuple[optuna.Study, Path | None]:
    study = optuna.create_study(
        study_name="multi", directions=["minimize", "maximize"],
        sampler=optuna.samplers.RandomSampler(seed=1),
    )  # fmt: skip
    study.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), n_trials=20)
    return study, None


def _pruned_ml(tmp: Path) -> tuple[optuna.Study, Path | None]:
    study = optuna.create_study(
        study_name="ml", sampler=optuna.samplers.RandomSampler(seed=2),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )  # fmt: skip

    def objective(t: optuna.Trial) -> float:
        lr = t.suggest_float("lr", 1e-4, 1e-1, log=True)
        width = t.suggest_int("width", 8, 64)
        losses = []
        for epoch in range(8):
            loss = abs(np.log10(lr) + 2) + 1.0 / (epoch + 1) + 8 / width
            losses.append(loss)
            t.set_user_attr("history", {"val_loss": losses})
            t.report(loss, epoch)
            if t.should_prune():
                raise optuna.TrialPruned()
        t.set_user_attr("epochs", 8)
        return loss

    study.optimize(objective, n_trials=15)
    assert any(t.state.name == "PRUNED" for t in study.trials)
    run_dir = tmp / "ml-run"
    (run_dir / "evaluation").mkdir(parents=True)
    fpr = np.linspace(0, 1, 20)
    (run_dir / "evaluation" / "roc.json").write_text(
        f'{{"test": {{"auc": 0.9, "fpr": {fpr.tolist()}, "tpr": {np.sqrt(fpr).tolist()}}}}}'
    )
    (run_dir / "cv.json").write_text('{"folds": [0.81, 0.84, 0.79, 0.83]}')
    return study, run_dir


def _binning(tmp: Path) -> tuple[optuna.Study, Path | None]:
    run_dir = tmp / "binning-run"
    run_dir.mkdir()
    shutil.copy(WS, run_dir / "best_workspace.json")
    study = optuna.create_study(study_name="binning", direction="maximize")
    for n in (3, 5, 8, 12, 20):
        t = study.ask()
        t.suggest_int("n_bins", 3, 40)
        t.set_user_attr("n_bins", n)
        t.set_user_attr("edges", list(np.linspace(0, 1, n + 1)))
        study.tell(t, 2.0 - (n - 8) ** 2 / 100)
    return study, run_dir


CASES = {
    "single": (_single, {"report.html": ["history", "importances", "importances-ped", "parallel",
                                         "contour", "slice", "edf", "timeline", "feasibility"]}),
    "multi": (_multi, {"report.html": ["pareto", "hypervolume", "history", "importances",
                                       "importances-ped", "parallel", "contour", "slice", "edf",
                                       "timeline"]}),
    "pruned-ml": (_pruned_ml, {"report.html": ["history", "intermediate", "timeline"],
                               "ml.html": ["learning-curves", "metrics", "roc", "cv"]}),
    "binning": (_binning, {"report.html": ["history", "slice", "edf", "timeline"],
                           "physics.html": ["prefit", "postfit", "pulls", "ranking", "brazil",
                                            "nll-scan", "z0-vs-bins", "binning"]}),
}  # fmt: skip


def _check_page(page: Page, path: Path, expected: list[str], shot: Path) -> None:
    page.navigate(path.as_uri())
    page.wait_js(RENDERED, f"every plot of {path.name} rendered")
    kinds = page.evaluate(KINDS)
    assert set(expected) <= set(kinds), f"missing: {set(expected) - set(kinds)}"
    assert page.evaluate(DRAWN) == len(kinds)  # every figure drew (no 'Not drawn')
    assert "Not drawn" not in page.evaluate("document.body.innerText")
    assert page.console_errors() == []
    keep_screenshot(page.screenshot(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_report_pages_render(case: str, tmp_path: Path, page: Page) -> None:
    build, pages = CASES[case]
    study, run_dir = build(tmp_path)
    out = write_report(study, tmp_path / "report" / "report.html", run_dir=run_dir)
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == sorted(["plotly.min.js", *pages])  # one plotly.js for all pages
    for name, expected in pages.items():
        shot = tmp_path / f"report-{case}-{name.removesuffix('.html')}.png"
        _check_page(page, out.parent / name, expected, shot)
        if len(pages) > 1:  # the pages link to each other
            links = page.evaluate("[...document.querySelectorAll('nav a')].map(a => a.href)")
            assert {Path(u).name for u in links} == set(pages)


def test_offline_file_works_without_network(tmp_path: Path, page: Page) -> None:
    study, run_dir = _pruned_ml(tmp_path)
    written = write_report(study, tmp_path / "offline.html", offline=True, run_dir=run_dir)
    alone = tmp_path / "alone"
    alone.mkdir()
    moved = shutil.copy(written, alone / "report.html")  # nothing next to it
    page.send("Network.emulateNetworkConditions", offline=True, latency=0,
              downloadThroughput=-1, uploadThroughput=-1)  # fmt: skip
    try:
        _check_page(page, Path(moved), ["history", "intermediate", "learning-curves", "roc"],
                    tmp_path / "report-offline.png")  # fmt: skip
        assert [u for u in page.requests() if not u.startswith(("file:", "data:"))] == []
    finally:
        page.send("Network.emulateNetworkConditions", offline=False, latency=0,
                  downloadThroughput=-1, uploadThroughput=-1)  # fmt: skip
