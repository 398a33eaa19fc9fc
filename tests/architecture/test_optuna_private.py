"""Optuna's private API is used in one module only: ``sigtune._optuna_compat``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import optuna

SRC = Path(__file__).resolve().parents[2] / "src" / "sigtune"
COMPAT = SRC / "_optuna_compat.py"


def _optuna_private_attributes() -> set[str]:
    """Every ``self._name`` Optuna's own classes define (read from Optuna's sources)."""
    names: set[str] = set()
    for path in Path(optuna.__file__).parent.rglob("*.py"):
        names.update(re.findall(r"\bself\.(_[a-z][a-z0-9_]*)\b", path.read_text()))
    return names


def _violations(path: Path, private: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("optuna"):
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            found += [
                f"line {node.lineno}: imports {node.module}.{a.name}"
                for a in node.names
                if a.name.startswith("_")
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith("optuna") and "._" in a.name
            ]
        elif isinstance(node, ast.Attribute) and node.attr in private:
            base = ast.unparse(node.value)
            if base not in ("self", "cls", "super()"):
                found.append(f"line {node.lineno}: {base}.{node.attr}")
    return found


def test_only_the_compat_module_touches_optuna_privates() -> None:
    private = _optuna_private_attributes()
    assert {"_storage", "_trial_id", "_study_id", "_thread_local"} <= private
    bad = {}
    for path in SRC.rglob("*.py"):
        if path == COMPAT or "hep" in path.relative_to(SRC).parts:
            continue  # hep never imports optuna (test_layering)
        found = _violations(path, private)
        if found:
            bad[str(path.relative_to(SRC))] = found
    assert bad == {}, f"use sigtune._optuna_compat instead: {bad}"


def test_the_check_finds_private_uses() -> None:
    private = _optuna_private_attributes()
    found = _violations(COMPAT, private)
    assert any("_storage" in f for f in found)
    assert any("optuna.storages.journal._file" in f for f in found)
