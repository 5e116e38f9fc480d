"""The accounts a report goes to: which timezones they are in, and each zone's accounts in batches.

A report goes to paying accounts only (a subaccount's usage is in its main
account's report), enabled, matched by the report's selector. An account's
zone is its own timezone, else ``defaults.timezone``; an account whose
timezone is not a zone (the billing system wrote something else) gets its
reports in the default zone, and a warning says so.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, Connection, Engine, func, select

from balancewatch.config import Settings
from balancewatch.evaluate.candidates import A, account_filter
from balancewatch.reports.base import AccountInfo
from balancewatch.rules.reports import CompiledReport

log = logging.getLogger(__name__)

ZONES_REFRESH = timedelta(minutes=5)


@dataclass(frozen=True)
class Zones:
    """The zones a report is sent in, and the account timezones that are not zones."""

    zones: tuple[str, ...]
    invalid: tuple[str, ...] = ()


def is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def snapshot_zone(report: CompiledReport, settings: Settings) -> str:
    """The one zone of an operators' report: its own, or the default for ``timezone: account``."""
    return settings.defaults.timezone if report.timezone == "account" else report.timezone


def chosen(report: CompiledReport) -> list[ColumnElement[bool]]:
    """The conditions on ``account`` for the accounts ``report`` goes to."""
    return [*account_filter(report.selector), A.parent_id.is_(None)]


def account_zone(settings: Settings) -> Any:
    return func.coalesce(A.timezone, settings.defaults.timezone)


def report_zones(conn: Connection, report: CompiledReport, settings: Settings) -> Zones:
    """The zones ``report`` is sent in: the one it names, or its accounts' zones (one query)."""
    if report.contents == "low-balance":
        return Zones((snapshot_zone(report, settings),))
    if report.timezone != "account":
        return Zones((report.timezone,))
    names = conn.execute(select(account_zone(settings)).where(*chosen(report)).distinct()).scalars()
    valid, invalid = [], []
    for name in names:
        (valid if is_zone(name) else invalid).append(name)
    if invalid:
        log.warning(
            "report %s: accounts with timezone %s (not an IANA zone) get it in the default zone %s",
            report.id,
            ", ".join(repr(n) for n in sorted(invalid)),
            settings.defaults.timezone,
        )
        valid.append(settings.defaults.timezone)
    return Zones(tuple(sorted(set(valid))), tuple(sorted(invalid)))


def in_zone(report: CompiledReport, zone: str, zones: Zones, settings: Settings) -> list[ColumnElement[bool]]:
    """The condition selecting the accounts of ``zone`` (none for a report with a zone of its own)."""
    if report.timezone != "account" or report.contents == "low-balance":
        return []
    if zone == settings.defaults.timezone:
        return [account_zone(settings).in_([zone, *zones.invalid])]
    return [A.timezone == zone]


def batches(
    engine: Engine,
    report: CompiledReport,
    conditions: Sequence[ColumnElement[bool]],
    settings: Settings,
    size: int,
) -> Iterator[list[AccountInfo]]:
    """The accounts of ``report`` that meet ``conditions``, by id, ``size`` at a time.

    Each batch is read on its own (keyset pagination on the id), so memory
    stays bounded and no read transaction stays open between batches.
    """
    query = (
        select(A.id, A.name, A.owner_email, A.locale, A.timezone, A.labels)
        .where(*chosen(report), *conditions)
        .order_by(A.id)
        .limit(size)
    )
    after: str | None = None
    while True:
        page = query if after is None else query.where(A.id > after)
        with engine.connect().execution_options(readonly=True) as conn:
            rows = conn.execute(page).all()
        if not rows:
            return
        yield [_info(r, settings) for r in rows]
        if len(rows) < size:
            return
        after = rows[-1].id


def _info(row: Any, settings: Settings) -> AccountInfo:
    zone = row.timezone if row.timezone and is_zone(row.timezone) else settings.defaults.timezone
    return AccountInfo(
        id=row.id,
        name=row.name,
        owner_email=row.owner_email,
        locale=row.locale or settings.defaults.locale,
        timezone=zone,
        labels=dict(row.labels or {}),
    )


@dataclass
class ZoneCache:
    """The zones of each report, looked up again after ``ttl`` (or when the report changed).

    A zone that appears (a new account's timezone) is found within ``ttl``;
    its cursor then starts ``reports.misfire_grace`` back, so a fire time in
    between is still sent as long as the grace is longer than ``ttl``.
    """

    ttl: timedelta = ZONES_REFRESH
    _known: dict[str, tuple[CompiledReport, datetime, Zones]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, conn: Connection, report: CompiledReport, settings: Settings, now: datetime) -> Zones:
        with self._lock:
            known = self._known.get(report.id)
        if known is not None and known[0] == report and now - known[1] < self.ttl and now >= known[1]:
            return known[2]
        zones = report_zones(conn, report, settings)
        with self._lock:
            self._known[report.id] = (report, now, zones)
        return zones
