"""Every test file that starts Ray is in the xdist group that keeps those tests in one process
(``_RAY_FILES`` in tests/conftest.py): a new one left out would run its Ray instance next to
another under ``make test``'s two test processes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# imports Ray, runs the Ray engine or the PBT stage, or submits a SLURM job (its script starts Ray)
STARTS_RAY = re.compile(
    r"^\s*(import ray|from ray)|importorskip\(\"ray|start_local_ray"
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
