"""What every contents kind shares: local days, the batch's accounts, balances at an instant,
grouped ledger rows, and the parts of a context that do not depend on the kind.

Local days are computed in Python (``zoneinfo``) as UTC instants of each
local midnight, so a 23- or 25-hour day of a DST change is one day, and the
ledger is bucketed in SQL against those instants: SQLite has no time zones.

A batch is read with a few grouped queries, whatever its size: the accounts'
families (a paying account and its subaccounts), the currencies they hold,
their balances at the instants a report needs, and the ledger rows grouped
per paying account, ordered by it so each account's report is built and
yielded before the next one's rows are read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from itertools import groupby
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from babel.dates import format_datetime, format_interval, format_skeleton
from sqlalchemy import ColumnElement, Connection, Integer, case, func, literal_column, select

from balancewatch.config import Settings
from balancewatch.core.money import to_major
from balancewatch.evaluate import usage
from balancewatch.evaluate.usage import Figures
from balancewatch.reports.base import AccountInfo, Built, Period
from balancewatch.rules.reports import CompiledReport
from balancewatch.store.tables import Account, Balance, LedgerEntry

L = LedgerEntry.__table__.c  # type: ignore[attr-defined]
LEDGER = LedgerEntry.__table__  # type: ignore[attr-defined]
ACCOUNT = Account.__table__  # type: ignore[attr-defined]
A = ACCOUNT.c
BALANCE = Balance.__table__  # type: ignore[attr-defined]
B = BALANCE.c
PAYER = func.coalesce(A.parent_id, A.id)
LEDGER_SOURCE, DERIVED = "ledger", "derived"
PREVIOUS = -1  # the day index of rows in the previous period
T = TypeVar("T")


# --- days -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalDay:
    """One local day of a period: its date and ``[start, end)`` as UTC instants."""

    date: date
    start: datetime
    end: datetime


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant the local ``day`` begins (at a DST gap over midnight, when the day begins)."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


@lru_cache(maxsize=256)
def local_days(period: Period) -> tuple[LocalDay, ...]:
    """Every local day of ``period``, first to last, bounded by the period's own start and end."""
    zone = ZoneInfo(period.timezone)
    start, end = period.start.astimezone(UTC), period.end.astimezone(UTC)
    days = []
    day = period.start.astimezone(zone).date()
    while True:
        begins = max(local_midnight(day, zone), start)
        if begins >= end:
            break
        days.append(LocalDay(day, begins, min(local_midnight(day + timedelta(days=1), zone), end)))
        day += timedelta(days=1)
    return tuple(days)


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of local days ``[start, end)`` (UTC instants), first and last day included."""

    start: datetime
    end: datetime
    first_day: date
    last_day: date
    key: str


def period_key(kind: str, first_day: date) -> str:
    """``2026-03-14``, ``2026-W11`` or ``2026-03``."""
    if kind == "month":
        return first_day.strftime("%Y-%m")
    if kind == "week":
        year, week, _ = first_day.isocalendar()
        return f"{year}-W{week:02d}"
    return first_day.isoformat()


@lru_cache(maxsize=256)
def previous_span(period: Period) -> Span:
    """The day, week or month just before ``period``, ending where it starts."""
    zone = ZoneInfo(period.timezone)
    first = period.start.astimezone(zone).date()
    if period.kind == "month":
        begins = (first - timedelta(days=1)).replace(day=1)
    elif period.kind == "week":
        begins = first - timedelta(days=7)
    else:
        begins = first - timedelta(days=1)
    return Span(
        local_midnight(begins, zone),
        period.start.astimezone(UTC),
        begins,
        first - timedelta(days=1),
        period_key(period.kind, begins),
    )


@lru_cache(maxsize=1024)
def span_label(kind: str, first: date, last: date, locale: str) -> str:
    """``March 2026``, ``Mar 9 – 15, 2026`` or ``Sat, Mar 14, 2026`` in ``locale``."""
    if kind == "month":
        return format_skeleton("yMMMM", first, locale=locale)
    if kind == "week":
        return format_interval(first, last, "yMMMd", locale=locale)
    return format_skeleton("yMMMEd", first, locale=locale)


# A batch formats the same few dates in a few locales for thousands of accounts.
@lru_cache(maxsize=8192)
def day_label(day: date, locale: str) -> str:
    """``Sun, Mar 1`` in en_US, ``So., 1. März`` in de_DE."""
    return format_skeleton("MMMEd", day, locale=locale)


# --- numbers ----------------------------------------------------------------------------------------


def percent(part: int, whole: int) -> Decimal | None:
    """``part`` of ``whole`` in percent to one decimal (half up); None when ``whole`` is not above 0."""
    if whole <= 0:
        return None
    return (Decimal(part) * 100 / whole).quantize(Decimal("0.1"), ROUND_HALF_UP)


def bar_percent(value: int, highest: int) -> int:
    """A bar's length, 0 to 100, for ``value`` against the ``highest`` bar; at least 1 when above 0."""
    if value <= 0 or highest <= 0:
        return 0
    return max(1, int((Decimal(value) * 100 / highest).to_integral_value(ROUND_HALF_UP)))


