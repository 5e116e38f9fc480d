"""Points in time as users type them: ISO 8601, UTC unless an offset says otherwise."""

from __future__ import annotations

from datetime import UTC, datetime

EXAMPLE = "2026-03-14T09:30:00+05:30"


def parse_instant(text: str) -> datetime:
    """An aware datetime from ISO 8601 ``text``; without an offset it is UTC.

    Raises ValueError naming the text and showing an example.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as {EXAMPLE}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
