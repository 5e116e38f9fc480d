"""The accounts a report goes to: which timezones they are in, and each zone's accounts in batches.

A report goes to paying accounts only (a subaccount's usage is in its main
account's report), enabled, matched by the report's selector. An account's
zone is its own timezone, else ``defaults.timezone``. The billing platform
writes the column, so its values are taken as ``platform_data`` reads them: a
zone spelled with other letter case or stray spaces is that zone, and an
account whose timezone is not a zone at all (or whose locale Babel does not
know) gets its reports in the default zone (locale), with a warning once per
account: never dropped, never failing the batch it is in.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, select

from balancewatch.config import Settings
from balancewatch.evaluate.candidates import account_filter
from balancewatch.reports.base import AccountInfo
from balancewatch.rules.reports import CompiledReport
from balancewatch.store.platform_data import WARNED, account_locale, account_timezone, canonical_zone
from balancewatch.store.tables import ACCOUNT_TABLE

log = logging.getLogger(__name__)

ZONES_REFRESH = timedelta(minutes=5)


@dataclass(frozen=True)
class Zones:
    """The zones a report is sent in; the account timezones that are not zones (their accounts
    are in the default zone); and other spellings of a zone found in the column, by zone."""

    zones: tuple[str, ...]
    invalid: tuple[str, ...] = ()
    spellings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def written(self, zone: str) -> list[str]:
        """Every ``account.timezone`` value that means ``zone``: its name and its other spellings."""
        return [zone, *self.spellings.get(zone, ())]


def is_zone(name: str) -> bool:
    """True when ``name`` is an IANA zone as ``platform_data`` reads the column."""
    return canonical_zone(name) is not None


def snapshot_zone(report: CompiledReport, settings: Settings) -> str:
    """The one zone of an operators' report: its own, or the default for ``timezone: account``."""
    return settings.defaults.timezone if report.timezone == "account" else report.timezone


def chosen(report: CompiledReport) -> list[ColumnElement[bool]]:
    """The conditions on ``account`` for the accounts ``report`` goes to."""
    return [*account_filter(report.selector), ACCOUNT_TABLE.c.parent_id.is_(None)]


def account_zone(settings: Settings) -> Any:
    """An account's zone as written, else ``defaults.timezone`` (a SQL expression)."""
    return func.coalesce(ACCOUNT_TABLE.c.timezone, settings.defaults.timezone)


def report_zones(conn: Connection, report: CompiledReport, settings: Settings) -> Zones:
    """The zones ``report`` is sent in: the one it names, or its accounts' zones (one query)."""
    if report.contents == "low-balance":
        return Zones((snapshot_zone(report, settings),))
    if report.timezone != "account":
        return Zones((report.timezone,))
    names = conn.execute(select(account_zone(settings)).where(*chosen(report)).distinct()).scalars()
    default = settings.defaults.timezone
    valid: set[str] = set()
    invalid: list[str] = []
    spellings: dict[str, list[str]] = defaultdict(list)
    for name in names:
        zone = canonical_zone(name)
        if zone is None:
            invalid.append(name)
            valid.add(default)
            continue
        valid.add(zone)
        if zone != name:
            spellings[zone].append(name)
    # Looked up again every few minutes: said once per process for the same values.
    if invalid and WARNED.first(("report", report.id, tuple(sorted(invalid)))):
        log.warning(
            "report %s: accounts with timezone %s (not an IANA zone) get it in the default zone %s",
            report.id,
            ", ".join(repr(n) for n in sorted(invalid)),
            default,
        )
    return Zones(
        tuple(sorted(valid)),
        tuple(sorted(invalid)),
        {zone: tuple(sorted(names)) for zone, names in spellings.items()},
    )


def in_zone(report: CompiledReport, zone: str, zones: Zones, settings: Settings) -> list[ColumnElement[bool]]:
    """The condition selecting the accounts of ``zone`` (none for a report with a zone of its own):
    those whose timezone is written as ``zone`` or another spelling of it, and in the default
    zone also those without one or with one that is not a zone."""
    if report.timezone != "account" or report.contents == "low-balance":
        return []
    if zone == settings.defaults.timezone:
        return [account_zone(settings).in_([*zones.written(zone), *zones.invalid])]
    return [ACCOUNT_TABLE.c.timezone.in_(zones.written(zone))]


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
    account = ACCOUNT_TABLE.c
    query = (
        select(
            account.id, account.name, account.owner_email, account.locale, account.timezone, account.labels
        )
        .where(*chosen(report), *conditions)
        .order_by(account.id)
        .limit(size)
    )
    after: str | None = None
    while True:
        page = query if after is None else query.where(account.id > after)
        with engine.connect().execution_options(readonly=True) as conn:
            rows = conn.execute(page).all()
        if not rows:
            return
        yield [_info(r, settings) for r in rows]
        if len(rows) < size:
            return
        after = rows[-1].id


def _info(row: Any, settings: Settings) -> AccountInfo:
    """The account as a report formats for it: its locale and zone made trusted (platform_data)."""
    defaults = settings.defaults
    return AccountInfo(
        id=row.id,
        name=row.name,
        owner_email=row.owner_email,
        locale=account_locale(row.locale, defaults.locale, row.id),
        timezone=account_timezone(row.timezone, defaults.timezone, row.id),
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
