"""The import graph of model_lib: no cycles, and the core never imports the SageMaker adapter.

An import inside a function counts: a lazy import hides a cycle from Python, not from the next
reader. An import under ``TYPE_CHECKING`` counts for the layering (it still points the arrow up) but
not for cycles (annotations only: nothing runs it).
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


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST, type_checking: bool) -> list[ast.AST]:
    """Return every node of ``tree``; without ``type_checking``, none under ``if TYPE_CHECKING:``."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        if type_checking or not _is_type_checking(node):
            todo.extend(ast.iter_child_nodes(node))
    return found


def imported_names(module: str, path: Path, type_checking: bool = True) -> set[str]:
    """Return every dotted name ``module`` imports (``from a import b`` gives ``a.b``)."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8")), type_checking):
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


def import_graph(type_checking: bool = True) -> dict[str, set[str]]:
    """Return module -> the model_lib modules it imports (the package itself, a re-export hub, left out)."""
    modules = module_names()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {owner(name) for name in imported_names(module, path, type_checking)}
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
    assert cycles(import_graph(type_checking=False)) == []


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


def test_type_only_imports_count_for_layering_not_for_cycles(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a import b\nimport c\n")
    assert imported_names("m", module) == {"typing.TYPE_CHECKING", "a.b", "c"}
    assert imported_names("m", module, type_checking=False) == {"typing.TYPE_CHECKING", "c"}
