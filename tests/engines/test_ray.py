"""The Ray engine on a real multi-node Ray cluster started on this machine.

The fixture starts ``ray.cluster_utils.Cluster``: a head node without CPUs (the driver, the
broker actor) and two worker nodes with one CPU each, so trials run on the worker nodes and a
worker node can be killed under a running trial.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

import sigtune
from sigtune._config import load_config
from sigtune._exceptions import ConfigError
from sigtune.cli import app
from sigtune.engines._ray import LOG_KEY, TRACEBACK_KEY, RayEngine

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.slow
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # as in a Ray instance that sigtune starts: trials at normal priority, so that a loaded
    # machine slows them down instead of starving them (Ray's default niceness is 15)
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p
    )
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    c.add_node(num_cpus=1)
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="WARNING")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _wait_for(cond: Any, what: str, limit_s: float = 120.0) -> None:
    """Wait until ``cond()`` is true (a condition, with a generous limit against hangs)."""
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _counts(study: sigtune.Study) -> dict[str, int]:
    return study.count()


# ---------------------------------------------------------------------- objectives
def _pruned_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    last = -1
    for step in range(5):
        trial.report(x + 0.1 * step, step)
        last = step
        trial.set_user_attr("last_step", last)
        if trial.should_prune():
            raise optuna.TrialPruned()
    print(f"trial {trial.number} finished with x={x:.3f}")
    return x


def _space_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -3.0, 3.0)
    n = trial.suggest_int("n", 1, 6)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    extra = trial.suggest_float("lr", 1e-4, 1e-1, log=True) if kind == "b" else 0.0
    return (x - 1) ** 2 + n + extra


def _failing_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    print(f"printed by trial {trial.number}")
    if trial.number % 2:
        raise RuntimeError(f"odd trial {trial.number}")
    return x


def _blocking_objective(trial: optuna.Trial, flag_dir: str, block: int) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    if trial.number == block:
        marker = Path(flag_dir) / "started"
        if not marker.exists():  # first attempt only: block until the test kills us
            # whole or not at all: the test reads it as soon as it exists (written in place, a
            # clean-clone run under load read it empty: StopIteration finding the node)
            part = Path(flag_dir) / "started.part"
            part.write_text(ray.get_runtime_context().get_node_id())
            os.replace(part, marker)
            while not (Path(flag_dir) / "release").exists():
                time.sleep(0.02)
    return x


# ---------------------------------------------------------------------- tests
def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_concurrent"):
        RayEngine(max_concurrent=0)
    with pytest.raises(ConfigError, match="whole number"):
        RayEngine(gpus_per_trial=1.5)
    cfg = load_config(
        {
            "n_trials": 3,
            "objective": "math:sqrt",
            "engine": "ray",
            "ray": {"gpus_per_trial": 0.25, "max_retries": 1, "runtime_env": {"env_vars": {}}},
        }
    )
    assert cfg.engine.name == "ray"
    assert cfg.engine_options == {
        "gpus_per_trial": 0.25,
        "max_retries": 1,
        "runtime_env": {"env_vars": {}},
    }
    engine = RayEngine(**cfg.engine_options)
    assert engine.gpus_per_trial == 0.25 and engine.max_retries == 1 and engine.cpus_per_trial == 1
    with pytest.raises(ConfigError):
        load_config({"n_trials": 3, "objective": "math:sqrt", "ray": {"cpus": 2}})


def test_pruning_on_ray_exact_count(cluster: Any, tmp_path: Path) -> None:
    study = sigtune.optimize(
        _pruned_objective,
        n_trials=12,
        sampler="random",
        seed=3,
        pruner="median",
        pruner_options={"n_startup_trials": 2, "n_warmup_steps": 0},
        run_dir=tmp_path,
        engine="ray",
        engine_options={"max_concurrent": 2},
    )
    counts = _counts(study)
    assert counts["COMPLETE"] + counts["PRUNED"] + counts["FAIL"] == 12
    assert counts["RUNNING"] == 0 and counts["FAIL"] == 0
    assert counts["PRUNED"] >= 1
    for t in study.trials:
        # every value reported on the worker reached the storage (and the pruner)
        assert sorted(t.intermediate_values) == list(range(t.user_attrs["last_step"] + 1))
        if t.state == TrialState.PRUNED:
            assert t.user_attrs["last_step"] < 4  # stopped on its worker
        else:
            assert "finished with" in t.system_attrs[LOG_KEY]  # per-trial output kept


def test_failures_keep_reason_and_traceback(cluster: Any, tmp_path: Path) -> None:
    study = sigtune.optimize(
        _failing_objective,
        n_trials=4,
        sampler="random",
        seed=0,
        run_dir=tmp_path,
        engine="ray",
        engine_options={"max_concurrent": 2},
    )
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert sorted(t.number for t in failed) == [1, 3]
    for t in failed:
        assert t.user_attrs["fail_reason"] == f"RuntimeError: odd trial {t.number}"
        assert "_failing_objective" in t.system_attrs[TRACEBACK_KEY]
    # findable from the CLI
    storage = f"journal:///{tmp_path}/study.journal"
    status = CliRunner().invoke(app, ["status", "--storage", storage])
    assert status.exit_code == 0, status.output
    assert "Trials with a traceback or output kept: [0, 1, 2, 3]" in status.output
    one = CliRunner().invoke(app, ["status", "--storage", storage, "--trial", "3"])
    assert one.exit_code == 0, one.output
    assert "Fail reason: RuntimeError: odd trial 3" in one.output
    assert "Traceback:" in one.output and "_failing_objective" in one.output
    zero = CliRunner().invoke(app, ["status", "--storage", storage, "--trial", "0", "--json"])
    assert "printed by trial 0" in zero.output
    bad = CliRunner().invoke(app, ["status", "--storage", storage, "--trial", "9"])
    assert bad.exit_code == 2 and "no trial 9" in bad.output


def test_local_and_ray_give_the_same_trials(cluster: Any, tmp_path: Path) -> None:
    common: dict[str, Any] = {"n_trials": 10, "sampler": "tpe", "seed": 7}
    sampler_options = {"n_startup_trials": 4}
    local = sigtune.optimize(
        _space_objective, run_dir=tmp_path / "local", sampler_options=sampler_options, **common
    )
    on_ray = sigtune.optimize(
        _space_objective,
        run_dir=tmp_path / "ray",
        sampler_options=sampler_options,
        engine="ray",
        engine_options={"max_concurrent": 1},
        **common,
    )
    assert [t.params for t in on_ray.trials] == [t.params for t in local.trials]
    assert [t.values for t in on_ray.trials] == [t.values for t in local.trials]


def _run_in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["study"] = fn()
        except BaseException as exc:
            box["error"] = exc

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, box


def test_ctrl_c_in_the_ray_driver_is_taken_at_the_loop() -> None:
    """The driver's SIGINT handler only records the first Ctrl-C; the loop raises it at its next
    pass (``check``), so it never lands inside a storage write or a finalizer, where Python
    drops it. A second Ctrl-C raises at once; the previous handler is back afterwards."""
    from sigtune.engines._ray import _DeferredInterrupt

    before = signal.getsignal(signal.SIGINT)
    with _DeferredInterrupt() as ctrl_c:
        ctrl_c.check()  # nothing pending
        os.kill(os.getpid(), signal.SIGINT)
        # the handler has run once the signal is delivered; it must not have raised
        _wait_for(lambda: ctrl_c.pending, "the first SIGINT to be recorded")
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.check()
        with pytest.raises(KeyboardInterrupt):  # the second one is not deferred
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: False, "the second SIGINT to raise")
    assert signal.getsignal(signal.SIGINT) is before


def test_trial_timeout_and_ctrl_c(cluster: Any, tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    # trial 1 never finishes: the driver cancels it after trial_timeout and the run goes on
    study = sigtune.optimize(
        _blocking_objective,
        n_trials=3,
        sampler="random",
        seed=0,
        trial_timeout=3.0,
        run_dir=tmp_path / "timeout",
        objective_kwargs={"flag_dir": str(flags), "block": 1},
        engine="ray",
        engine_options={"max_concurrent": 1},
    )
    (flags / "release").touch()  # should the cancellation have missed it: free its node
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert "trial_timeout=3s" in study.trials[1].user_attrs["fail_reason"]

    # Ctrl-C while a trial runs: it is marked FAIL (interrupted), KeyboardInterrupt is raised
    flags2 = tmp_path / "flags2"
    flags2.mkdir()
    ended = threading.Event()
    stacks = tmp_path / "stacks.txt"

    def interrupt() -> None:
        _wait_for((flags2 / "started").exists, "trial 0 to start")
        os.kill(os.getpid(), signal.SIGINT)
        if not ended.wait(120):  # a guard against a hang, not a timing assumption
            # Ctrl-C did not end the run: record where every thread is, then release the
            # blocked trial so that the run ends (the test fails below) and no Ray task is
            # left holding a worker node for the next tests
            with open(stacks, "w") as fh:
                faulthandler.dump_traceback(fh, all_threads=True)
            (flags2 / "release").touch()

    th = threading.Thread(target=interrupt, daemon=True)
    th.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sigtune.optimize(
                _blocking_objective,
                n_trials=3,
                sampler="random",
                seed=0,
                run_dir=tmp_path / "int",
                objective_kwargs={"flag_dir": str(flags2), "block": 0},
                engine="ray",
                engine_options={"max_concurrent": 1},
            )
    finally:
        ended.set()
        th.join()
        if stacks.exists():
            raise AssertionError(  # replaces pytest.raises' own failure
                "Ctrl-C did not end the Ray run within 120 s; threads then:\n" + stacks.read_text()
            )
    after = sigtune.load_study("sigtune", f"journal:///{tmp_path}/int/study.journal")
    assert [t.state for t in after.trials] == [TrialState.FAIL]
    assert after.trials[0].user_attrs["fail_reason"] == "interrupted"


@pytest.mark.parametrize("retries", [1, 0])
def test_killing_a_worker_node_loses_no_trial(cluster: Any, tmp_path: Path, retries: int) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    th, box = _run_in_thread(
        lambda: sigtune.optimize(
            _blocking_objective,
            n_trials=6,
            sampler="random",
            seed=1,
            run_dir=tmp_path / "run",
            objective_kwargs={"flag_dir": str(flags), "block": 2},
            engine="ray",
            engine_options={"max_concurrent": 2, "max_retries": retries},
        )
    )
    try:
        _wait_for((flags / "started").exists, "trial 2 to start")
        node_id = (flags / "started").read_text()
        victims = [n for n in cluster.worker_nodes if n.node_id == node_id]
        assert victims, (node_id, [n.node_id for n in cluster.worker_nodes])
        cluster.remove_node(victims[0])
    except BaseException:
        (flags / "release").touch()  # let the run end, or the module's cluster stays in use
        th.join(timeout=300)
        raise
    th.join(timeout=300)
    cluster.add_node(num_cpus=1)  # keep two worker nodes for the other tests
    cluster.wait_for_nodes()
    assert not th.is_alive(), "the run did not end"
    assert "error" not in box, box.get("error")
    study = box["study"]
    counts = _counts(study)
    assert sum(counts[s] for s in ("COMPLETE", "PRUNED", "FAIL")) == 6
    assert counts["RUNNING"] == 0
    t2 = study.trials[2]
    if retries:
        assert t2.state == TrialState.COMPLETE  # retried on the surviving node
        assert counts["COMPLETE"] == 6
    else:
        assert t2.state == TrialState.FAIL
        assert t2.user_attrs["fail_reason"].startswith("ray: ")
        assert counts["COMPLETE"] == 5  # every other trial finished and was kept


_DRIVER = """
import sys, time
from pathlib import Path
import ray, sigtune

