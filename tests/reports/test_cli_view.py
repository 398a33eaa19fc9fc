"""``sigtune dashboard`` (a real optuna-dashboard server, read over HTTP and in Chromium),
``studies``, ``report``, ``physics``, ``status --failed`` and ``--version``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from _cdp import Page, keep_screenshot

import sigtune

SRC = Path(sigtune.__file__).resolve().parents[1]
WS = Path(__file__).resolve().parents[1] / "data" / "reports" / "physics_workspace.json"

OBJECTIVE = """
def objective(trial):
    x = trial.suggest_float("x", -3, 3)
    if x > 1.5:
        raise ValueError(f"x too large: {x:.3f}")
    return (x - 0.5) ** 2
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def _sigtune(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "sigtune.cli", *args],
        cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"sigtune {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run: 16 trials of which some failed with a traceback."""
    d = tmp_path_factory.mktemp("run")
    (d / "obj.py").write_text(OBJECTIVE)
    (d / "cfg.yaml").write_text(
        "study_name: demo\nrun_dir: runs/demo\nn_trials: 16\nseed: 3\nsampler: random\n"
        "objective: obj.py:objective\n"
    )
    _sigtune("run", "cfg.yaml", "-q", cwd=d)
    return d


def test_version(tmp_path: Path) -> None:
    out = _sigtune("--version", cwd=tmp_path).stdout
    assert out.strip() == f"sigtune {sigtune.__version__}"


def test_status_failed_shows_tracebacks(run: Path) -> None:
    study = optuna.load_study(
        study_name="demo", storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(run / "runs/demo/study.journal"))
        ),
    )  # fmt: skip
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed, "the seed must give failures"
    text = _sigtune("status", "cfg.yaml", "--failed", cwd=run).stdout
    for t in failed:
        assert f"--- trial {t.number} failed: ValueError: x too large: {t.params['x']:.3f}" in text
    assert text.count("Traceback (most recent call last):") == len(failed)
    assert 'obj.py", line 5, in objective' in text
    doc = json.loads(_sigtune("status", "cfg.yaml", "--failed", "--json", cwd=run).stdout)
    assert [r["number"] for r in doc["failed"]] == [t.number for t in failed]
    assert all("ValueError: x too large" in r["traceback"] for r in doc["failed"])
    # the report shows them too
    html = (run / "runs/demo/report.html").read_text()
    assert html.count("<details class='failure'") == len(failed)


def test_studies_lists_every_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    for name, n in (("alpha", 3), ("beta", 5)):
        s = optuna.create_study(study_name=name, storage=url)
        s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
    text = _sigtune("studies", "--storage", url, cwd=tmp_path).stdout
    assert text.startswith("2 studies in sqlite:///")
    assert re.search(r"alpha  \[minimize\]  3 trials \(3 complete\), best ", text)
    assert re.search(r"beta  \[minimize\]  5 trials \(5 complete\), best ", text)
    doc = json.loads(_sigtune("studies", "--storage", url, "--json", cwd=tmp_path).stdout)
    assert [(s["study_name"], s["n_trials"]) for s in doc["studies"]] == [("alpha", 3), ("beta", 5)]
    bad = _sigtune("studies", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_report_command_shared_and_offline(run: Path) -> None:
    out = _sigtune("report", "cfg.yaml", "-o", "rep/index.html", cwd=run).stdout
    assert out.strip() == "Report: rep/index.html"
    assert sorted(p.name for p in (run / "rep").iterdir()) == ["index.html", "plotly.min.js"]
    _sigtune("report", "cfg.yaml", "-o", "single.html", "--offline", cwd=run)
    text = (run / "single.html").read_text()
    assert text.count("plotly.js v") == 1 and "<script src=" not in text


def test_physics_command(tmp_path: Path) -> None:
    out = _sigtune("physics", str(WS), "-o", "phys.html", "--no-ranking", cwd=tmp_path).stdout
    assert out.strip() == "Physics page: phys.html"
    kinds = re.findall(r"data-kind='([\w-]+)'", (tmp_path / "phys.html").read_text())
    assert {"postfit", "pulls", "brazil", "nll-scan"} <= set(kinds) and "ranking" not in kinds
    bad = _sigtune("physics", "missing.json", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "no workspace file missing.json" in bad.stderr


# ---------------------------------------------------------------------- dashboard


class Dashboard:
    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sigtune.cli", "dashboard", *args, "--port", "0"],
            cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the server listens
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"no URL in {line!r}; stderr: {self.proc.stderr.read()}")
        self.url = match.group(1)
        self.first_line = line

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=120) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


