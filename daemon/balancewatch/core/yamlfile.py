"""YAML loading that remembers where every value came from.

``load`` returns plain data plus a map from each value's path (the tuple of
keys and indexes that reaches it) to its 1-based line, so that a pydantic
error location such as ``("alerts", 0, "below", 1)`` can be reported as
``rules/ladder.yaml:12``. Floats are kept as :class:`decimal.Decimal` built
from the text as written: money never passes through ``float``.

Hostile or broken input is refused with a problem, never an exception other
than ProblemsError: aliases that would expand past MAX_VALUES values (the
"billion laughs"), an alias that contains itself, nesting deeper than the
parser can follow, keys that are lists or mappings, and scalars that cannot
be constructed (a 5,000-digit number, the date 2024-13-45).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml

from balancewatch.core.problems import Problem, ProblemsError

Path = tuple[str | int, ...]

# Values built per file, aliases expanded. A rule file with a thousand rules holds ~20,000;
# nine nested aliases of nine items each would hold 387 million.
MAX_VALUES = 100_000
# Digits in a number: far more than any amount or duration needs, far less than int() refuses.
MAX_DIGITS = 100


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
        walked: tuple[Any, ...] = ()
        node, best = self.data, self.lines.get((), 1)
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

    Raises ProblemsError for YAML syntax errors, duplicate keys and the hostile
    or unreadable input listed in the module docstring, each with its line.
    """
    loader = _Loader(text)
    builder: _Builder | None = None
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
    except _RefusedError as exc:
        raise ProblemsError([exc.problem]) from None
    except RecursionError:
        line = loader.line + 1
        raise ProblemsError(
            [Problem(path, line, "", "nested too deeply to read (lists or mappings inside each other)")]
        ) from None
    finally:
        loader.dispose()
    if builder is not None and builder.problems:
        raise ProblemsError(builder.problems)
    return located


def _syntax_problem(exc: yaml.MarkedYAMLError, path: str) -> Problem:
    problem_line = exc.problem_mark.line + 1 if exc.problem_mark else 0
    context_line = exc.context_mark.line + 1 if exc.context_mark else 0
    what = exc.problem or exc.context or "syntax error"
    context = exc.context or ""
    if "\\t" in what or "tab" in what:
        column = exc.problem_mark.column + 1 if exc.problem_mark else 0
        at = f" at column {column}" if column else ""
        return Problem(
            path,
            problem_line,
            "",
            f"not valid YAML: a tab{at}; YAML indents with spaces, never tabs: replace it with spaces",
        )
    if "found another document" in what:
        return Problem(
            path,
            problem_line,
            "",
            "not valid YAML: a second document starts here ('---'); a file holds one document: "
            "remove the '---' line or move what follows into a file of its own",
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
    if "unknown escape character" in what:
        what += " (inside double quotes a backslash starts an escape; use single quotes instead)"
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


class _RefusedError(Exception):
    """Stops building at once: what follows cannot be read safely."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Builder:
    """Turns a node tree into plain data, recording lines and duplicate keys.

    Collects problems that leave the rest of the file readable; raises _RefusedError
    for those that do not (an alias bomb, an alias inside itself).
    """

    def __init__(self, loader: _Loader, path: str, lines: dict[Path, int]) -> None:
        self.loader, self.path, self.lines = loader, path, lines
        self.problems: list[Problem] = []
        self.built = 0
        self.open: set[int] = set()  # collections being built: meeting one again is an alias loop

    def build(self, node: yaml.Node, at: Path) -> Any:
        line = node.start_mark.line + 1
        self.lines[at] = line
        self.built += 1
        if self.built > MAX_VALUES:
            raise _RefusedError(
                Problem(
                    self.path,
                    line,
                    "",
                    f"more than {MAX_VALUES:,} values once aliases (*name) are expanded; "
                    "no balancewatch file needs that many: write the values out instead of nesting aliases",
                )
            )
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, at)
        if node.tag not in (_MAP, _SEQ):
            self.problems.append(_unsupported_tag(self.path, node, at))
            return None
        if id(node) in self.open:
            raise _RefusedError(
                Problem(
                    self.path,
                    line,
                    _dotted(at),
                    "an alias (*name) inside the very block it names would repeat forever; "
                    "write the values out",
                )
            )
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, at)
            return [self.build(item, (*at, i)) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, at: Path) -> Any:
        line = node.start_mark.line + 1
        if node.tag in (_INT, _FLOAT) and sum(ch.isdigit() for ch in node.value) > MAX_DIGITS:
            digits = sum(ch.isdigit() for ch in node.value)
            self.problems.append(
                Problem(
                    self.path,
                    line,
                    _dotted(at),
                    f"a number {digits:,} digits long is too large for any field here; check for a typo",
                )
            )
            return None
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            self.problems.append(_unsupported_tag(self.path, node, at))
            return None
        except ValueError as exc:  # a date such as 2024-13-45 matches YAML's pattern but is no date
            self.problems.append(
                Problem(
                    self.path,
                    line,
                    _dotted(at),
                    f"cannot read {node.value!r} ({exc}); quote it if it is meant as text",
                )
            )
            return None

    def _mapping(self, node: yaml.MappingNode, at: Path) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problems.append(Problem(self.path, line, "", "merge keys (<<) are not supported"))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                what = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
                self.problems.append(
                    Problem(
                        self.path,
                        line,
                        _dotted(at),
                        f"a key here is {what}; keys are plain names such as 'id' "
                        "(a line starting with '?' makes a complex key)",
                    )
                )
                continue
            known = len(self.problems)
            key = self._scalar(key_node, at)
            if len(self.problems) > known:
                continue  # the key itself is unreadable, and reported
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


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def _unsupported_tag(path: str, node: yaml.Node, at: Path) -> Problem:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    return Problem(
        path,
        node.start_mark.line + 1,
        _dotted(at),
        f"the tag {tag} is not supported; write plain text, numbers, true/false, lists and mappings",
    )


def _dotted(at: Path) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in at).replace(".[", "[")
