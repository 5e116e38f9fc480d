"""Pydantic's validation errors as problems a person can act on: file, line, field, and what is valid.

An unknown field names the valid ones and a close match (``recipients`` -> ``notify``);
a model-level message written ``field: ...`` is placed at that field.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from balancewatch.core import yamlfile
from balancewatch.core.problems import Problem, explain


def validation_problems(
    exc: ValidationError,
    located: yamlfile.Located,
    model: type[BaseModel],
    prefix: tuple[str | int, ...] = (),
) -> list[Problem]:
    """Turn pydantic's errors into problems with line, field and a hint of what is valid.

    ``prefix`` is where in the file the validated value sits.
    """
    out = []
    for error in exc.errors(include_url=False):
        inner, message = _relocate(error, model)
        loc = (*prefix, *inner)
        field = located.field_of(loc)
        out.append(Problem(located.path, located.line_of(loc), field, message))
    return list(dict.fromkeys(out))


_FIELD_FIRST = re.compile(r"^([a-z_]+): (.+)$", re.DOTALL)


def _relocate(error: Any, model: type[BaseModel]) -> tuple[tuple[Any, ...], str]:
    """The error's location and message; a model-level message "field: ..." moves to that field."""
    loc, message = tuple(error["loc"]), _message(error, model)
    found = _FIELD_FIRST.match(message) if error["type"] == "value_error" else None
    if found and found.group(1) in _fields_at(model, loc):
        return (*loc, found.group(1)), found.group(2)
    return loc, message


def _message(error: Any, model: type[BaseModel]) -> str:
    kind, given = error["type"], error.get("input")
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        valid = _fields_at(model, error["loc"][:-1])
        close = [_SYNONYMS[name]] if _SYNONYMS.get(name) in valid else []
        close = close or difflib.get_close_matches(name, valid, n=1, cutoff=0.7)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        hint = f"; valid fields here: {', '.join(valid)}" if valid else ""
        return f"unknown field {name!r}{guess}{hint}"
    # explain() shows the input as written; a long one (a deep structure) is cut to a readable length.
    message = explain({**error, "input": _Shown(short(given))} if len(repr(given)) > 60 else error)
    if kind == "below_shape":
        return f"{short(given)} is neither a list of amounts nor a mapping; {message}"
    if given is None and message.startswith("None is not "):
        # `key:` with nothing after it: say so rather than show Python's None.
        _, _, hint = message.partition("; ")
        return f"no value; {hint}" if hint else "no value; write one here"
    return message


# Words other tools use for our fields; suggested only where the field is valid.
_SYNONYMS = {
    "threshold": "below",
    "thresholds": "below",
    "steps": "below",
    "recipients": "notify",
    "emails": "notify",
    "email": "notify",
    "to": "notify",
    "reminder": "remind",
    "repeat": "remind",
    "interval": "remind",
    "hysteresis": "rearm",
    "selector": "accounts",
    "match": "accounts",
    "name": "id",
    "rules": "alerts",
    "currencies": "currency",
}


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Shown:
    """Stands in for a value whose repr is too long to print whole."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if field is None:
            continue
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
