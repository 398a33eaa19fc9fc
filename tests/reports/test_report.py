"""Tests of the HTML report (sigtune.reports)."""

from __future__ import annotations

import base64
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from sigtune import ConfigError
from sigtune.reports import write_report

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _single_study() -> optuna.Study:
    study = optuna.create_study(study_name="single", sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(12):
        trial = study.ask()
        x = trial.suggest_float("x", -3, 3)
        c = trial.suggest_categorical("c", ["a", "<script>alert(1)</script>"])
        if i in (3, 7):
            trial.set_user_attr("fail_reason", f"ValueError: boom {i}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            trial.set_user_attr("note", "ok")
            study.tell(trial, x * x + (c != "a"))
    return study


def _multi_study() -> optuna.Study:
    study = optuna.create_study(
        study_name="multi",
        directions=["minimize", "maximize"],
        sampler=optuna.samplers.RandomSampler(seed=1),
    )
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=15)
    return study


def _rows(text: str, section: str) -> list[str]:
    body = text.split(f"<section id='{section}'>")[1].split("</section>")[0]
    return re.findall(r"<tr>(.*?)</tr>", body)


@pytest.mark.parametrize("backend", ["plotly", "matplotlib", "none"])
def test_single_objective_report(tmp_path: Path, backend: str) -> None:
    study = _single_study()
    path = write_report(study, tmp_path / "out" / "report.html", backend=backend)
    assert path == tmp_path / "out" / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # summary counts: oracle from the study itself
    assert "<td>complete</td><td>10</td>" in text and "<td>fail</td><td>2</td>" in text
    # best trial equals Optuna's
    best = study.best_trial
    best_rows = _rows(text, "best")
    assert f"<td>trial</td><td>{best.number}</td>" in best_rows
    assert f"<td>value</td><td>{best.value:.6g}</td>" in best_rows
    # every trial is in the table, with failure reasons
    assert len(_rows(text, "trials")) == 1 + 12  # header + trials
    assert "ValueError: boom 3" in text and "ValueError: boom 7" in text
    # user input is escaped
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    plots = text.split("<section id='plots'>")[1].split("</section>")[0]
    kinds = re.findall(r"data-kind='([\w-]+)'", plots)
    if backend == "none":
        assert kinds == [] and "pip install 'sigtune[report]'" in plots
        return
    expected = [
        "history", "importances", "importances-ped", "parallel", "contour", "slice", "edf",
        "timeline",
    ]  # fmt: skip
    assert kinds == expected
    assert "Not drawn" not in plots
    if backend == "plotly":
        assert plots.count("plotly-graph-div") == len(expected)
        # one shared plotly.js next to the page, referenced once, never inlined
        assert text.count("plotly.js v") == 0
        assert re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", text) == ["plotly.min.js"]
        assert "plotly.js v" in (path.parent / "plotly.min.js").read_text(encoding="utf-8")[:500]
    else:
        images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", plots)
        assert len(images) == len(expected)
        assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)


def test_offline_report_is_one_self_contained_file(tmp_path: Path) -> None:
    path = write_report(_single_study(), tmp_path / "report.html", offline=True)
    text = path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert text.count("plotly.js v") == 1  # plotly.js inlined exactly once
    assert not re.search(r"<script[^>]*\bsrc=", text)  # nothing loaded from elsewhere


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_multi_objective_report(tmp_path: Path, backend: str) -> None:
    study = _multi_study()
    path = write_report(study, tmp_path, backend=backend)
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    front = sorted(t.number for t in study.best_trials)
    rows = _rows(text, "best")
    assert f"Pareto front ({len(front)} trials)" in text
    shown = sorted(int(re.match(r"<td>(\d+)</td>", r).group(1)) for r in rows[1:])  # type: ignore[union-attr]
    assert shown == front
    kinds = re.findall(r"data-kind='([\w-]+)'", text)
    assert kinds[:2] == ["pareto", "hypervolume"]
    assert kinds.count("history") == 2 and kinds.count("importances") == 2
    assert kinds.count("importances-ped") == 2 and kinds.count("contour") == 2
    assert "objective 1 (maximize)" in text
    assert "Not drawn" not in text


def test_report_without_completed_trials(tmp_path: Path) -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("fail_reason", "TrialTimeoutError: took too long")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    text = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No trial completed" in text
    assert "No completed trial to plot" in text
    assert "TrialTimeoutError: took too long" in text