def divide(minor: int, by: int) -> int:
    """``minor`` / ``by`` in minor units, rounded half up (away from zero)."""
    return int((Decimal(minor) / by).to_integral_value(ROUND_HALF_UP)) if by else 0


def major_text(minor: int, currency: str) -> str:
    """An amount for a CSV cell: major units as a plain decimal (``-12.50``, ``1200`` JPY)."""
    return format(to_major(minor, currency), "f")


def optional_int(value: int | None) -> str:
    return "" if value is None else str(value)


# --- the batch --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """An account of a paying account's family: the paying account itself or one of its subaccounts."""

    id: str
    name: str
    main: bool


@dataclass(frozen=True, slots=True)
class Point:
    """A balance at an instant and where it came from: ``ledger`` (the ``balance_after`` of the
    last entry before the instant) or ``derived`` (the balance now less every entry since)."""

    amount: int
    source: str


@dataclass(frozen=True, slots=True)
class Holding:
    """One balance of a paying account as a report sees it: the amount now, the balance at each
    instant the report asked for, and the stored usage figures (None without a summary)."""

    currency: str
    now: int
    at: tuple[Point, ...]
    figures: Figures | None = None


@dataclass(frozen=True)
class Batch:
    """Accounts of one batch (sorted by id) and what every kind reads about them up front."""

    accounts: tuple[AccountInfo, ...]
    members: Mapping[str, tuple[Member, ...]]  # paying account -> itself first, then subaccounts by id
    currencies: Mapping[str, tuple[str, ...]]  # paying account -> currencies it holds a balance in
    current: Mapping[tuple[str, str], int]  # (paying account, currency) -> balance now
    points: Mapping[tuple[str, str], tuple[Point, ...]]  # one per instant asked for

    @property
    def member_ids(self) -> list[str]:
        return sorted(m.id for family in self.members.values() for m in family)

    @property
    def all_currencies(self) -> list[str]:
        return sorted({c for cs in self.currencies.values() for c in cs})

    def keys(self) -> list[tuple[str, str]]:
        return [(payer, c) for payer, cs in self.currencies.items() for c in cs]

    def holdings(self, payer: str, figures: Mapping[tuple[str, str], Figures] | None = None) -> list[Holding]:
        """The balances of ``payer``, by currency."""
        return [
            Holding(
                c, self.current[(payer, c)], self.points.get((payer, c), ()), (figures or {}).get((payer, c))
            )
            for c in self.currencies.get(payer, ())
        ]


def load_batch(
    conn: Connection, report: CompiledReport, accounts: Sequence[AccountInfo], instants: Sequence[datetime]
) -> Batch:
    """Families, currencies and balances at ``instants`` for ``accounts``: four queries."""
    ordered = tuple(sorted(accounts, key=lambda a: a.id))
    ids = [a.id for a in ordered]
    members = _families(conn, ids, {a.id: a.name for a in ordered})
    currencies: dict[str, list[str]] = defaultdict(list)
    current: dict[tuple[str, str], int] = {}
    if ids:
        query = select(B.account_id, B.currency, B.amount).where(B.account_id.in_(ids))
        if report.selector.currencies is not None:
            query = query.where(B.currency.in_(report.selector.currencies))
        for r in conn.execute(query.order_by(B.account_id, B.currency)):
            currencies[r.account_id].append(r.currency)
            current[(r.account_id, r.currency)] = int(r.amount)
    batch = Batch(ordered, members, {payer: tuple(cs) for payer, cs in currencies.items()}, current, {})
    return replace(batch, points=balances_at(conn, batch, instants)) if instants else batch


