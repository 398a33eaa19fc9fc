"""A Ray instance that sigtune starts on this machine runs trials at normal priority.

Ray's workers default to niceness 15: on a loaded machine (a CI runner, a shared workstation)
they then get a few percent of a CPU, and a PBT stage or a Ray-engine study seems to hang (it
did: a PBT resume test went from 42 s to more than 10 min next to two busy loops).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from sigtune.engines._ray import start_local_ray

ray = pytest.importorskip("ray")


def test_local_ray_workers_run_at_the_callers_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert not ray.is_initialized()

    @ray.remote(num_cpus=1)
    def niceness() -> int:
        return os.nice(0)

    start_local_ray(ray, num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        assert ray.get(niceness.remote()) == os.nice(0)
    finally:
        ray.shutdown()


def test_a_users_niceness_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    class FakeRay:
        def init(self, **kwargs: Any) -> None:
            calls.append({**kwargs, "niceness": os.environ.get("RAY_worker_niceness")})

    monkeypatch.setenv("RAY_worker_niceness", "7")
    start_local_ray(FakeRay(), num_cpus=2)
    assert calls == [{"address": "local", "num_cpus": 2, "niceness": "7"}]
