"""Every test file that starts Ray is in the xdist group that keeps those tests in one process
(``_RAY_FILES`` in tests/conftest.py): a new one left out would run its Ray instance next to
another under ``make test``'s test processes."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
# imports Ray, starts it (or takes tests/pipelines/ml/conftest.py's local_ray), runs the Ray
# engine or the PBT stage, or submits a SLURM job (its script starts Ray)
STARTS_RAY = re.compile(
    r"^\s*(import ray|from ray)|importorskip\(\"ray|local_ray"
    r"|engine=\"ray\"|engine: ray|\"ray\"\]|run_pbt|pbt:|sbatch",
    re.MULTILINE,
)


def _ray_files() -> set[str]:
    tree = ast.parse((TESTS / "conftest.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_RAY_FILES":
            return set(ast.literal_eval(node.value))
    raise AssertionError("tests/conftest.py defines no _RAY_FILES")


def test_every_test_file_that_starts_ray_is_in_the_ray_group() -> None:
    starting = {
        p.relative_to(TESTS).as_posix()
        for p in TESTS.rglob("test_*.py")
        if "data" not in p.parts and STARTS_RAY.search(p.read_text())
    }
    here = Path(__file__).relative_to(TESTS).as_posix()
    starting.discard(here)  # the pattern above, not a Ray start
    assert starting, "the pattern finds no Ray test at all: it is out of date"
    assert starting <= _ray_files(), sorted(starting - _ray_files())


def test_ray_tests_of_different_files_run_in_one_xdist_process() -> None:
    """`make test`'s own options on tests of two Ray files that start no Ray: both carry the group
    and run in the same test process (on pytest 9.2 with xdist 3.8 neither held, silently)."""
    pytest.importorskip("xdist")
    picked = [
        "tests/engines/test_slurm.py::test_render_quotes_paths_with_spaces",
        "tests/pipelines/ml/test_pbt_pipeline.py::test_stage_order_and_default_off",
        "tests/pipelines/ml/test_pbt_pipeline.py::test_mutable_marks_give_mutations_and_refuse_architecture",
    ]
    cmd = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v"]
    cmd += ["-p", "no:cacheprovider", *picked]
    # the outer run already compiles the hep kernels: the inner one must not start a second
    # compilation (tests/conftest.py) that it kills a few seconds later
    env = {**os.environ, "SIGTUNE_TESTS_NO_WARMUP": "1"}
    res = subprocess.run(
        cmd, cwd=TESTS.parent, capture_output=True, text=True, timeout=300, env=env
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ran = re.findall(r"^\[(gw\d+)\] \[\s*\d+%\] PASSED (\S+)", res.stdout, re.MULTILINE)
    assert sorted(t for _, t in ran) == sorted(f"{p}@ray" for p in picked), res.stdout[-3000:]
    assert len({gw for gw, _ in ran}) == 1, ran