class _WrappedStudy:
    """Stands in for sigtune.Study: ``.optuna``, ``best_trial`` and ``params_of``."""

    def __init__(self, study: optuna.Study) -> None:
        self.optuna = study

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial:
        return self.optuna.trials[0]  # deliberately not Optuna's best: the wrapper decides

    def params_of(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return {**trial.params, "epochs": 30, "dropout": None}


def test_sigtune_study_wrapper_is_used(tmp_path: Path) -> None:
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    text = write_report(_WrappedStudy(study), tmp_path / "r.html", backend="none").read_text(
        encoding="utf-8"
    )
    assert "<td>trial</td><td>0</td>" in text
    assert "<td>param: epochs</td><td>30</td>" in text
    assert "<th>epochs</th>" in text and "<th>dropout</th>" in text


def test_auto_backend_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = _single_study()
    real = importlib.util.find_spec
    hidden: set[str] = {"plotly"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n in hidden else real(n, *a)
    )
    text = write_report(study, tmp_path / "a.html").read_text(encoding="utf-8")
    assert "<td>plots</td><td>matplotlib</td>" in text and "data:image/png;base64" in text
    hidden.add("matplotlib")
    text = write_report(study, tmp_path / "b.html").read_text(encoding="utf-8")
    assert "<td>plots</td><td>none</td>" in text and "data:image/png" not in text
    with pytest.raises(ConfigError, match="needs plotly"):
        write_report(study, tmp_path / "c.html", backend="plotly")
    with pytest.raises(ConfigError, match="needs matplotlib"):
        write_report(study, tmp_path / "c.html", backend="matplotlib")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs a sigtune\.Study or optuna\.Study"):
        write_report(object(), tmp_path / "x.html")
    with pytest.raises(ConfigError, match="backend must be"):
        write_report(optuna.create_study(), tmp_path / "x.html", backend="svg")  # type: ignore[arg-type]


def test_plotting_libraries_are_imported_lazily() -> None:
    code = (
        "import sys, sigtune.reports; "
        "print(sorted(m for m in ('matplotlib', 'plotly') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_feasibility_column_for_constrained_studies(tmp_path: Path) -> None:
    study = optuna.create_study()
    for x, cons in ((0.1, [-1.0]), (0.2, [0.5]), (0.3, None)):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        if cons is not None:
            trial.set_user_attr("constraints", cons)
        study.tell(trial, x)
    text = write_report(study, tmp_path / "r.html", backend="none").read_text(encoding="utf-8")
    assert "<th>feasible</th>" in text
    rows = _rows(text, "trials")[1:]
    assert "<td>True</td>" in rows[0] and "<td>False</td>" in rows[1]
    assert "<td>True</td>" not in rows[2] and "<td>False</td>" not in rows[2]
    plain = write_report(_single_study(), tmp_path / "p.html", backend="none").read_text(
        encoding="utf-8"
    )
    assert "<th>feasible</th>" not in plain


def test_summary_shows_the_auto_choice(tmp_path: Path) -> None:
    from sigtune import make_sampler

    sampler = make_sampler("auto", seed=0, space={"x": {"bounds": [0, 1]}}, n_trials=20)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    text = write_report(study, tmp_path / "r.html", backend="none").read_text(encoding="utf-8")
    assert (
        "<td>sampler</td><td>AutoSampler -&gt; gp (numeric space of dimension 1, budget 20)</td>"
        in text
    )


def test_ml_page_shows_the_variable_selection_history(tmp_path: Path) -> None:
    """A real varsel result, stored as the ML pipeline stores it (<run_dir>/varsel/done.json),
    appears on ml.html: one row per iteration with its dropped variable, size, metric and
    acceptance, and the plotted metrics are the history's."""
    from sigtune.pipelines.ml._pipeline import _write_done
    from sigtune.pipelines.ml._varsel import select_variables

    informative, noise = ("a", "b"), ("n1", "n2")

    def metric(variables: tuple[str, ...]) -> float:
        return (
            1.0
            - 0.1 * sum(v in informative for v in variables)
            + 0.01 * sum(v in noise for v in variables)
        )

    res = select_variables(
        features=informative + noise,
        mode="custom",
        custom=metric,
        direction="minimize",
        acceptance="improvement",
        patience=1,
    )
    run_dir = tmp_path / "run"
    _write_done(run_dir / "varsel", {"params": {}, **res.to_dict()})
    study = optuna.create_study()
    for i in range(3):
        t = study.ask()
        t.suggest_float("x", 0, 1)
        for step in range(3):
            t.report(1.0 / (step + 1 + i), step)
        study.tell(t, 1.0 / (3 + i))
    write_report(study, run_dir / "report.html", run_dir=run_dir)
    page = (run_dir / "ml.html").read_text(encoding="utf-8")
    assert "data-kind='varsel'" in page and "Variable-selection history (varsel/done.json)" in page
    rows = re.findall(
        r"<tr><td>(\d+)</td><td>([^<]*)</td><td>(\d+)</td><td>([^<]+)</td><td>[^<]+</td>"
        r"<td>(yes|no)</td></tr>",
        page,
    )
    assert len(rows) == len(res.history) == 4  # baseline, n1, n2 accepted, one rejected drop
    for (it, step, n_vars, value, ok), want in zip(rows, res.history, strict=True):
        assert int(it) == want.iteration and int(n_vars) == len(want.variables)
        assert float(value) == pytest.approx(want.metric, rel=1e-6)
        assert (ok == "yes") == want.accepted
        assert step == ("all variables" if want.dropped is None else f"- {want.dropped}")
    assert {r[1] for r in rows[1:3]} == {"- n1", "- n2"} and rows[3][4] == "no"
    from sigtune.reports._pages import _varsel_figure, varsel_histories

    (found, doc), *more = varsel_histories(run_dir)
    assert found == run_dir / "varsel" / "done.json" and not more
    trace = _varsel_figure(doc).data[0]
    assert list(trace.y) == pytest.approx([it.metric for it in res.history])
    assert "Selected: a, b" in page
    assert f"{metric(informative):.6g}" == rows[2][3]
