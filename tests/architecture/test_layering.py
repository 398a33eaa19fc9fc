"""The layout's dependency rules, checked on fresh interpreters."""

from __future__ import annotations

import ast
import functools
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


# ---------------------------------------------------------------------- the import graph
#
# Every import statement of src/ counts, at module level or inside a function (lazy imports);
# only imports under ``if TYPE_CHECKING:`` are left out (they never run). Layers:
#   core       sigtune, sigtune._* (search space, samplers, study, storage, run seam, settings ...)
#   cli        sigtune.cli: the application; may use every layer
#   engines    sigtune.engines.*  -> core
#   reports    sigtune.reports.*  -> core, hep (the physics pages fit with sigtune.hep)
#   pipelines  sigtune.pipelines.* -> core, engines, hep
#   hep        sigtune.hep.*      -> sigtune._exceptions only
# (docs/dev/contracts.md, docs/dev/layers.md). Engines and objective types named in registries
# (``sigtune._run.BUILTIN_ENGINES``, ``sigtune._config.BUILTIN_OBJECTIVE_TYPES``) are import paths
# in strings, resolved when a run selects them; they are not import statements.

ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "cli": {"core", "cli", "engines", "reports", "pipelines", "hep"},
    "engines": {"core", "engines"},
    "reports": {"core", "hep", "reports"},
    "pipelines": {"core", "engines", "hep", "pipelines"},
    "hep": {"hep"},
}

# Known cycles waiting to be cut (none now); an entry that is cut makes
# test_pending_cycles_are_still_there fail, on purpose, so that the list stays true.
PENDING_CYCLES: list[frozenset[str]] = []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                skip.update(id(n) for n in ast.walk(stmt))
    return skip


def _imported(module: str, path: Path, node: ast.AST, modules: dict[str, Path]) -> list[str]:
    """The sigtune modules an import statement loads (submodule if it is one, else the package)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def _import_graph() -> dict[str, set[str]]:
    """Module -> the sigtune modules it imports (a fresh copy of the one parse of src/)."""
    return {k: set(v) for k, v in _parsed_import_graph().items()}


@functools.cache
def _parsed_import_graph() -> dict[str, frozenset[str]]:
    modules = _modules()
    graph: dict[str, frozenset[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            for target in _imported(name, path, node, modules):
                # "import sigtune.a.b" loads sigtune.a.b; count the deepest sigtune module named
                while target and target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target in modules and target != name and target.startswith("sigtune"):
                    deps.add(target)
        graph[name] = frozenset(deps)
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    if parts[1] in ("cli", "engines", "reports", "pipelines", "hep"):
        return parts[1]
    return "core"


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_import_graph_sees_lazy_imports() -> None:
    graph = _import_graph()
    assert "sigtune.reports" in graph["sigtune.cli"]  # imported inside a function
    assert "sigtune.hep.cli" in graph["sigtune.cli"]
    assert "sigtune._run" in graph["sigtune.engines._trial"]
    assert "sigtune._study" not in graph["sigtune"]  # TYPE_CHECKING only


def test_no_import_cycle_in_src() -> None:
    cycles = [c for c in _cycles(_import_graph()) if c not in PENDING_CYCLES]
    assert cycles == [], f"import cycles: {[sorted(c) for c in cycles]}"


def test_pending_cycles_are_still_there() -> None:
    cycles = _cycles(_import_graph())
    gone = [sorted(c) for c in PENDING_CYCLES if c not in cycles]
    assert gone == [], f"cycle(s) {gone} are cut: remove them from PENDING_CYCLES"


def test_every_layer_imports_only_the_layers_below() -> None:
    bad = []
    for module, deps in _import_graph().items():
        layer = _layer(module)
        for dep in deps:
            if layer == "hep" and dep == "sigtune._exceptions":
                continue  # the one exception: HepError derives from SigtuneError
            if _layer(dep) not in ALLOWED[layer]:
                bad.append(f"{module} ({layer}) imports {dep} ({_layer(dep)})")
    assert bad == []


def test_hep_imports_only_the_exception_root_of_sigtune() -> None:
    for module, deps in _import_graph().items():
        if _layer(module) == "hep":
            assert {d for d in deps if _layer(d) != "hep"} <= {"sigtune._exceptions"}, module


def test_no_package_module_imports_an_oracle() -> None:
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                assert name.split(".")[0] not in ("pyhf", "nextstat"), f"{path} imports {name}"