def _families(conn: Connection, ids: list[str], names: Mapping[str, str]) -> dict[str, tuple[Member, ...]]:
    out: dict[str, list[Member]] = {i: [Member(i, names[i], True)] for i in ids}
    if ids:
        query = select(A.id, A.name, A.parent_id).where(A.parent_id.in_(ids)).order_by(A.parent_id, A.id)
        for r in conn.execute(query):
            out[r.parent_id].append(Member(r.id, r.name, False))
    return {payer: tuple(family) for payer, family in out.items()}


def balances_at(
    conn: Connection, batch: Batch, instants: Sequence[datetime]
) -> dict[tuple[str, str], tuple[Point, ...]]:
    """Each balance of the batch at each of ``instants``: two queries.

    The ``balance_after`` of the family's last entry before the instant when it
    has one (``ledger``); else the balance now less the family's entries at or
    after the instant (``derived``), as when a billing system writes the ledger
    without ``balance_after``.
    """
    if not batch.keys() or not instants:
        return {}
    last = _last_entries(conn, batch, instants)
    later = _later_sums(conn, batch, instants)
    out = {}
    for key, now_amount in batch.current.items():
        points = []
        for i in range(len(instants)):
            found = last.get((*key, i))
            if found is not None and found[2] is not None:
                points.append(Point(int(found[2]), LEDGER_SOURCE))
            else:
                points.append(Point(now_amount - later.get((*key, i), 0), DERIVED))
        out[key] = tuple(points)
    return out


def _last_entries(
    conn: Connection, batch: Batch, instants: Sequence[datetime]
) -> dict[tuple[str, str, int], tuple[datetime, int, int | None]]:
    """(occurred_at, id, balance_after) of each family's last entry before each instant.

    One indexed probe per family member, currency and instant (the ledger's
    (account, currency, time) index read backwards), so history before the
    period is never scanned.
    """
    cols: list[Any] = [PAYER.label("payer"), B.currency]
    for i, at in enumerate(instants):
        last = (
            select(L.id)
            .where(L.account_id == A.id, L.currency == B.currency, L.occurred_at < at)
            .order_by(L.occurred_at.desc(), L.id.desc())
            .limit(1)
            .correlate(ACCOUNT, BALANCE)
            .scalar_subquery()
        )
        cols.append(last.label(f"last{i}"))
    pairs = (
        select(*cols)
        .select_from(ACCOUNT.join(BALANCE, B.account_id == PAYER))
        .where(A.id.in_(batch.member_ids), B.currency.in_(batch.all_currencies))
        .subquery("pairs")
    )
    query = select(pairs.c.payer, pairs.c.currency)
    joined: Any = pairs
    for i in range(len(instants)):
        entry = LEDGER.alias(f"e{i}")
        joined = joined.outerjoin(entry, entry.c.id == pairs.c[f"last{i}"])
        query = query.add_columns(
            entry.c.id.label(f"id{i}"),
            entry.c.occurred_at.label(f"at{i}"),
            entry.c.balance_after.label(f"after{i}"),
        )
    out: dict[tuple[str, str, int], tuple[datetime, int, int | None]] = {}
    for r in conn.execute(query.select_from(joined)):
        for i in range(len(instants)):
            entry_id = r._mapping[f"id{i}"]
            if entry_id is None:
                continue
            seen = (r._mapping[f"at{i}"], int(entry_id), r._mapping[f"after{i}"])
            key = (r.payer, r.currency, i)
            if key not in out or seen[:2] > out[key][:2]:
                out[key] = seen
    return out


