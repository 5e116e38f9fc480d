"""The types the report stages share: a period, the accounts of a batch, one built report.

Scheduling (``schedule``, ``runner``) decides *which* report is due for which
accounts and period; contents (``contents``) builds *what* each account's
report says, with grouped SQL over a whole batch of accounts at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Period:
    """A complete local day, week (Monday to Sunday) or month: ``[start, end)`` in ``timezone``.

    ``start`` and ``end`` are aware datetimes in that zone; ``key`` names the
    period in idempotency keys (``2026-03-14``, ``2026-W11``, ``2026-03``).
    """

    kind: str  # day | week | month | now (a low-balance snapshot)
    start: datetime
    end: datetime
    timezone: str
    key: str

    @property
    def first_day(self) -> date:
        return self.start.date()


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """An account a report is built for (a paying account: subaccounts are rolled into it)."""

    id: str
    name: str
    owner_email: str
    locale: str
    timezone: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Built:
    """One account's report: the template context, the CSV rows, and whether the period was empty.

    ``csv_header``/``csv_rows`` are the rows the email's table shows, as text,
    for the CSV attachment; ``empty`` is true when nothing happened in the period.
    """

    account: AccountInfo | None  # None for an operators' report (low-balance)
    context: dict[str, Any]
    csv_header: tuple[str, ...]
    csv_rows: list[tuple[str, ...]]
    empty: bool
