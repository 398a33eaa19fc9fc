"""Fixtures of the ML pipeline tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """One local Ray instance (2 CPUs, as the PBT stages of these tests ask) for a module's
    in-process stage runs (only files in xdist's Ray group use it: tests/conftest.py). A stage
    that finds Ray running uses it and leaves it running, so the runs of a module share one
    start (about 7 CPU-seconds with its shutdown) instead of starting and stopping their own.

    Ray's workers inherit the environment of the instance that starts them, and Keras picks its
    backend once per process from ``KERAS_BACKEND``: it is set (to torch, the backend whose
    checkpoints PBT needs) before the start.
    """
    ray = pytest.importorskip("ray")
    from sigtune.engines._ray import start_local_ray

    assert not ray.is_initialized(), "a test before this module left Ray running"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    start_local_ray(
        ray, num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
    )
    yield ray
    ray.shutdown()
