"""The progress display: counts reach the total, best value shown, quiet shows nothing."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sigtune._progress import RunProgress
from sigtune._run import ProgressSink
from sigtune._study import run_study


class _Recorder(ProgressSink):
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, float | None]] = []
        self.started: list[tuple[int, int]] = []

    def start(self, total: int, done: int) -> None:
        self.started.append((total, done))

    def update(self, done: int, failed: int, best: float | None) -> None:
        self.calls.append((done, failed, best))


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0, 1)
    if trial.number == 0:
        raise ValueError("first fails")
    return x


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_progress_receives_final_counts_and_best(tmp_path: Path, n_jobs: int) -> None:
    sink = _Recorder()
    study = run_study(
        _objective, 20, sampler="random", seed=1, n_jobs=n_jobs, run_dir=tmp_path, progress=sink
    )
    done, failed, best = sink.calls[-1]
    assert (done, failed) == (20, 1)
    assert best == study.best_value
    assert all(a[0] <= b[0] for a, b in zip(sink.calls, sink.calls[1:], strict=False))


def test_rich_bar_renders_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with RunProgress(10, "demo", force=True) as bar:
        bar.update(10, 2, 0.125)
    err = capsys.readouterr().err
    assert "demo" in err and "10/10" in err and "failed 2" in err and "best 0.125" in err


def test_quiet_bar_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with RunProgress(10, "demo", quiet=True, force=True) as bar:
        bar.update(5, 0, None)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_resumed_run_reports_offset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_study(_objective, 5, sampler="random", run_dir=tmp_path)
    sink = _Recorder()
    run_study(_objective, 8, sampler="random", run_dir=tmp_path, progress=sink)
    assert sink.started == [(8, 5)] and sink.calls[-1][0] == 3
    with RunProgress(3, "demo", force=True) as bar:
        bar.start(8, 5)
        bar.update(3, 0, None)
    assert "8/8" in capsys.readouterr().err


def _constrained(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0, 1)
    trial.set_user_attr("constraints", [0.5 - x])  # feasible only for x >= 0.5
    return x


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_progress_best_is_the_best_feasible_value(tmp_path: Path, n_jobs: int) -> None:
    # The progress line used to show the best value of any trial, infeasible ones included
    # (a binning demo showed 2.0219 while the best feasible Z0 was 2.0108).
    sink = _Recorder()
    study = run_study(
        _constrained, 20, sampler="random", seed=3, n_jobs=n_jobs, run_dir=tmp_path, progress=sink
    )
    values = [t.value for t in study.trials if t.value is not None]
    assert min(values) < 0.5  # some infeasible trial beats every feasible one
    feasible = [v for v in values if v >= 0.5]
    assert sink.calls[-1][2] == pytest.approx(min(feasible))
    assert sink.calls[-1][2] == pytest.approx(study.best_value)


def _plain(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0, 1)


def _set_constraint(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0, 1)
    trial.set_constraint("x_low", 0.5 - x)  # Optuna >= 5
    return x


def _x_low(frozen: optuna.trial.FrozenTrial) -> list[float]:
    return [0.5 - frozen.params["x"]]


@pytest.mark.filterwarnings("ignore:`constraints_func` has been deprecated:FutureWarning")
@pytest.mark.parametrize(
    "route", ["user_attrs", "set_constraint", "run_constraints", "sampler_constraints_func"]
)
@pytest.mark.parametrize("storage", ["memory", "journal", "sqlite"])
def test_progress_best_skips_infeasible_trials_whoever_sets_the_constraints(
    tmp_path: Path, route: str, storage: str
) -> None:
    """The progress value of a trial is found without reading the finished trial back from the
    storage: each way a trial gets its constraints must still make it infeasible there."""
    if route == "set_constraint" and not hasattr(optuna.Trial, "set_constraint"):
        pytest.skip("Trial.set_constraint is Optuna >= 5")
    objective: object = {"user_attrs": _constrained, "set_constraint": _set_constraint}.get(
        route, _plain
    )
    options: dict[str, object] = {"sampler": "random", "seed": 3}
    if route == "run_constraints":
        options["constraints"] = _x_low
    if route == "sampler_constraints_func":
        options["sampler"] = optuna.samplers.TPESampler(
            seed=3, constraints_func=_x_low, n_startup_trials=20
        )
        options.pop("seed")
    url = {"memory": None, "journal": f"journal:///{tmp_path}/s.journal"}.get(
        storage, f"sqlite:///{tmp_path}/s.db"
    )
    sink = _Recorder()
    study = run_study(objective, 20, storage=url, progress=sink, **options)  # type: ignore[arg-type]
    values = [t.value for t in study.trials if t.value is not None]
    assert min(values) < 0.5  # some infeasible trial beats every feasible one
    feasible = [v for v in values if v >= 0.5]
    assert sink.calls[-1][2] == pytest.approx(min(feasible))
