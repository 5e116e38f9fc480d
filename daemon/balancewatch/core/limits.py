"""The render budget as configured: how long one email may take to render and how large it may
be, and sizes written the way sysadmins write them (``1MB``, ``512kB``).

A leaf module: ``config`` reads these values, ``render`` and ``budget`` enforce them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

from balancewatch.core.durations import format_duration

MAX_TIMEOUT = 60.0  # seconds; one email rendering for longer is a mistake, not a template
MIN_SIZE, MAX_SIZE = 1_000, 100_000_000  # bytes


@dataclass(frozen=True, slots=True)
class RenderBudget:
    """How long one email may take to render (seconds) and how large it may be (characters of
    subject, text and HTML together; bytes for ASCII text)."""

    timeout: float = 2.0
    max_size: int = 1_000_000

    def timeout_text(self) -> str:
        """``2s``, ``0.5s``: as a sysadmin writes it in config.yaml."""
        return f"{self.timeout:g}s"

    def size_text(self) -> str:
        """``1 MB``, ``512 kB``."""
        return format_size(self.max_size)


DEFAULT_BUDGET = RenderBudget()

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(value: Any) -> int:
    """A size in bytes from a whole number of bytes or text such as ``1MB``, ``512kB`` or ``1MiB``.

    Raises ValueError (one line, naming the accepted forms and bounds) for anything else.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        size = int(float(match[1]) * _UNITS[(match[2] or "b").lower()])
    else:
        raise ValueError(f"{value!r} is not a size; write e.g. 1MB, 512kB or a number of bytes")
    if size <= 0:
        raise ValueError(f"{value!r} must be larger than zero")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(
            f"{value!r} is out of range; write {format_size(MIN_SIZE)} to {format_size(MAX_SIZE)}"
        )
    return size


def format_size(size: int) -> str:
    """The shortest exact form: ``1 MB``, ``512 kB``, ``1 MiB``, ``1,500 bytes``."""
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("MiB", 2**20), ("kB", 10**3), ("KiB", 2**10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size:,} bytes"


def check_timeout(value: timedelta) -> timedelta:
    """A render timeout: positive (the Duration type sees to that) and at most a minute."""
    if value.total_seconds() > MAX_TIMEOUT:
        raise ValueError(f"{format_duration(value)} is too long for one email to render; at most 1m")
    return value


Size = Annotated[int, BeforeValidator(parse_size)]
