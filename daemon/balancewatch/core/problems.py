"""Problems found in user files, reported as ``path:line: field: message``.

Every loader collects all the problems in a file before it gives up, so a
sysadmin fixes a file in one pass instead of one error per reload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in one file; ``line`` is 1-based, 0 when unknown."""

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ProblemsError(Exception):
    """Raised with every problem found; ``str()`` lists them one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.path, p.line, p.field))
        super().__init__("\n".join(str(p) for p in self.problems))


def explain(error: Mapping[str, Any]) -> str:
    """A pydantic error (one item of ``ValidationError.errors()``) in words a sysadmin acts on.

    Messages from our own validators pass through without pydantic's "Value error, " prefix.
    """
    kind, msg, ctx = error["type"], str(error["msg"]), error.get("ctx") or {}
    given = error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind in ("bool_type", "bool_parsing"):
        return f"{given!r} is not true or false; write true or false"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{given!r} is not a whole number; write e.g. 5"
    if kind == "string_type":
        return f"{given!r} is not text; write text (quote it if it looks like a number, true/false or a date)"
    if kind in ("literal_error", "enum"):
        return f"{given!r} is not allowed; write {ctx.get('expected', 'one of the documented values')}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{_short(given)} is not a mapping; write field: value lines here"
    if kind == "list_type":
        return f"{_short(given)} is not a list; write [a, b] or one '- item' per line"
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        return f"the list is empty; write at least {least} item{'s' if least != 1 else ''}"
    if kind in _BOUNDS:
        key, what, write = _BOUNDS[kind]
        return f"{given!r} is too {what}; write {write} {ctx.get(key)}"
    if kind == "path_type":
        return f"{_short(given)} is not a path; write a file or directory path"
    return msg.removeprefix("Value error, ")


_BOUNDS = {
    "less_than_equal": ("le", "large", "at most"),
    "less_than": ("lt", "large", "less than"),
    "greater_than_equal": ("ge", "small", "at least"),
    "greater_than": ("gt", "small", "more than"),
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
