"""Worker processes under faults: crashes, stuck C code, sys.exit, child processes, races.

No test here waits on wall time: each waits on a condition (a file, a trial state) or on the run
itself ending. Objectives that hang do so for far longer than any limit, so a broken watchdog
shows up as the pytest timeout, never as a lucky pass.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from _postgres import PostgresServer, postgres_server  # noqa: F401  (fixture)
from _procs import kill_group
from optuna.trial import TrialState

from sigtune._exceptions import ConfigError
from sigtune._storage import OWNER_KEY, STALE_REASON, _process_start, handle_stale_running
from sigtune._study import load_study, optimize
from sigtune.engines._workers import RETRY_KEY, death_reason


def test_death_reasons_name_the_signal() -> None:
    assert death_reason(-11) == "worker killed by signal 11 (SIGSEGV)"
    assert death_reason(-9).startswith("worker killed by signal 9 (SIGKILL; out of memory?")
    assert death_reason(3) == "worker exited with code 3"


def test_segfault_is_recorded_retried_once_and_the_worker_replaced(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if x == 0.25:  # the enqueued point: crashes every time
            os.kill(os.getpid(), signal.SIGSEGV)
        return x

    study = optimize(
        objective,
        10,
        sampler="random",
        n_jobs=2,
        run_dir=tmp_path,
        enqueue=[{"x": 0.25}],
    )
    crashed = [t for t in study.trials if t.params.get("x") == 0.25]
    assert [t.state for t in crashed] == [TrialState.FAIL, TrialState.FAIL]  # retried once only
    assert crashed[0].user_attrs["fail_reason"] == (
        "worker killed by signal 11 (SIGSEGV); retried once"
    )
    assert crashed[1].user_attrs["fail_reason"] == "worker killed by signal 11 (SIGSEGV)"
    assert crashed[1].user_attrs[RETRY_KEY] == crashed[0].number
    # The run went on with new workers and ends with n_trials counted trials.
    assert study.n_finished() == 10 and study.count()["COMPLETE"] == 9
    assert study.count()["RUNNING"] == 0


def test_isolate_segfault_with_one_job_is_a_failed_trial(tmp_path: Path) -> None:
    parent = os.getpid()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        assert os.getpid() != parent  # isolate: never in the calling process
        if x == 0.25:  # the enqueued point: a real segfault in C, every time
            ctypes.string_at(0)
        return x

    study = optimize(
        objective,
        6,
        sampler="random",
        n_jobs=1,
        isolate=True,
        run_dir=tmp_path,
        seed=1,
        enqueue=[{"x": 0.25}],
    )
    crashed = [t for t in study.trials if t.params.get("x") == 0.25]
    assert [t.state for t in crashed] == [TrialState.FAIL, TrialState.FAIL]  # retried once only
    assert crashed[0].user_attrs["fail_reason"] == (
        "worker killed by signal 11 (SIGSEGV); retried once"
    )
    assert crashed[1].user_attrs["fail_reason"] == "worker killed by signal 11 (SIGSEGV)"
    assert study.n_finished() == 6 and study.count()["COMPLETE"] == 5
    assert study.count()["RUNNING"] == 0


def test_isolate_trial_stuck_in_c_code_with_one_job(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # like a long C call
            time.sleep(3600)
        return x

    study = optimize(
        objective, 3, sampler="random", trial_timeout=1.0, isolate=True, run_dir=tmp_path
    )
    assert study.trials[1].state == TrialState.FAIL
    assert "stuck in a call" in study.trials[1].user_attrs["fail_reason"]
    assert study.count()["COMPLETE"] == 2


def test_isolate_needs_a_shareable_storage() -> None:
    with pytest.raises(ConfigError, match="isolate=True runs the trials in a worker process"):
        optimize(lambda t: t.suggest_float("x", 0, 1), 2, isolate=True)


def test_dead_worker_trial_found_by_published_id_not_only_by_stamp(tmp_path: Path) -> None:
    # Two workers popping one enqueued trial: the loser's owner stamp can land after the
    # winner's, so the trial a worker runs may carry another worker's stamp.
    from sigtune._optuna_compat import trial_id
    from sigtune.engines._workers import fail_dead_worker_trials

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    host = socket.gethostname()
    runs_a = study.ask()  # worker A (pid 1001) runs it, but B's stamp landed last
    runs_b = study.ask()  # worker B (pid 1002) runs it, stamped by B
    storage = study._storage
    storage.set_trial_system_attr(trial_id(runs_a), OWNER_KEY, f"{host}:1002:1")
    storage.set_trial_system_attr(trial_id(runs_b), OWNER_KEY, f"{host}:1002:1")
    # A dies: its published trial fails, B's trials are left alone.
    assert fail_dead_worker_trials(
        study,
        1001,
        "worker killed by signal 11 (SIGSEGV)",
        retry=False,
        trial_ids=(trial_id(runs_a),),
        others={trial_id(runs_b)},
    ) == (1, 0)
    # B dies: only its published trial, not A's (already failed) nor others'.
    assert fail_dead_worker_trials(
        study, 1002, "worker exited with code 1", retry=False, trial_ids=(trial_id(runs_b),)
    ) == (1, 0)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert study.trials[0].user_attrs["fail_reason"] == "worker killed by signal 11 (SIGSEGV)"


def test_counted_claims_query_equals_the_python_count(tmp_path: Path) -> None:
    from sigtune._optuna_compat import study_id, trial_id
    from sigtune._storage import counted_claims, resolve_storage
    from sigtune._target import UNCOUNTED_KEY, WARM_START_KEY, StudyTarget, is_counted

    storage = resolve_storage(f"sqlite:///{tmp_path}/c.db").open(track_owner=False)
    study = optuna.create_study(storage=storage, study_name="c")
    for v in (1.0, 2.0):
        study.add_trial(optuna.trial.create_trial(value=v, params={}, distributions={}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, params={}, distributions={}))
    study.add_trial(  # a warm-start copy: not counted
        optuna.trial.create_trial(
            value=0.5, params={}, distributions={}, system_attrs={WARM_START_KEY: "old"}
        )
    )
    stale = study.ask()  # a stale trial, marked uncounted, then FAIL
    storage.set_trial_system_attr(trial_id(stale), UNCOUNTED_KEY, "stale")
    study.tell(stale, state=TrialState.FAIL)
    study.ask()  # RUNNING: counted (it is claimed)
    study.enqueue_trial({})  # WAITING: not counted
    expected = sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state not in (TrialState.WAITING,) and is_counted(t)
    )
    assert expected == 4
    assert counted_claims(storage, study_id(study)) == expected
    assert StudyTarget(5, count_query=counted_claims).has_room(study)
    assert not StudyTarget(4, count_query=counted_claims).has_room(study)
    assert StudyTarget(5).has_room(study) and not StudyTarget(4).has_room(study)  # Python count
    assert counted_claims(resolve_storage(f"{tmp_path}/j.journal").open(), 0) is None


def test_ask_on_a_database_finds_enqueued_trials_without_syncing_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optuna's ask() looks for WAITING trials before every trial; on a database sigtune answers
    "none" with one query instead of the cached storage's sync of every changed trial, and still
    pops a trial that another process (another storage object) enqueued."""
    from optuna.storages import _CachedStorage

    from sigtune._storage import resolve_storage

    url = f"sqlite:///{tmp_path}/w.db"
    random = optuna.samplers.RandomSampler(seed=0)  # a sampler that reads no trials
    study = optuna.create_study(storage=resolve_storage(url).open(), study_name="w", sampler=random)
    other = optuna.load_study(storage=resolve_storage(url).open(), study_name="w")
    syncs = []
    real_sync = _CachedStorage._read_trials_from_remote_storage

    def counting_sync(self: object, study_id: int) -> None:
        syncs.append(study_id)
        real_sync(self, study_id)  # type: ignore[arg-type]

    monkeypatch.setattr(_CachedStorage, "_read_trials_from_remote_storage", counting_sync)
    for _ in range(3):
        t = study.ask()
        study.tell(t, t.suggest_float("x", 0, 1))
    assert syncs == []  # no WAITING trial: no sync
    other.enqueue_trial({"x": 0.25})
    t = study.ask()
    assert syncs  # found through the sync
    study.tell(t, t.suggest_float("x", 0, 1))
    assert study.trials[-1].params == {"x": 0.25}
    assert [tr.state for tr in other.trials] == [TrialState.COMPLETE] * 4
    assert other.trials[-1].system_attrs[OWNER_KEY]  # popped and stamped by its owner