@pytest.fixture
def dashboard_of(run: Path) -> Iterator[Any]:
    started: list[Dashboard] = []

    def start(*args: str) -> Dashboard:
        d = Dashboard(list(args), run)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def _check_api(d: Dashboard, name: str, n_trials: int) -> None:
    studies = d.get("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == [name]
    detail = d.get(f"/api/studies/{studies[0]['study_id']}?after=0")
    assert len(detail["trials"]) == n_trials
    assert {t["state"] for t in detail["trials"]} <= {"Complete", "Fail"}


def test_dashboard_on_the_runs_journal(run: Path, dashboard_of: Any, page: Page) -> None:
    d = dashboard_of("cfg.yaml")
    assert "journal:///" in d.first_line and d.url.startswith("http://127.0.0.1:")
    _check_api(d, "demo", 16)
    page.navigate(d.url + "dashboard")
    page.wait_js("document.body.innerText.includes('demo')", "the study name in the dashboard")
    assert page.console_errors() == []
    keep_screenshot(page.screenshot(run / "dashboard-studies.png"))
    study_id = d.get("/api/studies")["study_summaries"][0]["study_id"]
    page.navigate(f"{d.url}dashboard/studies/{study_id}")
    page.wait_js(
        "document.querySelectorAll('.js-plotly-plot .main-svg').length > 0",
        "the dashboard's history plot",
    )
    assert page.console_errors() == []
    keep_screenshot(page.screenshot(run / "dashboard-study.png"))


def test_dashboard_on_sqlite(tmp_path: Path, dashboard_of: Any, page: Page) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    s = optuna.create_study(study_name="sq", storage=url)
    s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=7)
    d = dashboard_of("--storage", url)
    _check_api(d, "sq", 7)
    page.navigate(d.url + "dashboard")
    page.wait_js("document.body.innerText.includes('sq')", "the study name in the dashboard")
    assert page.console_errors() == []


