"""A template context as text, for a message decided now and rendered later (``render/stage.py``).

A decision writes its message's context into the outbox (``pack``) instead of rendering it in the
decision's transaction; the render stage reads it back (``unpack``) and renders it with the live
templates. The context is plain data (docs/templates.md): dicts with text keys, lists and tuples
(read back as lists), text, integers, floats, booleans and None as JSON; :class:`Money`, datetimes,
dates, Decimals and timedeltas as a one-key object ``{"$bw": [type, ...]}``. JSON, not pickle: the
outbox is a table others can write, and reading it must never run code.

The text is versioned (``v``) so that a row queued by one release is read by the next.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from balancewatch.core.money import Money

VERSION = 1
EMAIL, CHAT = "email", "chat"  # the part a queued row is: the email, or a chat channel's text
_TAG = "$bw"


class PackError(ValueError):
    """A context that cannot be written as text, or text that is not a packed context."""


def pack(context: Mapping[str, Any], part: str = EMAIL) -> str:
    """``context`` as compact JSON text, for the ``part`` (EMAIL or CHAT) of a message. Raises
    PackError for a value of a type a context does not hold."""
    try:
        return json.dumps(
            {"v": VERSION, "part": part, "context": context},
            ensure_ascii=False,
            separators=(",", ":"),
            default=_tagged,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise PackError(f"the template context cannot be stored: {exc}") from None


def unpack(text: str) -> tuple[dict[str, Any], str]:
    """The context and the part ``pack`` wrote; raises PackError for anything else."""
    try:
        packed = json.loads(text, object_hook=_untagged)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PackError(f"the stored template context is not readable: {exc}") from None
    if not isinstance(packed, dict) or packed.get("v") != VERSION:
        version = packed.get("v") if isinstance(packed, dict) else None
        raise PackError(f"the stored template context has version {version!r}; this release reads {VERSION}")
    context, part = packed.get("context"), packed.get("part")
    if not isinstance(context, dict) or part not in (EMAIL, CHAT):
        raise PackError("the stored template context has no context or part")
    return context, part


def _tagged(value: object) -> dict[str, list[Any]]:
    """The JSON form of a value json cannot write itself (its ``default``)."""
    if isinstance(value, Money):
        return {_TAG: ["money", value.minor, value.currency]}
    if isinstance(value, datetime):  # before date: a datetime is a date
        return {_TAG: ["datetime", value.isoformat()]}
    if isinstance(value, date):
        return {_TAG: ["date", value.isoformat()]}
    if isinstance(value, Decimal):
        return {_TAG: ["decimal", str(value)]}
    if isinstance(value, timedelta):
        return {_TAG: ["timedelta", value.days, value.seconds, value.microseconds]}
    raise TypeError(f"a {type(value).__name__} is not a template value")


_READERS: dict[str, Any] = {
    "money": lambda minor, currency: Money(int(minor), str(currency)),
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "decimal": Decimal,
    "timedelta": lambda days, seconds, micro: timedelta(days=days, seconds=seconds, microseconds=micro),
}


def _untagged(obj: dict[str, Any]) -> Any:
    """A tagged object read back; any other object (or one whose tag does not read) as it is."""
    if len(obj) != 1 or _TAG not in obj:
        return obj
    tag = obj[_TAG]
    if not isinstance(tag, list) or not tag or tag[0] not in _READERS:
        return obj
    try:
        return _READERS[tag[0]](*tag[1:])
    except (TypeError, ValueError, InvalidOperation, OverflowError):
        return obj