FLAGS = "@FLAGS@"  # the objective runs on the workers: no sys.argv there


def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    if trial.number == 3:
        Path(FLAGS, "started").write_text("1")
        while True:
            time.sleep(0.05)  # blocks until the driver is killed
    return x

ray.init(address=sys.argv[1], logging_level="WARNING")
sigtune.optimize(objective, n_trials=8, sampler="random", seed=2, run_dir=sys.argv[3],
                 engine="ray", engine_options={"max_concurrent": 1})
"""


def _resume_objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


def test_resume_after_killing_the_driver(cluster: Any, tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(_DRIVER).replace("@FLAGS@", str(tmp_path)))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(
        [sys.executable, str(script), cluster.address, str(tmp_path), str(run_dir)], env=env
    )
    try:
        _wait_for(
            lambda: (tmp_path / "started").exists() or proc.poll() is not None,
            "the driver to reach trial 3",
            limit_s=240,
        )
        assert proc.poll() is None, "the driver ended early"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    study = sigtune.optimize(
        _resume_objective,
        n_trials=8,
        sampler="random",
        seed=2,
        run_dir=run_dir,
        engine="ray",
        engine_options={"max_concurrent": 1},
    )
    counts = _counts(study)
    assert counts["RUNNING"] == 0
    # The killed driver's running trial is FAILED and not counted towards n_trials (it is run
    # again, as on the local engine): 8 counted trials + that one.
    assert sum(counts[s] for s in ("COMPLETE", "PRUNED", "FAIL")) == 9
    assert [t.state for t in study.trials[:3]] == [TrialState.COMPLETE] * 3  # kept
    assert study.trials[3].state == TrialState.FAIL  # the killed driver's running trial
    assert counts["COMPLETE"] == 8