def test_sys_exit_in_objective_is_a_failed_trial() -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            sys.exit(3)
        return x

    study = optimize(objective, 4, sampler="random")
    assert study.trials[1].state == TrialState.FAIL
    assert study.trials[1].user_attrs["fail_reason"] == "objective called sys.exit(3)"
    assert study.count()["COMPLETE"] == 3


def _square(v: int) -> int:
    return v * v


def test_objectives_may_start_processes_with_several_workers(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_int("x", 1, 5)
        with multiprocessing.get_context("fork").Pool(2) as pool:  # fails in daemon workers
            return float(sum(pool.map(_square, range(x))))

    study = optimize(objective, 4, sampler="random", n_jobs=2, run_dir=tmp_path)
    assert study.count()["COMPLETE"] == 4, [t.user_attrs for t in study.trials]


def _wait_dead(pid: int, limit: float = 120) -> None:
    end = time.monotonic() + limit
    while _process_start(pid) is not None:  # gone or a zombie
        assert time.monotonic() < end, f"process {pid} still runs"
        time.sleep(0.05)


def test_trial_stuck_in_c_code_is_ended_and_its_children_too(tmp_path: Path) -> None:
    pids = tmp_path / "pids"

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            child = subprocess.Popen(["sleep", "3600"])
            pids.write_text(f"{child.pid}\n")
            # SIGALRM blocked: like a long call into C, Python never sees the timeout.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(3600)
        return x

    study = optimize(objective, 4, sampler="random", trial_timeout=1.0, n_jobs=2, run_dir=tmp_path)
    stuck = study.trials[1]
    assert stuck.state == TrialState.FAIL
    assert stuck.user_attrs["fail_reason"].startswith(
        "TrialTimeoutError: trial exceeded trial_timeout=1s (stuck in a call"
    )
    assert study.count()["COMPLETE"] == 3
    _wait_dead(int(pids.read_text()))  # the objective's child was ended with its worker


def test_a_swallowed_timeout_still_ends_the_trial() -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 0:
            while True:
                try:
                    while True:
                        x = (x * 1.0001) % 1.0
                except Exception:  # user code that swallows every error
                    pass
        return x

    study = optimize(objective, 2, sampler="random", trial_timeout=0.3)
    assert study.trials[0].state == TrialState.FAIL
    assert "trial_timeout=0.3s" in study.trials[0].user_attrs["fail_reason"]
    assert study.trials[1].state == TrialState.COMPLETE


def test_children_of_a_failed_trial_are_ended(tmp_path: Path) -> None:
    pids = tmp_path / "pids"

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 0:
            child = subprocess.Popen(["sleep", "3600"])
            pids.write_text(f"{child.pid}\n")
            raise RuntimeError("left a child behind")
        return x

    study = optimize(objective, 3, sampler="random", n_jobs=2, run_dir=tmp_path)
    assert study.trials[0].state == TrialState.FAIL
    _wait_dead(int(pids.read_text()))


_CONCURRENT = """
import sys, sigtune
def objective(trial):
    return trial.suggest_float("x", 0, 1)
sigtune.optimize(objective, 24, sampler="random", storage=sys.argv[1], n_jobs=2)
"""


def test_concurrent_runs_share_n_trials(tmp_path: Path) -> None:
    storage = str(tmp_path / "shared.journal")
    optimize(lambda t: t.suggest_float("x", 0, 1), 1, storage=storage)  # the study exists
    procs = [
        subprocess.Popen([sys.executable, "-c", _CONCURRENT, storage], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    study = load_study("sigtune", storage)
    # Two runs of n_trials=24 end with 24 trials, not 47; the 4 worker processes may each
    # overshoot by the one trial it claims while another does.
    assert 24 <= study.n_finished() <= 24 + 3
    assert study.count()["RUNNING"] == 0


def test_sqlite_schema_creation_race(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    script = (
        "import sys, sigtune\n"
        "sigtune.optimize(lambda t: t.suggest_float('x', 0, 1), 6, sampler='random',\n"
        "                 storage=sys.argv[1], study_name='race')\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    # Four processes share n_trials=6: each may overshoot by the one trial it claims while
    # another does, never more.
    assert 6 <= load_study("race", url).n_finished() <= 6 + 3


def test_postgresql_schema_creation_race(
    tmp_path: Path,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    url = postgres_server.new_database()  # fresh: no tables yet
    (tmp_path / "obj.py").write_text("def f(params, trial):\n    return params['x'] ** 2\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"study_name: race\nstorage: {url}\nn_trials: 6\nsampler: random\nreport: false\n"
        "objective: obj.py:f\nsearch_space:\n  x: {type: range, bounds: [0, 1]}\n"
    )
    k = 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sigtune.cli", "run", str(cfg), "--quiet"],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
        )
        for _ in range(k)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    # The processes share n_trials=6: each may overshoot by the one trial it claims while
    # another does, never more (docs/cli.md).
    assert 6 <= load_study("race", url).n_finished() <= 6 + k - 1


def test_ownerless_enqueued_running_trial_is_stale(tmp_path: Path) -> None:
    storage = str(tmp_path / "s.journal")
    study = optimize(lambda t: t.suggest_float("x", 0, 1), 2, storage=storage)
    # A process killed between popping an enqueued trial and stamping its owner (older sigtune).
    raw = study.optuna
    raw.enqueue_trial({"x": 0.5})
    waiting = raw.get_trials(states=(TrialState.WAITING,))[0]
    inner = getattr(raw._storage, "inner", raw._storage)  # no owner stamp
    inner.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
    assert OWNER_KEY not in raw.trials[2].system_attrs
    assert handle_stale_running(raw, policy="requeue") == [2]
    trial = load_study("sigtune", storage).trials[2]
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == STALE_REASON
    resumed = optimize(lambda t: t.suggest_float("x", 0, 1), 3, storage=storage)
    assert resumed.n_finished() == 3  # the stale trial does not count; its point ran again
    assert [t.params["x"] for t in resumed.trials if t.state == TrialState.COMPLETE][-1] == 0.5


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_killed_trial_runs_again_on_resume(tmp_path: Path, n_jobs: int) -> None:
    storage = str(tmp_path / "k.journal")
    flag = tmp_path / "started"
    script = (
        "import pathlib, sys, time, sigtune\n"
        "def f(trial):\n"
        "    x = trial.suggest_float('x', 0, 1)\n"
        "    if trial.number == 2:\n"
        "        pathlib.Path(sys.argv[2]).touch()\n"
        "        time.sleep(3600)\n"
        "    return x\n"
        f"sigtune.optimize(f, 5, sampler='random', storage=sys.argv[1], n_jobs={n_jobs})\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, storage, str(flag)], start_new_session=True
    )
    try:
        end = time.monotonic() + 300
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < end
            time.sleep(0.05)
    finally:
        kill_group(proc)  # and wait for its worker processes too, not only the parent
    study = optimize(lambda t: t.suggest_float("x", 0, 1), 5, sampler="random", storage=storage)
    # The killed trial is FAIL (stale) and not counted: the study ends with 5 COMPLETE trials.
    states = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in study.trials]
    assert study.count()["COMPLETE"] == 5 and study.n_finished() == 5, states
