"""Functions short enough to read at once, classes with one reason to change (STYLE.md: Code).

ruff's C90 bounds complexity in the lint env; this bounds length, which ruff does not measure.
"""

from __future__ import annotations

import ast

from tests.conftest import REPO

MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 200


def oversized(kind: type[ast.AST], limit: int) -> list[str]:
    """Return ``path:line name (lines)`` for each definition of ``kind`` in model_lib longer than ``limit``."""
    found = []
    for path in sorted((REPO / "model_lib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, kind):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[attr-defined]
                if lines > limit:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})")  # type: ignore[attr-defined]
    return found


def test_no_function_is_over_80_lines() -> None:
    assert oversized(ast.FunctionDef, MAX_FUNCTION_LINES) + oversized(ast.AsyncFunctionDef, MAX_FUNCTION_LINES) == []


def test_no_class_is_over_200_lines() -> None:
    assert oversized(ast.ClassDef, MAX_CLASS_LINES) == []
