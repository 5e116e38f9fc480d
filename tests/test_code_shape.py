"""The shape docs/architecture.md promises: small modules and functions, checked on every run.

No module of the package over 400 lines; no function over 60, except data-only literals that
say so in a comment (``# Data-only: ...``) at their start.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "daemon" / "balancewatch"
MAX_MODULE, MAX_FUNCTION = 400, 60


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_400_lines() -> None:
    over = {
        str(p.relative_to(PACKAGE)): n
        for p in modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE
    }
    assert over == {}


def test_no_function_is_over_60_lines_unless_it_is_a_marked_data_only_literal() -> None:
    over = {}
    for path in modules():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            opening = "\n".join(lines[node.lineno : node.lineno + 3])
            if length > MAX_FUNCTION and "# Data-only" not in opening:
                over[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = length
    assert over == {}
