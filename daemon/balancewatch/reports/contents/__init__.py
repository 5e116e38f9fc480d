"""What a report says: one module per contents kind, built with grouped SQL over a batch.

``build`` dispatches on ``report.contents``; every kind yields
:class:`~balancewatch.reports.base.Built` objects whose ``context`` is
documented in docs/reports.md, with money in integer minor units
(:class:`~balancewatch.core.money.Money`) and dates in ``period.timezone``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import Connection

from balancewatch.config import Settings
from balancewatch.reports.base import AccountInfo, Built, Period
from balancewatch.reports.contents import daywise, low_balance, transactions, usage
from balancewatch.rules.reports import CompiledReport

KINDS = ("usage", "daywise", "transactions", "low-balance")


def build(
    conn: Connection,
    report: CompiledReport,
    accounts: Sequence[AccountInfo],
    period: Period,
    now: datetime,
    settings: Settings,
    *,
    rule_ids: Sequence[str] | None = None,
) -> Iterator[Built]:
    """The reports of ``accounts`` (a batch of paying accounts sharing ``period.timezone``).

    usage, daywise, transactions: one Built per account, in id order, an
    account without entries in the period included (``empty`` true).
    low-balance: one Built for the operators (``account`` None) over every
    account the report's selector matches; ``rule_ids`` are the rules whose
    fired steps count (None: all). Raises ValueError for an unknown kind.

    Rows are read while the iterator is consumed: keep ``conn`` open and its
    transaction uncommitted until the iterator is exhausted or closed.
    """
    if report.contents == "usage":
        return usage.build(conn, report, accounts, period, now, settings)
    if report.contents == "daywise":
        return daywise.build(conn, report, accounts, period, now, settings)
    if report.contents == "transactions":
        return transactions.build(conn, report, accounts, period, now, settings)
    if report.contents == "low-balance":
        return low_balance.build(conn, report, accounts, period, now, settings, rule_ids=rule_ids)
    raise ValueError(f"{report.contents!r} is not a report contents kind; one of {', '.join(KINDS)}")
