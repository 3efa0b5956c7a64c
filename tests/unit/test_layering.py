"""The import graph of model_lib: no cycles, and the core never imports the SageMaker adapter.

Every import counts, also one inside a function or under ``TYPE_CHECKING``: a lazy import hides a
cycle from Python, not from the next reader, and a type-only import still points the arrow up.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "model_lib"
# The adapter and the front door that may use it; everything else is the core.
ADAPTER = "model_lib.sagemaker"
FRONT_DOORS = ("model_lib", "model_lib.cli")


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported_names(module: str, path: Path) -> set[str]:
    """Return every dotted name ``module`` imports (``from a import b`` gives ``a.b``)."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Return module -> the model_lib modules it imports (the package itself, a re-export hub, left out)."""
    modules = module_names()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {owner(name) for name in imported_names(module, path)}
        graph[module] = {t for t in targets if t is not None and t not in (module, "model_lib")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_model_lib_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_core_modules_never_import_the_sagemaker_adapter() -> None:
    upward = {
        (module, target)
        for module, targets in import_graph().items()
        if not module.startswith(ADAPTER) and module not in FRONT_DOORS
        for target in targets
        if target.startswith(ADAPTER)
    }
    assert upward == set()


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
