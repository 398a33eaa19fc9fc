"""The layout's dependency rules, checked on fresh interpreters."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "sigtune"
HEAVY = [
    "torch",
    "lightning",
    "ray",
    "lightgbm",
    "xgboost",
    "uproot",
    "matplotlib",
    "plotly",
    "keras",
]


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_hep_imports_nothing_of_the_hpo_core() -> None:
    loaded = _loaded_after("import sigtune.hep, sigtune.hep.cli")
    ours = {m for m in loaded if m == "sigtune" or m.startswith("sigtune.")}
    allowed = {"sigtune", "sigtune._exceptions"}
    assert {m for m in ours if not m.startswith("sigtune.hep")} <= allowed
    assert "optuna" not in loaded and "pyhf" not in loaded


def test_hep_sources_import_only_hep_and_the_exception_root() -> None:
    for path in (SRC / "hep").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("sigtune"):
                    assert name.startswith("sigtune.hep") or name == "sigtune._exceptions", (
                        f"{path.relative_to(SRC)} imports {name}"
                    )
                assert not name.startswith(("pyhf", "nextstat")), f"{path} imports {name}"


def test_no_package_module_imports_nextstat() -> None:
    for path in SRC.rglob("*.py"):
        assert "import nextstat" not in path.read_text(), path


def test_core_import_pulls_no_heavy_optional_library() -> None:
    loaded = _loaded_after(
        "import sigtune, sigtune.cli; sigtune.optimize; sigtune.SearchSpace; sigtune.make_sampler"
    )
    assert not [m for m in HEAVY if m in loaded]