def _later_sums(
    conn: Connection, batch: Batch, instants: Sequence[datetime]
) -> dict[tuple[str, str, int], int]:
    """The sum of each family's entries at or after each instant, by paying account and currency."""
    sums = [
        func.sum(case((L.occurred_at >= at, L.amount), else_=0)).label(f"later{i}")
        for i, at in enumerate(instants)
    ]
    query = (
        select(PAYER.label("payer"), L.currency, *sums)
        .select_from(LEDGER.join(ACCOUNT, A.id == L.account_id))
        .where(
            L.account_id.in_(batch.member_ids),
            L.currency.in_(batch.all_currencies),
            L.occurred_at >= min(instants),
        )
        .group_by(PAYER, L.currency)
    )
    return {
        (r.payer, r.currency, i): int(r._mapping[f"later{i}"] or 0)
        for r in conn.execute(query)
        for i in range(len(instants))
    }


def figures_of(
    conn: Connection, batch: Batch, options: Options, now: datetime
) -> dict[tuple[str, str], Figures]:
    """The average daily usage of every balance of the batch (over ``options.window_days``): the
    stored summary, computed as of ``now`` for the balances it has no row for yet."""
    window = options.window_days
    return usage.current(conn, batch.keys(), [window], now, options.min_history)[window]


@dataclass(frozen=True, slots=True)
class Options:
    """The settings a report's numbers depend on (``defaults.locale`` and ``usage.*``)."""

    default_locale: str = "en_US"
    window_days: int = 30
    min_history: timedelta = timedelta(days=3)
    recommend_days: Decimal = Decimal(1)

    @classmethod
    def of(cls, settings: Settings) -> Options:
        return cls(
            settings.defaults.locale,
            settings.usage.window_days,
            settings.usage.min_history,
            settings.usage.recommend_days,
        )


# --- grouped ledger rows ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Group:
    """Ledger entries of one family member, currency, kind, service and local day, summed.

    ``day`` is the index of the local day in the period, or PREVIOUS for the
    period before it. ``credit`` sums the positive amounts, ``debit`` the
    negative ones (minor units); ``quantity`` is None when no entry gave one.
    """

    currency: str
    day: int
    credit: int
    debit: int
    entries: int
    member: str = ""
    kind: str = ""
    service: str | None = None
    quantity: int | None = None

    @property
    def amount(self) -> int:
        return self.credit + self.debit


def sorted_by_payer(conn: Connection, expr: Any) -> Any:
    """``expr`` ordered as Python orders strings (code points): ``COLLATE "C"`` on PostgreSQL."""
    return expr.collate("C") if conn.dialect.name == "postgresql" else expr


def day_bucket(days: Sequence[LocalDay], since: datetime) -> ColumnElement[Any]:
    """The index of the local day an entry falls in (PREVIOUS before the first day's start)."""
    whens: list[tuple[Any, int]] = []
    if since < days[0].start:
        whens.append((L.occurred_at < days[0].start, PREVIOUS))
    whens += [(L.occurred_at < d.end, i) for i, d in enumerate(days[:-1])]
    return case(*whens, else_=len(days) - 1) if whens else literal_column("0", Integer)


GROUP_BY = {"member": L.account_id, "kind": L.kind, "service": L.service}


def grouped(
    conn: Connection,
    batch: Batch,
    days: Sequence[LocalDay],
    since: datetime,
    by: Sequence[str] = ("member", "kind", "service"),
) -> Iterator[tuple[AccountInfo, list[Group]]]:
    """Each account of the batch with its ledger from ``since`` to the end of the period,
    grouped by currency, local day and ``by`` (of member, kind and service).

    One query, its rows read in account order while the caller consumes them.
    """
    if not batch.keys() or not days:
        yield from ((a, []) for a in batch.accounts)
        return
    inner = (
        select(
            PAYER.label("payer"),
            L.currency,
            day_bucket(days, since).label("day"),
            *(GROUP_BY[name].label(name) for name in by),
            L.amount,
            L.quantity,
        )
        .select_from(LEDGER.join(ACCOUNT, A.id == L.account_id))
        .where(
            L.account_id.in_(batch.member_ids),
            L.currency.in_(batch.all_currencies),
            L.occurred_at >= since,
            L.occurred_at < days[-1].end,
        )
        .subquery("entries")
    )
    e = inner.c
    keys = [e.payer, e.currency, e.day, *(e[name] for name in by)]
    query = (
        select(
            *keys,
            func.sum(case((e.amount > 0, e.amount), else_=0)).label("credit"),
            func.sum(case((e.amount < 0, e.amount), else_=0)).label("debit"),
            func.sum(e.quantity).label("quantity"),
            func.count().label("entries"),
        )
        .group_by(*keys)
        .order_by(sorted_by_payer(conn, e.payer), *keys[1:])
    )
    wanted = set(batch.keys())

    def groups(rows: Iterable[Any]) -> list[Group]:
        return [
            Group(
                r.currency,
                int(r.day),
                int(r.credit or 0),
                int(r.debit or 0),
                int(r.entries),
                r.member if "member" in by else "",
                r.kind if "kind" in by else "",
                r.service if "service" in by else None,
                None if r.quantity is None else int(r.quantity),
            )
            for r in rows
            if (r.payer, r.currency) in wanted
        ]

    result = conn.execute(query, execution_options={"yield_per": 2000})
    try:
        yield from per_account(batch.accounts, ((r.payer, r) for r in result), groups)
    finally:
        result.close()


