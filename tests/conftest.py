"""Shared test configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Keep BLAS single-threaded: reproducible numbers and no oversubscription on 2-core CI.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# Property-based tests draw the same examples on every run (a fixed, derandomised search and no
# example database): a test suite must not pass or fail by the luck of the draw. A property found
# to fail for some input is then a reproducible failure, fixed or recorded as a known defect.
from hypothesis import settings

settings.register_profile("sigtune", derandomize=True, database=None, print_blob=True)
settings.load_profile("sigtune")


# With pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), every test that starts Ray (the
# Ray engine, the SLURM cluster, the PBT stage) runs in the same test process, one after the
# other, as without xdist: two Ray instances at once would share /tmp/ray, and the SLURM job's
# `ray.init(address="auto")` could join the wrong one.
_RAY_FILES = (
    "engines/test_ray.py",
    "engines/test_ray_local.py",
    "engines/test_slurm.py",
    "pipelines/ml/test_pbt.py",
    "pipelines/ml/test_pbt_pipeline.py",
    "pipelines/ml/test_pbt_actions_frameworks.py",
)
_TESTS = Path(__file__).parent


def _ray_files() -> set[Path]:
    ray_files = {(_TESTS / f).resolve() for f in _RAY_FILES}
    missing = [str(f) for f in ray_files if not f.is_file()]
    assert not missing, f"tests/conftest.py: _RAY_FILES names files that do not exist: {missing}"
    return ray_files


# tryfirst: xdist's own hook turns the mark into the "@ray" suffix of the test id that its
# scheduler groups by; a mark added after that hook has no effect (the Ray tests then ran in
# both processes, and test_pbt.py's module fixture, a whole PBT run, was set up twice).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ray_files = _ray_files()
    for item in items:
        if item.path.resolve() in ray_files:
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Under --dist loadgroup every Ray test id carries the group ("...@ray"), or xdist's
    scheduler spreads them over the test processes: stop the run with the reason instead."""
    if node.config.getoption("dist") != "loadgroup":
        return
    prefixes = tuple(f"{_TESTS.name}/{f}::" for f in _RAY_FILES)
    ungrouped = [i for i in ids if i.startswith(prefixes) and not i.endswith("@ray")]
    if ungrouped:
        pytest.exit(
            f"tests/conftest.py: {len(ungrouped)} Ray tests are not in xdist's 'ray' group "
            f"(e.g. {ungrouped[0]}): xdist's loadgroup did not take the mark; see the pytest "
            "pin in pyproject.toml",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, the controller compiles sigtune.hep's kernels into numba's cache in
    the background (tests/_warm_numba.py says why) while the test processes start."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    if os.environ.get("SIGTUNE_TESTS_NO_WARMUP"):  # a pytest run inside a test (no kernels)
        return
    config._sigtune_warm = subprocess.Popen(  # type: ignore[attr-defined]
        [sys.executable, str(_TESTS / "_warm_numba.py")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    warm = getattr(config, "_sigtune_warm", None)
    if warm is not None and warm.poll() is None:
        warm.kill()
        warm.wait()
