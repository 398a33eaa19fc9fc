"""optimize(), Study, load_study(): directions, Pareto front, constraints, enqueue, warm start,
resume-by-count, seeds, storage URLs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import sigtune
from sigtune._exceptions import ConfigError, RunFailedError
from sigtune._optuna_compat import trial_constraints
from sigtune._storage import EMBEDDED_FILENAME, StudyNotFoundError, resolve_storage
from sigtune._study import WARM_START_KEY, Study, load_study, optimize, pareto_mask


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -3.0, 3.0)
    y = trial.suggest_int("y", 0, 4)
    return (x - 1.0) ** 2 + y


def test_single_objective_best_is_minimum_over_trials() -> None:
    study = optimize(quadratic, 40, sampler="random", seed=3)
    assert isinstance(study, Study)
    values = [t.values[0] for t in study.trials]
    assert len(values) == 40
    assert study.best_value == min(values)
    assert study.best_params == study.best_trial.params
    # Oracle: Optuna's own best trial of the same study.
    assert study.best_trial.number == study.optuna.best_trial.number


def test_maximize_direction() -> None:
    study = optimize(quadratic, 30, direction="maximize", sampler="random", seed=1)
    assert study.directions == ["maximize"]
    assert study.best_value == max(t.values[0] for t in study.trials)


def test_space_objective_gets_full_params_dict() -> None:
    seen: list[dict[str, object]] = []

    def objective(params: dict[str, object], trial: optuna.Trial, scale: float) -> float:
        seen.append(params)
        return scale * float(params["x"]) ** 2  # type: ignore[arg-type]

    space = {"x": {"type": "range", "value_type": "float", "bounds": [-1, 1]}, "tag": "fixed"}
    study = optimize(
        objective, 5, space=space, sampler="random", seed=0, objective_kwargs={"scale": 2.0}
    )
    assert all(p["tag"] == "fixed" and -1 <= p["x"] <= 1 for p in seen)  # type: ignore[operator]
    assert study.best_params["tag"] == "fixed"
    assert study.best_value == pytest.approx(2.0 * study.best_params["x"] ** 2)


def _naive_pareto(points: np.ndarray) -> set[int]:
    front = set()
    for i, p in enumerate(points):
        if not any(np.all(q <= p) and np.any(q < p) for q in points):
            front.add(i)
    return front


def test_pareto_mask_against_naive_loop() -> None:
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 6, size=(80, 3)).astype(float)  # many ties and duplicates
    assert set(np.flatnonzero(pareto_mask(pts))) == _naive_pareto(pts)


def test_multi_objective_pareto_front_matches_optuna() -> None:
    def two(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 0, 1)
        y = trial.suggest_float("y", 0, 1)
        return x**2 + y, (1 - x) ** 2 - y

    study = optimize(two, 60, directions=["minimize", "maximize"], sampler="random", seed=5)
    ours = {t.number for t in study.best_trials}
    assert ours == {t.number for t in study.optuna.best_trials}
    front = study.pareto_front()
    assert [t.values[0] for t in front] == sorted(t.values[0] for t in front)
    with pytest.raises(ConfigError, match="best_trials"):
        _ = study.best_value


def test_constraints_function_feasible_first() -> None:
    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", -2, 2)

    study = optimize(
        objective, 40, sampler="random", seed=2, constraints=lambda t: [0.5 - t.params["x"]]
    )
    feasible = [t for t in study.trials if t.params["x"] >= 0.5]
    assert feasible and len(feasible) < 40
    assert study.best_value == min(t.values[0] for t in feasible)
    stored = trial_constraints(study.best_trial)  # FrozenTrial.constraints of newer Optuna
    assert stored == {"0": pytest.approx(0.5 - study.best_value)}
    # Optuna reads the same system attrs: its constrained best trial agrees.
    assert study.optuna.best_trial.number == study.best_trial.number


def test_constraints_from_user_attrs_and_least_violation_fallback() -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("constraints", [2.0 - x])  # never feasible; least violation: max x
        return x

    study = optimize(objective, 20, sampler="random", seed=4)
    # No feasible trial: the least-violating one (largest x) wins, not the smallest value.
    xs = [t.params["x"] for t in study.trials]
    assert study.best_params["x"] == max(xs)
    assert study.best_value > min(xs)

    def obj2(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("constraints", {"c": 0.3 - x})  # feasible iff x >= 0.3
        return x

    s2 = optimize(obj2, 30, sampler="random", seed=6)
    feasible = [t.values[0] for t in s2.trials if t.params["x"] >= 0.3]
    assert s2.best_value == min(feasible)
    assert s2.best_value >= 0.3


def test_no_complete_trial_raises_run_failed() -> None:
    def bad(trial: optuna.Trial) -> float:
        raise RuntimeError("nope")

    study = optimize(bad, 3, sampler="random")
    with pytest.raises(RunFailedError, match="no COMPLETE trial"):
        _ = study.best_value
    assert study.best_trials == []


def test_enqueue_runs_first_and_not_twice_on_resume(tmp_path: Path) -> None:
    points = [{"x": 0.25, "y": 2}, {"x": -1.0, "y": 0}]
    s1 = optimize(quadratic, 4, sampler="random", seed=0, enqueue=points, run_dir=tmp_path)
    first = [s1.trials[i].params for i in range(2)]
    assert first == points
    s2 = optimize(quadratic, 6, sampler="random", seed=0, enqueue=points, run_dir=tmp_path)
    matches = [t for t in s2.trials if t.params in points]
    assert len(s2.trials) == 6 and len(matches) == 2


def test_enqueue_with_space_uses_user_values() -> None:
    space = {"x": {"bounds": [0.0, 1.0]}, "k": {"values": ["a", "b"]}}
    study = optimize(
        lambda p, t: p["x"], 3, space=space, sampler="random", enqueue=[{"x": 0.5, "k": "b"}]
    )
    assert study.params_of(study.trials[0]) == {"x": 0.5, "k": "b"}


def test_n_trials_is_total_and_resume_runs_remainder(tmp_path: Path) -> None:
    s1 = optimize(quadratic, 7, sampler="random", seed=1, run_dir=tmp_path)
    assert (tmp_path / EMBEDDED_FILENAME).exists()
    assert s1.last_run is not None and s1.last_run.n_finished == 7
    s2 = optimize(quadratic, 12, sampler="random", seed=1, run_dir=tmp_path)
    assert s2.last_run is not None and s2.last_run.n_finished == 5
    assert len(s2.trials) == 12
    s3 = optimize(quadratic, 12, sampler="random", seed=1, run_dir=tmp_path)
    assert s3.last_run is None and len(s3.trials) == 12


def test_warm_start_copies_once_and_does_not_count(tmp_path: Path) -> None:
    src = optimize(quadratic, 10, sampler="random", seed=1, run_dir=tmp_path, study_name="old")
    new = optimize(
        quadratic,
        5,
        sampler="random",
        seed=2,
        run_dir=tmp_path,
        study_name="new",
        warm_start=(None, "old"),
    )
    copied = [t for t in new.trials if WARM_START_KEY in t.system_attrs]
    assert len(copied) == 10 and len(new.trials) == 15
    assert sorted(t.values[0] for t in copied) == sorted(t.values[0] for t in src.trials)
    assert new.best_value <= src.best_value
    again = optimize(
        quadratic,
        5,
        sampler="random",
        run_dir=tmp_path,
        study_name="new",
        warm_start={"storage": None, "study_name": "old"},
    )
    assert len(again.trials) == 15  # neither copied again nor counted
    with pytest.raises(ConfigError, match="no study 'missing'"):
        optimize(quadratic, 1, run_dir=tmp_path, study_name="x", warm_start=(None, "missing"))


def test_warm_start_from_study_object_in_memory() -> None:
    src = optimize(quadratic, 6, sampler="random", seed=0)
    new = optimize(quadratic, 2, sampler="random", seed=1, warm_start=src)
    assert len(new.trials) == 8


def _param_sequence(sampler: str, seed: int) -> list[tuple[float, int]]:
    study = optimize(quadratic, 25, sampler=sampler, seed=seed)
    return [(t.params["x"], t.params["y"]) for t in study.trials]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_sequential_seed_reproducibility(sampler: str) -> None:
    a, b = _param_sequence(sampler, 11), _param_sequence(sampler, 11)
    assert a == b
    assert _param_sequence(sampler, 12) != a


def test_seed_reproducible_in_a_separate_process(tmp_path: Path) -> None:
    code = (
        "import json, optuna, sigtune\n"
        "def f(t):\n"
        "    return (t.suggest_float('x', -3.0, 3.0) - 1.0) ** 2 + t.suggest_int('y', 0, 4)\n"
        "s = sigtune.optimize(f, 25, sampler='tpe', seed=11)\n"
        "print(json.dumps([[t.params['x'], t.params['y']] for t in s.trials]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    other = [tuple(p) for p in json.loads(out.stdout)]
    assert other == _param_sequence("tpe", 11)


def test_directions_mismatch_on_existing_study(tmp_path: Path) -> None:
    optimize(quadratic, 1, sampler="random", run_dir=tmp_path)
    with pytest.raises(ConfigError, match="directions"):
        optimize(quadratic, 2, sampler="random", run_dir=tmp_path, direction="maximize")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_trials": 0}, "n_trials must be an integer >= 1"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"direction": "up"}, "direction must be"),
        ({"direction": "minimize", "directions": ["minimize"]}, "either direction"),
        ({"max_failures": 1.5}, "fraction must be in"),
        ({"max_failures": -1}, "max_failures must be >= 0"),
        ({"timeout": 0}, "timeout must be a positive"),
        ({"trial_timeout": -2.0}, "trial_timeout"),
        ({"on_stale_running": "ignore"}, "on_stale_running"),
        ({"n_jobs": 2}, "n_jobs=2 runs worker processes"),
        ({"sampler": "nope"}, "unknown sampler"),
        ({"storage": "runs/x.txt"}, "neither a URL nor a path"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"n_trials": 2, **kwargs}
    with pytest.raises(ConfigError, match=match):
        optimize(quadratic, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("journal:///runs/a.journal", "journal"),
        ("runs/a.journal", "journal"),
        ("runs/a.log", "journal"),
        ("sqlite:///runs/a.db", "sqlite"),
        ("runs/a.db", "sqlite"),
        ("postgresql+psycopg2://u:secret@host:5432/db", "rdb"),
        ("mysql+pymysql://u@host/db", "rdb"),
    ],
)
def test_storage_url_kinds(url: str, kind: str) -> None:
    ref = resolve_storage(url, n_jobs=4)
    assert ref.kind == kind and ref.shareable
    if kind in ("journal", "sqlite"):
        assert ref.path is not None and ref.path.is_absolute()
        assert str(ref.path).endswith(url.rsplit("/", 1)[1])
    assert "secret" not in ref.describe()


def test_default_storage_is_memory_or_embedded(tmp_path: Path) -> None:
    assert resolve_storage(None).kind == "memory"
    ref = resolve_storage(None, run_dir=tmp_path, n_jobs=3)
    assert ref.kind == "journal" and ref.path == (tmp_path / EMBEDDED_FILENAME).resolve()
    with pytest.raises(ConfigError, match="journal storage URL"):
        resolve_storage("journal://relative.journal")


@pytest.mark.parametrize("scheme", ["journal", "sqlite"])
def test_load_study_roundtrip(tmp_path: Path, scheme: str) -> None:
    url = f"{scheme}:///{tmp_path}/s.{'journal' if scheme == 'journal' else 'db'}"
    optimize(quadratic, 5, sampler="random", seed=0, storage=url, study_name="a")
    loaded = load_study("a", url)
    assert len(loaded.trials) == 5
    assert loaded.best_value == min(t.values[0] for t in loaded.trials)
    with pytest.raises(StudyNotFoundError, match=r"no study 'b' .*found: a"):
        load_study("b", url)


def test_public_names_resolve() -> None:
    assert sigtune.optimize is optimize
    assert sigtune.load_study is load_study
    assert sigtune.Study is Study


def test_trials_dataframe_one_row_per_trial() -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("note", "n")
        if x > 0.7:
            raise ValueError("too big")
        return x

    study = optimize(objective, 15, sampler="random", seed=9)
    frame = study.trials_dataframe()
    assert len(frame) == 15
    assert list(frame.columns[:3]) == ["number", "state", "value_0"]
    assert {"params_x", "user_attrs_note", "duration_s", "fail_reason"} <= set(frame.columns)
    failed = frame[frame.state == "FAIL"]
    assert len(failed) == sum(t.state == TrialState.FAIL for t in study.trials) > 0
    assert (failed.fail_reason == "ValueError: too big").all()
    assert frame.value_0.min() == study.best_value


def test_force_forks_a_study_with_another_space(tmp_path: Path) -> None:
    def f(params: dict[str, float], trial: optuna.Trial) -> float:
        return sum(params.values())

    x = {"x": {"type": "range", "bounds": [0, 1]}}
    y = {"y": {"type": "range", "bounds": [0, 1]}}
    run = tmp_path / "run"
    optimize(f, 3, space=x, run_dir=run, sampler="random")
    with pytest.raises(ConfigError, match=r"another search space.*pass --force"):
        optimize(f, 3, space=y, run_dir=run, sampler="random")
    forked = optimize(f, 3, space=y, run_dir=run, sampler="random", force=True)
    assert forked.fork is not None and forked.fork.old_name == "sigtune"
    assert forked.study_name == "sigtune-2" and forked.fork.run_dir == tmp_path / "run-2"
    assert forked.n_finished() == 3 and set(forked.best_params) == {"y"}
    assert load_study("sigtune", run / EMBEDDED_FILENAME).n_finished() == 3
    # With an explicit storage URL the new study goes to the same database.
    db = f"sqlite:///{tmp_path}/s.db"
    optimize(f, 2, space=x, storage=db, study_name="s", sampler="random")
    other = optimize(f, 2, space=y, storage=db, study_name="s", sampler="random", force=True)
    assert other.study_name == "s-2" and load_study("s-2", db).n_finished() == 2