def per_account(
    accounts: Sequence[AccountInfo],
    rows: Iterable[tuple[str, Any]],
    collect: Callable[[Iterable[Any]], T],
) -> Iterator[tuple[AccountInfo, T]]:
    """Merge ``rows`` (``(paying account, row)``, in account order) with ``accounts`` (sorted by
    id): each account with ``collect(its rows)``, an account without rows with ``collect([])``."""
    families = groupby(rows, key=lambda pair: pair[0])
    pending = next(families, None)
    for account in accounts:
        while pending is not None and pending[0] < account.id:
            pending = next(families, None)
        if pending is not None and pending[0] == account.id:
            yield account, collect(r for _, r in pending[1])
            pending = next(families, None)
        else:
            yield account, collect([])


# --- context ----------------------------------------------------------------------------------------


def locale_of(account: AccountInfo | None, options: Options) -> str:
    """The account's locale, else ``defaults.locale``."""
    return (account.locale if account is not None else "") or options.default_locale


def base_context(
    report: CompiledReport,
    account: AccountInfo | None,
    period: Period,
    now: datetime,
    locale: str,
) -> dict[str, Any]:
    """The keys every report context has: locale, timezone, now, report, period and (for an
    owner's report) account."""
    zone = ZoneInfo(period.timezone)
    days = local_days(period) if period.kind in ("day", "week", "month") else ()
    if days:
        first, last = days[0].date, days[-1].date
        label = span_label(period.kind, first, last, locale)
    else:
        first = last = now.astimezone(zone).date()
        label = format_datetime(now, "medium", tzinfo=zone, locale=locale)
    context: dict[str, Any] = {
        "locale": locale,
        "timezone": period.timezone,
        "now": now,
        "report": {
            "id": report.id,
            "description": report.description,
            "contents": report.contents,
            "period": report.period,
            "attach_csv": report.attach_csv,
        },
        "period": {
            "kind": period.kind,
            "key": period.key,
            "start": period.start.astimezone(zone),
            "end": period.end.astimezone(zone),
            "first_day": first,
            "last_day": last,
            "days": len(days),
            "label": label,
        },
    }
    if account is not None:
        context["account"] = {
            "id": account.id,
            "name": account.name,
            "owner_email": account.owner_email,
            "labels": dict(account.labels),
        }
    return context


Section = tuple[dict[str, Any], list[tuple[str, ...]]]  # one currency's context and its CSV rows


def assemble(
    account: AccountInfo,
    context: dict[str, Any],
    holdings: Sequence[Holding],
    items: Iterable[Any],
    section: Callable[[Holding, list[Any]], Section],
    active: Callable[[dict[str, Any]], Any],
    csv_header: tuple[str, ...],
) -> Built:
    """An account's report: one section per balance held, from the ``items`` (each with a
    ``currency``) in that currency, in holding order; empty when no section is ``active``."""
    by_currency: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        by_currency[item.currency].append(item)
    sections, rows = [], []
    for holding in holdings:
        part, part_rows = section(holding, by_currency[holding.currency])
        sections.append(part)
        rows.extend(part_rows)
    empty = not any(active(s) for s in sections)
    context["currencies"] = sections
    context["empty"] = empty
    return Built(account, context, csv_header, rows, empty)
