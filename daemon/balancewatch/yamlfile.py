"""YAML loading that remembers where every value came from.

``load`` returns plain data plus a map from each value's path (the tuple of
keys and indexes that reaches it) to its 1-based line, so that a pydantic
error location such as ``("alerts", 0, "below", 1)`` can be reported as
``rules/ladder.yaml:12``. Floats are kept as :class:`decimal.Decimal` built
from the text as written: money never passes through ``float``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml

from balancewatch.problems import Problem, ProblemsError

Path = tuple[str | int, ...]


@dataclass
class Located:
    """Data loaded from one YAML file and the line of each value in it."""

    path: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[Any]) -> int:
        """Line of the deepest value on ``loc`` that exists in the data.

        Components that are not keys or indexes of the data (pydantic adds
        union tags such as ``list[...]``) are skipped.
        """
        node, walked, best = self.data, (), self.lines.get((), 1)
        for part in loc:
            if _has(node, part):
                node, walked = node[part], (*walked, part)
                best = self.lines.get(walked, best)
        return best

    def field_of(self, loc: Sequence[Any]) -> str:
        """The dotted field name for ``loc``, keeping only parts present in the data."""
        node, names, last = self.data, [], len(loc) - 1
        for i, part in enumerate(loc):
            if isinstance(node, dict) and part in node:
                node = node[part]
                names.append(str(part))
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
                names.append(f"[{part}]")
            elif isinstance(part, str) and isinstance(node, dict) and i == last and not _is_union_tag(part):
                names.append(part)  # a missing required key: still worth naming
            # Anything else is a union tag (pydantic's "per-currency"): not a place in the file.
        return ".".join(names).replace(".[", "[")


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _is_union_tag(part: str) -> bool:
    return any(ch in part for ch in "[]()'\"") or part.startswith(("function-", "lax-"))


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps floats exact."""


def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = loader.construct_scalar(node)
    cleaned = str(text).replace("_", "")
    try:
        return Decimal(cleaned)
    except ArithmeticError:
        return loader.construct_yaml_float(node)


_Loader.add_constructor("tag:yaml.org,2002:float", _decimal)


def load(text: str, path: str) -> Located:
    """Parse ``text`` (named ``path`` in errors) into data with line numbers.

    Raises ProblemsError for YAML syntax errors and duplicate keys, each with
    its line.
    """
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        located = Located(path, None)
        if root is None:
            return located
        builder = _Builder(loader, path, located.lines)
        located.data = builder.build(root, ())
    except yaml.MarkedYAMLError as exc:
        raise ProblemsError([_syntax_problem(exc, path)]) from None
    except yaml.YAMLError as exc:
        raise ProblemsError([Problem(path, 0, "", f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if builder.problems:
        raise ProblemsError(builder.problems)
    return located


def _syntax_problem(exc: yaml.MarkedYAMLError, path: str) -> Problem:
    problem_line = exc.problem_mark.line + 1 if exc.problem_mark else 0
    context_line = exc.context_mark.line + 1 if exc.context_mark else 0
    what = exc.problem or exc.context or "syntax error"
    context = exc.context or ""
    if "\\t" in what or "tab" in what:
        return Problem(
            path, problem_line, "", f"not valid YAML: {what} (YAML indents with spaces, never tabs)"
        )
    if context_line and ("<stream end>" in what or "end of stream" in what):
        # The file stops inside a bracket or a quote: the place to look is where it opened.
        opened = _OPENED.get(
            context.removeprefix("while ").removeprefix("parsing ").removeprefix("scanning ")
        )
        if opened:
            return Problem(path, context_line, "", f"not valid YAML: the file ends before {opened} is closed")
    if "expected <block end>" in what and context_line:
        return Problem(
            path,
            problem_line,
            "",
            f"not valid YAML: this line is indented differently from the block that starts on line "
            f"{context_line}; line it up with the entries it belongs to",
        )
    if "mapping values are not allowed" in what:
        what += " (quote a value that contains ': ')"
    if context and context_line and context_line != problem_line:
        what += f" ({context} started on line {context_line})"
    return Problem(path, problem_line or context_line, "", f"not valid YAML: {what}")


_OPENED = {
    "a flow sequence": "the list opened with '[' on this line",
    "a flow mapping": "the mapping opened with '{' on this line",
    "a quoted scalar": "the quoted text started on this line",
}


class _Builder:
    """Turns a node tree into plain data, recording lines and duplicate keys."""

    def __init__(self, loader: _Loader, path: str, lines: dict[Path, int]) -> None:
        self.loader, self.path, self.lines = loader, path, lines
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node, at: Path) -> Any:
        self.lines[at] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, at)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*at, i)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, at: Path) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problems.append(Problem(self.path, line, "", "merge keys (<<) are not supported"))
                continue
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int):
                key = str(key)
            if key in out:
                first = self.lines.get((*at, key), 0)
                self.problems.append(
                    Problem(
                        self.path,
                        line,
                        _dotted((*at, key)),
                        f"duplicate key (first set on line {first}); keep one",
                    )
                )
                continue
            out[key] = self.build(value_node, (*at, key))
            self.lines[(*at, key)] = line
        return out


def _dotted(at: Path) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else p for p in at).replace(".[", "[")
