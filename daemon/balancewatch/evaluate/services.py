"""What a balance's usage is made of: a unit price per service, and the usage of each subaccount.

Estimated messages left for a service is the balance divided by the unit
price of one unit (an SMS, a voice minute), rounded down; nothing is left at
or below zero. The unit price comes from ``prices`` in the configuration
when it names the currency and service (exact, as written), else from the
ledger: the cost of the usage entries that carry a quantity, divided by
their quantity, over the usage window, for the paying account and its
subaccounts together. A service with neither gets no estimate: never a guess.

Both ledger reads are set-based: one grouped query for a whole chunk of
balances, as evaluation needs them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from math import floor

from sqlalchemy import Connection, and_, func, or_, select

from balancewatch.core.money import exponent
from balancewatch.evaluate.load import one_of
from balancewatch.store.tables import ACCOUNT_TABLE, LEDGER_TABLE

Key = tuple[str, str]  # (paying account, currency)
CONFIGURED, LEDGER_SOURCE = "configured", "ledger"
LEDGER_PRICE_DECIMALS = Decimal("0.000001")  # a ledger-derived price, as shown


@dataclass(frozen=True, slots=True)
class LedgerPrice:
    """What the ledger says one unit of a service costs: ``cost`` (minor units) for ``quantity`` units."""

    service: str
    cost: int
    quantity: int


@dataclass(frozen=True, slots=True)
class MessagesLeft:
    """The estimate for one service. ``unit_price`` is in major units: exact when configured,
    the ledger's average to six decimals otherwise (``count`` uses the exact ratio).
    ``cost`` and ``quantity`` are the ledger figures the price came from (None when configured)."""

    service: str
    count: int
    unit_price: Decimal
    currency: str
    source: str  # configured | ledger
    cost: int | None = None
    quantity: int | None = None


@dataclass(frozen=True, slots=True)
class SubaccountUsage:
    """One subaccount of a paying account and its usage (minor units) in one currency over the window."""

    id: str
    name: str
    used: int


def messages_left(
    balance: int,
    currency: str,
    configured: Mapping[str, Decimal],
    derived: Mapping[str, LedgerPrice],
) -> list[MessagesLeft]:
    """The estimate for every service priced in ``configured`` or ``derived``, sorted by service.

    A configured price wins over the ledger's. ``count`` is floor(balance / unit price)
    for a balance above zero, else 0; computed exactly, never through float.
    """
    scale = 10 ** exponent(currency)
    out = []
    for service in sorted(set(configured) | set(derived)):
        if service in configured:
            price = configured[service]
            ratio = Fraction(balance, scale) / Fraction(price)
            out.append(MessagesLeft(service, _count(balance, ratio), price, currency, CONFIGURED))
        else:
            seen = derived[service]
            ratio = Fraction(balance * seen.quantity, seen.cost)
            price = _shown(Fraction(seen.cost, scale * seen.quantity))
            out.append(
                MessagesLeft(
                    service, _count(balance, ratio), price, currency, LEDGER_SOURCE, seen.cost, seen.quantity
                )
            )
    return out


def _count(balance: int, ratio: Fraction) -> int:
    return floor(ratio) if balance > 0 else 0


def _shown(price: Fraction) -> Decimal:
    exact = (Decimal(price.numerator) / Decimal(price.denominator)).quantize(
        LEDGER_PRICE_DECIMALS, ROUND_HALF_UP
    )
    trimmed = exact.normalize()  # 0.007500 -> 0.0075; 10 -> 1E+1, put back below
    places = trimmed.as_tuple().exponent
    return trimmed.quantize(Decimal(1)) if isinstance(places, int) and places > 0 else trimmed


def ledger_prices(
    conn: Connection, keys: Sequence[Key], now: datetime, window_days: int
) -> dict[Key, dict[str, LedgerPrice]]:
    """Cost and quantity per service of each of ``keys`` (paying account, currency) over the
    ``window_days`` before ``now``, subaccounts included, in one grouped query.

    Only usage entries with a service and a quantity above zero count; a service
    whose entries cost nothing in total is left out.
    """
    if not keys:
        return {}
    payers = [k[0] for k in keys]
    family = (
        select(ACCOUNT_TABLE.c.id)
        .where(or_(one_of(conn, ACCOUNT_TABLE.c.id, payers), one_of(conn, ACCOUNT_TABLE.c.parent_id, payers)))
        .scalar_subquery()
    )
    paying = func.coalesce(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id)
    query = (
        select(
            paying.label("payer"),
            LEDGER_TABLE.c.currency,
            LEDGER_TABLE.c.service,
            func.sum(-LEDGER_TABLE.c.amount).label("cost"),
            func.sum(LEDGER_TABLE.c.quantity).label("quantity"),
        )
        .select_from(LEDGER_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == LEDGER_TABLE.c.account_id))
        .where(
            LEDGER_TABLE.c.account_id.in_(family),
            LEDGER_TABLE.c.currency.in_(sorted({k[1] for k in keys})),
            LEDGER_TABLE.c.kind == "usage",
            LEDGER_TABLE.c.service.isnot(None),
            LEDGER_TABLE.c.quantity > 0,
            LEDGER_TABLE.c.occurred_at >= now - timedelta(days=window_days),
            LEDGER_TABLE.c.occurred_at <= now,
        )
        .group_by(paying, LEDGER_TABLE.c.currency, LEDGER_TABLE.c.service)
    )
    wanted = set(keys)
    out: dict[Key, dict[str, LedgerPrice]] = defaultdict(dict)
    for r in conn.execute(query):
        key = (r.payer, r.currency)
        cost, quantity = int(r.cost or 0), int(r.quantity or 0)
        if key in wanted and cost > 0 and quantity > 0:
            out[key][r.service] = LedgerPrice(r.service, cost, quantity)
    return dict(out)


def subaccount_usage(
    conn: Connection, keys: Sequence[Key], now: datetime, window_days: int
) -> dict[Key, tuple[SubaccountUsage, ...]]:
    """For each of ``keys`` (paying account, currency) whose account has subaccounts: every
    subaccount with its usage over the ``window_days`` before ``now`` (0 when it used nothing),
    most used first, in one grouped query. Keys without subaccounts are left out."""
    if not keys:
        return {}
    payers = [k[0] for k in keys]
    currencies = sorted({k[1] for k in keys})
    in_window = and_(
        LEDGER_TABLE.c.account_id == ACCOUNT_TABLE.c.id,
        LEDGER_TABLE.c.kind == "usage",
        LEDGER_TABLE.c.currency.in_(currencies),
        LEDGER_TABLE.c.occurred_at >= now - timedelta(days=window_days),
        LEDGER_TABLE.c.occurred_at <= now,
    )
    query = (
        select(
            ACCOUNT_TABLE.c.parent_id,
            ACCOUNT_TABLE.c.id,
            ACCOUNT_TABLE.c.name,
            LEDGER_TABLE.c.currency,
            func.sum(-LEDGER_TABLE.c.amount).label("used"),
        )
        .select_from(ACCOUNT_TABLE.outerjoin(LEDGER_TABLE, in_window))
        .where(one_of(conn, ACCOUNT_TABLE.c.parent_id, payers))
        .group_by(
            ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id, ACCOUNT_TABLE.c.name, LEDGER_TABLE.c.currency
        )
    )
    used: dict[tuple[str, str, str], int] = {}
    names: dict[str, dict[str, str]] = defaultdict(dict)
    for r in conn.execute(query):
        names[r.parent_id][r.id] = r.name
        if r.currency is not None:
            used[(r.parent_id, r.id, r.currency)] = int(r.used or 0)
    out = {}
    for payer, currency in keys:
        if payer not in names:
            continue
        subs = [SubaccountUsage(i, n, used.get((payer, i, currency), 0)) for i, n in names[payer].items()]
        out[(payer, currency)] = tuple(sorted(subs, key=lambda s: (-s.used, s.id)))
    return out


@dataclass(frozen=True, slots=True)
class Credit:
    """One credit of the ledger (a top-up, a refund, a positive adjustment), in minor units."""

    account_id: str  # the paying account, or the subaccount it was posted to
    amount: int
    kind: str
    reference: str | None
    occurred_at: datetime


MAX_CREDITS = 20  # named in one email; more are summed


def credits_since(
    conn: Connection, payer: str, currency: str, since: datetime, now: datetime
) -> tuple[list[Credit], int, int]:
    """The credits to ``payer`` and its subaccounts in ``currency`` after ``since`` and up to
    ``now``: the last MAX_CREDITS oldest first, their count and their total, from one query
    (one restored email at a time; restored notices are rare)."""
    family = (
        select(ACCOUNT_TABLE.c.id)
        .where(or_(ACCOUNT_TABLE.c.id == payer, ACCOUNT_TABLE.c.parent_id == payer))
        .scalar_subquery()
    )
    query = (
        select(
            LEDGER_TABLE.c.account_id,
            LEDGER_TABLE.c.amount,
            LEDGER_TABLE.c.kind,
            LEDGER_TABLE.c.reference,
            LEDGER_TABLE.c.occurred_at,
        )
        .where(
            LEDGER_TABLE.c.account_id.in_(family),
            LEDGER_TABLE.c.currency == currency,
            LEDGER_TABLE.c.amount > 0,
            LEDGER_TABLE.c.occurred_at > since,
            LEDGER_TABLE.c.occurred_at <= now,
        )
        .order_by(LEDGER_TABLE.c.occurred_at, LEDGER_TABLE.c.id)
    )
    rows = [
        Credit(r.account_id, int(r.amount), r.kind, r.reference, r.occurred_at) for r in conn.execute(query)
    ]
    return rows[-MAX_CREDITS:], len(rows), sum(c.amount for c in rows)
