"""Durations written the way sysadmins write them: ``30s``, ``5m``, ``24h``, ``1d``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


MAX_SECONDS = 3650 * 86400  # ten years: longer is a typo, and timedelta overflows past ~2.7 million years


def parse_duration(value: Any) -> timedelta:
    """Parse ``value`` (a duration string, seconds as a number, or a timedelta).

    Raises ValueError naming the accepted forms when ``value`` is not one of them.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(_hint(value))
    elif isinstance(value, int | float | Decimal):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError(_hint(value))
    if seconds != seconds or seconds <= 0:  # NaN compares unequal to itself
        raise ValueError(f"{value!r} must be longer than zero")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{value!r} is too long an interval; at most 3650d")
    return timedelta(seconds=seconds)


def _parse_text(text: str) -> float:
    compact = text.replace(" ", "").lower()
    if re.fullmatch(r"\d+(\.\d+)?", compact):
        return float(compact)
    parts = _PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(_hint(text))
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def _hint(value: Any) -> str:
    return f"{value!r} is not a duration; write e.g. 30s, 5m, 24h, 1d or 1h30m"


def format_duration(delta: timedelta) -> str:
    """The shortest readable form: ``1d``, ``1h30m``, ``45s``."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return f"{delta.total_seconds():g}s"
    out = []
    for unit in ("d", "h", "m", "s"):
        size = int(_UNITS[unit])
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out)


_WORDS = ((604_800, "week"), (86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second"))


def every(delta: timedelta) -> str:
    """How often, for a reader: ``every day``, ``every 12 hours``, ``every 90 minutes``.

    The largest unit that divides ``delta`` exactly is used, so nothing is rounded away.
    """
    seconds = int(delta.total_seconds())
    for size, word in _WORDS:
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"every {word}" if n == 1 else f"every {n} {word}s"
    return f"every {format_duration(delta)}"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
