"""Optuna's heartbeat on server databases: recorded while a trial runs; on resume a RUNNING
trial without a recent heartbeat is stale whatever host ran it (owner stamps only judge this
host's processes). The journal file keeps the owner stamps alone."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from _postgres import PostgresServer, postgres_server  # noqa: F401  (fixture)
from optuna.trial import TrialState

from sigtune._optuna_compat import heartbeat_enabled, study_storage, trial_id
from sigtune._storage import (
    HEARTBEAT_GRACE_S,
    OWNER_KEY,
    STALE_HEARTBEAT_REASON,
    resolve_storage,
)
from sigtune._study import load_study, optimize

pytestmark = pytest.mark.postgres


def _running_trial_of_another_host(url: str, name: str, age_s: int) -> int:
    """A RUNNING trial owned by a process of another host, last heartbeat ``age_s`` ago."""
    storage = resolve_storage(url).open(track_owner=False)
    study = optuna.load_study(study_name=name, storage=storage)
    with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize"
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    tid = trial_id(trial)
    study_storage(study).set_trial_system_attr(tid, OWNER_KEY, "elsewhere.example:4242:1")
    study_storage(study).record_heartbeat(tid)  # type: ignore[attr-defined]
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as con:  # age the heartbeat instead of waiting for it to age
        con.execute(
            sqlalchemy.text(
                "UPDATE trial_heartbeats SET heartbeat = heartbeat - make_interval(secs => :age) "
                "WHERE trial_id = :tid"
            ),
            {"age": age_s, "tid": tid},
        )
    engine.dispose()
    return trial.number


def test_heartbeat_is_recorded_while_a_trial_runs(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    url = postgres_server.new_database()
    engine = sqlalchemy.create_engine(url)
    seen: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        assert heartbeat_enabled(study_storage(trial.study))
        deadline = time.monotonic() + 60
        rows = 0
        while not rows and time.monotonic() < deadline:  # the heartbeat thread writes it
            with engine.connect() as con:
                rows = con.execute(
                    sqlalchemy.text("SELECT count(*) FROM trial_heartbeats WHERE trial_id = :t"),
                    {"t": trial_id(trial)},
                ).scalar_one()
        seen.append(int(rows))
        return trial.suggest_float("x", 0, 1)

    study = optimize(objective, 3, sampler="random", storage=url, study_name="beat")
    engine.dispose()
    assert [t.user_attrs.get("fail_reason") for t in study.trials] == [None] * 3
    assert seen == [1, 1, 1]


def test_resume_fails_trials_whose_heartbeat_stopped(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    url = postgres_server.new_database()
    optimize(lambda t: t.suggest_float("x", 0, 1), 2, sampler="random", storage=url, study_name="s")
    dead = _running_trial_of_another_host(url, "s", HEARTBEAT_GRACE_S + 600)
    alive = _running_trial_of_another_host(url, "s", 1)
    study = optimize(lambda t: t.suggest_float("x", 0, 1), 5, storage=url, study_name="s")
    trials = {t.number: t for t in study.trials}
    assert trials[dead].state == TrialState.FAIL
    assert trials[dead].user_attrs["fail_reason"] == STALE_HEARTBEAT_REASON
    assert trials[alive].state == TrialState.RUNNING  # recent heartbeat, other host: left alone
    assert study.count()["COMPLETE"] == 4  # 5 wanted: 2 + the failed one + 2 new


def test_journal_storage_has_no_heartbeat(tmp_path: Path) -> None:
    study = optimize(lambda t: t.suggest_float("x", 0, 1), 2, sampler="random", run_dir=tmp_path)
    storage = load_study("sigtune", study.storage).optuna  # type: ignore[arg-type]
    assert not heartbeat_enabled(study_storage(storage))
