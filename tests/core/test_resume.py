"""Kill -9 and resume, on the embedded journal storage and on a real PostgreSQL server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from _postgres import PostgresServer, postgres_server  # noqa: F401  (fixture)
from _procs import kill_group
from optuna.trial import TrialState

from sigtune._storage import (
    OWNER_KEY,
    STALE_REASON,
    StudyNotFoundError,
    current_owner,
    handle_stale_running,
    owner_is_alive,
)
from sigtune._study import load_study, optimize

N_TRIALS = 24

_OBJECTIVE = """
import os, time

def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    # First run: trials from number 4 on hang, so the kill always finds RUNNING trials.
    if os.environ.get("SIGTUNE_TEST_HANG") and trial.number >= 4:
        time.sleep(120)
    return x
"""


def _write_config(tmp_path: Path, on_stale: str) -> Path:
    (tmp_path / "obj.py").write_text(textwrap.dedent(_OBJECTIVE))
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"study_name: resume\nrun_dir: {tmp_path}/run\nn_trials: {N_TRIALS}\nn_jobs: 2\n"
        f"sampler: random\nseed: 1\nobjective: obj.py:objective\nreport: false\n"
        f"on_stale_running: {on_stale}\n"
    )
    return config


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sigtune.cli", *args]


def _kill_mid_run(cmd: list[str], storage: str) -> dict[int, float]:
    """Start ``cmd`` (hanging objective), SIGKILL its process group once trials are RUNNING."""
    env = {**os.environ, "SIGTUNE_TEST_HANG": "1"}
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        end = time.monotonic() + 90
        while True:
            assert time.monotonic() < end, "the run never reached the hanging trials"
            assert proc.poll() is None, proc.communicate()
            try:
                trials = load_study("resume", storage).trials
            except Exception:  # study not created yet
                trials = []
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            # Wait until the hanging trials have suggested their parameters (a trial killed
            # before that has nothing to requeue): RUNNING alone is not enough.
            hanging = [t for t in trials if t.state == TrialState.RUNNING and "x" in t.params]
            if len(complete) >= 4 and len(hanging) >= 2:
                break
            time.sleep(0.1)
    finally:
        kill_group(proc)  # parent and worker processes, waiting until each has exited
    before = load_study("resume", storage)
    assert before.count()["RUNNING"] == 2
    return {t.number: t.values[0] for t in before.trials if t.state == TrialState.COMPLETE}


def _check_resumed(storage: str, complete_before: dict[int, float], on_stale: str) -> None:
    study = load_study("resume", storage)
    by_number = {t.number: t for t in study.trials}
    for number, value in complete_before.items():  # every completed trial kept unchanged
        assert by_number[number].state == TrialState.COMPLETE
        assert by_number[number].values[0] == value
    stale = [t for t in study.trials if t.user_attrs.get("fail_reason") == STALE_REASON]
    assert len(stale) == 2
    assert study.count()["RUNNING"] == 0
    assert study.n_finished() == N_TRIALS
    if on_stale == "requeue":
        requeued = [t for t in study.trials if "sigtune:requeued_from" in t.user_attrs]
        assert sorted(t.user_attrs["sigtune:requeued_from"] for t in requeued) == sorted(
            t.number for t in stale
        )
        for t in requeued:
            assert t.state == TrialState.COMPLETE
            assert t.params == by_number[t.user_attrs["sigtune:requeued_from"]].params


@pytest.mark.slow
@pytest.mark.parametrize("on_stale", ["fail", "requeue"])
def test_kill9_and_resume_embedded(tmp_path: Path, on_stale: str) -> None:
    config = _write_config(tmp_path, on_stale)
    storage = str(tmp_path / "run" / "study.journal")
    complete_before = _kill_mid_run(_cli("run", str(config), "--quiet"), storage)
    done = subprocess.run(
        _cli("resume", str(config), "--quiet"), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    _check_resumed(storage, complete_before, on_stale)


@pytest.mark.slow
@pytest.mark.postgres
def test_kill9_and_resume_postgres(
    tmp_path: Path,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    url = postgres_server.new_database()
    config = _write_config(tmp_path, "fail")
    complete_before = _kill_mid_run(_cli("run", str(config), "--storage", url, "--quiet"), url)
    done = subprocess.run(
        _cli("run", str(config), "--storage", url, "--quiet"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    _check_resumed(url, complete_before, "fail")


def test_live_worker_trials_are_not_touched(tmp_path: Path) -> None:
    storage = str(tmp_path / "live.journal")
    script = tmp_path / "hang.py"
    script.write_text(
        "import sys, time, sigtune\n"
        "def f(trial):\n"
        "    trial.suggest_float('x', 0, 1)\n"
        "    time.sleep(120)\n"
        "sigtune.optimize(f, 1, sampler='random', storage=sys.argv[1], study_name='live')\n"
    )
    proc = subprocess.Popen([sys.executable, str(script), storage])
    try:
        end = time.monotonic() + 60
        while True:
            assert time.monotonic() < end and proc.poll() is None
            try:
                if load_study("live", storage).count()["RUNNING"] == 1:
                    break
            except StudyNotFoundError:  # the journal exists before the study is in it
                pass
            time.sleep(0.05)
        # A second run on the same study while the first process is alive leaves its trial alone.
        study = optimize(
            lambda t: t.suggest_float("x", 0, 1), 3, storage=storage, study_name="live"
        )
        running = [t for t in study.trials if t.state == TrialState.RUNNING]
        assert len(running) == 1
        assert running[0].system_attrs[OWNER_KEY].split(":")[1] == str(proc.pid)
        assert handle_stale_running(study.optuna) == []
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # Now its owner is dead: the trial is stale.
    marked = handle_stale_running(load_study("live", storage).optuna)
    assert marked == [running[0].number]
    trial = load_study("live", storage).trials[marked[0]]
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == STALE_REASON


def test_owner_ids() -> None:
    me = current_owner()
    host, pid, start = me.rsplit(":", 2)
    assert host == socket.gethostname() and int(pid) == os.getpid()
    assert owner_is_alive(me) is True
    assert owner_is_alive(f"{host}:{pid}:{int(start) + 1}") is False  # pid reused
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert owner_is_alive(f"{host}:{child.stdout.strip()}:1") is False
    assert owner_is_alive("some-other-host:1:1") is None
    assert owner_is_alive("garbage") is None


def test_trials_without_owner_are_left_alone(tmp_path: Path) -> None:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "raw.journal"))
    )
    raw = optuna.create_study(storage=storage, study_name="raw")
    raw.ask()  # a RUNNING trial created by plain Optuna (no owner)
    assert handle_stale_running(raw) == []
    assert raw.trials[0].state == TrialState.RUNNING


def test_workers_stop_when_parent_is_killed(tmp_path: Path) -> None:
    storage = str(tmp_path / "orphans.journal")
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, time, sigtune\n"
        "def f(trial):\n"
        "    trial.suggest_float('x', 0, 1)\n"
        "    time.sleep(0.1 if trial.number < 4 else 60)\n"
        "    return 1.0\n"
        "sigtune.optimize(f, 100, sampler='random', storage=sys.argv[1], n_jobs=2)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script), storage])
    try:
        end = time.monotonic() + 120
        while True:
            assert time.monotonic() < end and proc.poll() is None
            try:
                counts = load_study("sigtune", storage).count()
            except StudyNotFoundError:  # not created yet
                continue
            finally:
                time.sleep(0.05)
            if counts["COMPLETE"] >= 4 and counts["RUNNING"] == 2:
                break
    finally:
        proc.kill()  # SIGKILL to the parent only
        proc.wait(timeout=30)
    # The workers get SIGINT from the kernel (PR_SET_PDEATHSIG): they mark their trials and exit.
    end = time.monotonic() + 120
    while load_study("sigtune", storage).count()["RUNNING"] and time.monotonic() < end:
        time.sleep(0.05)
    study = load_study("sigtune", storage)
    assert study.count()["RUNNING"] == 0
    reasons = [t.user_attrs.get("fail_reason") for t in study.trials if t.state == TrialState.FAIL]
    assert reasons == ["interrupted", "interrupted"]


def test_flock_journal_lock_excludes_and_dies_with_holder(tmp_path: Path) -> None:
    from sigtune._storage import FlockLock

    path = str(tmp_path / "x.journal")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from sigtune._storage import FlockLock\n"
            "FlockLock(sys.argv[1]).acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
            path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        probe = (
            "import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1] + '.flock', os.O_RDWR)\n"
            "try:\n"
            "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "except BlockingIOError:\n"
            "    sys.exit(3)\n"
        )
        busy = subprocess.run([sys.executable, "-c", probe, path], timeout=30)
        assert busy.returncode == 3  # held by the other process
    finally:
        holder.kill()  # killed while holding the lock
        holder.wait(timeout=30)
    # Released by the kernel at once (Optuna's symlink lock waits 30 s): free without waiting.
    free = subprocess.run([sys.executable, "-c", probe, path], timeout=60)
    assert free.returncode == 0
    lock = FlockLock(path)
    assert lock.acquire()
    lock.release()