def test_dashboard_bad_port(run: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = _sigtune("dashboard", "cfg.yaml", "--port", str(port), cwd=run, check=False)
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def test_batch_progress_lines() -> None:
    import io

    from sigtune._progress import RunProgress

    now = [100.0]
    out = io.StringIO()
    bar = RunProgress(20, "demo", interval=30, stream=out, clock=lambda: now[0])
    assert bar.lines and not bar.enabled  # pytest's stderr is not a terminal
    with bar:
        bar.start(20, 4)
        for i, t in enumerate((10.0, 29.0, 31.0, 45.0, 62.0), start=1):
            now[0] = 100.0 + t
            bar.update(i, 1 if i > 2 else 0, 0.5 / i)
    lines = out.getvalue().splitlines()
    # at most one line per 30 s (t=31 and t=62), and a final one
    assert lines == [
        "[demo] 7/20 trials (1 failed), best 0.166667, 5.81 trials/min, elapsed 31s, ETA 134s",
        "[demo] 9/20 trials (1 failed), best 0.1, 4.84 trials/min, elapsed 62s, ETA 136s",
        "[demo] 9/20 trials (1 failed), best 0.1, 4.84 trials/min, elapsed 62s, ETA 136s (done)",
    ]
    quiet = io.StringIO()
    with RunProgress(5, "q", quiet=True, stream=quiet, interval=0) as bar2:
        bar2.update(5, 0, 1.0)
    assert quiet.getvalue() == ""


def test_run_with_tracking_and_auto_sampler(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    (tmp_path / "obj.py").write_text(OBJECTIVE)
    (tmp_path / "cfg.yaml").write_text(
        "study_name: tracked\nrun_dir: runs/t\nn_trials: 6\nseed: 5\n"
        "objective: obj.py:objective\ntracking: {mlflow: {}}\n"
    )
    proc = _sigtune("run", "cfg.yaml", cwd=tmp_path)
    # the auto choice and its reason, once, before the first trial's progress
    assert proc.stderr.count("sampler auto -> ") == 1
    assert "mlflow" not in proc.stderr.lower()
    assert proc.stdout.rstrip().endswith("Dashboard: sigtune dashboard cfg.yaml")
    assert "Report: runs/t/report.html" in proc.stdout
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'runs/t/mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tracked"])
    states = json.loads(_sigtune("status", "cfg.yaml", "--json", cwd=tmp_path).stdout)["counts"]
    assert len(runs) == 6
    assert (runs["status"] == "FINISHED").sum() == states.get("COMPLETE", 0)
    best = json.loads(_sigtune("best", "cfg.yaml", "--json", cwd=tmp_path).stdout)
    row = runs[runs["tags.sigtune.trial_number"] == str(best["best_trial"])].iloc[0]
    assert row["metrics.value"] == pytest.approx(best["best_value"])
    names = [a.path for a in mlflow.tracking.MlflowClient().list_artifacts(row["run_id"])]
    assert "report.html" in names


def test_stop_reason_is_printed(tmp_path: Path) -> None:
    (tmp_path / "obj.py").write_text(
        "def objective(trial):\n    return trial.suggest_float('x', 0, 1)\n\n"
        "def stop_after_three(study, trial):\n    if trial.number >= 2:\n        study.stop()\n"
    )
    (tmp_path / "cfg.yaml").write_text(
        "study_name: s\nn_trials: 20\nsampler: random\nreport: false\n"
        "objective: obj.py:objective\ncallbacks: ['obj.py:stop_after_three']\n"
    )
    proc = _sigtune("run", "cfg.yaml", cwd=tmp_path)
    assert (
        "Study 's': 3 complete (3 run now)\nRun stopped: study.stop() was called\n" in proc.stdout
    )


def test_failed_trial_warning_line(capsys: pytest.CaptureFixture[str]) -> None:
    from sigtune.reports._commands import warn_failed_trial

    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("fail_reason", "ValueError: bad x")
    frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
    warn_failed_trial(study, frozen)
    done = study.tell(study.ask(), 1.0)
    warn_failed_trial(study, done)  # only failures warn
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"warning: Trial 0 failed with parameters: {{'x': {frozen.params['x']}}} because of the "
        "following error: ValueError: bad x (sigtune status --failed shows the traceback)"
    ]


def test_hep_plot_writes_the_physics_page_of_the_same_workspace(tmp_path: Path) -> None:
    """`sigtune hep fit WS --json --plot PAGE`: the hep output is untouched (valid JSON), and the
    page's best-fit table shows the same fit as the hep command printed."""
    proc = _sigtune("hep", "fit", str(WS), "--json", "--plot", "fit.html", cwd=tmp_path)
    fit = json.loads(proc.stdout)
    assert "Physics page: fit.html" in proc.stderr
    page = (tmp_path / "fit.html").read_text(encoding="utf-8")
    kinds = re.findall(r"data-kind='([\w-]+)'", page)
    assert {"prefit", "postfit", "pulls", "brazil", "nll-scan"} <= set(kinds)
    rows = dict(re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", page))
    assert set(rows) == set(fit["parameters"])
    for name, par in fit["parameters"].items():
        assert float(rows[name]) == pytest.approx(par["value"], rel=1e-3, abs=1e-4), name
    bad = _sigtune("hep", "inspect", str(WS), "--plot", "x.html", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "--plot works with sigtune hep fit/" in bad.stderr
    assert not (tmp_path / "x.html").exists()
    failed = _sigtune("hep", "fit", "missing.json", "--plot", "y.html", cwd=tmp_path, check=False)
    assert failed.returncode != 0 and not (tmp_path / "y.html").exists()
