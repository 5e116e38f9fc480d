"""Reading a chunk of candidates with their state, and writing state back."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, String, Table, any_, func, literal, select, true, tuple_
from sqlalchemy.dialects import postgresql

from balancewatch.evaluate.candidates import Key, account_filter, owner_configured
from balancewatch.evaluate.decide import StepState
from balancewatch.rules.compiled import CompiledRule, StepSet
from balancewatch.store.bulk import array_parameter, insert_rows
from balancewatch.store.platform_data import account_currency, account_locale, account_timezone
from balancewatch.store.tables import ACCOUNT_TABLE, ALERT_STATE_TABLE, BALANCE_TABLE


@dataclass(frozen=True, slots=True)
class Subject:
    """One balance under evaluation, with the account facts a message needs.

    ``locale``, ``timezone`` and ``currency`` are as the billing platform wrote
    them; format with :meth:`locale_or`, :meth:`timezone_or` and
    :meth:`checked_currency`, which never raise.
    """

    account_id: str
    currency: str
    amount: int
    name: str
    owner_email: str
    locale: str | None
    timezone: str | None
    billing: str
    parent_id: str | None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.account_id, self.currency)

    def locale_or(self, default: str) -> str:
        """The account's locale as Babel names it, else ``default`` (see platform_data)."""
        return account_locale(self.locale, default, self.account_id)

    def timezone_or(self, default: str) -> str:
        """The account's IANA zone, else ``default`` (see platform_data)."""
        return account_timezone(self.timezone, default, self.account_id)

    def checked_currency(self) -> str:
        """The currency, warned about once when it is not ISO 4217 (it is formatted all the same)."""
        return account_currency(self.currency, self.account_id)


def one_of(conn: Connection, column: Any, values: Iterable[str]) -> Any:
    """``column IN values`` (strings); on PostgreSQL ``column = ANY(:array)``, one parameter
    however many values: psycopg parses each of these statements once and PostgreSQL plans
    it without a literal per value (a chunk's query named 500 to 1,000 of them)."""
    wanted = sorted(set(values))
    if conn.dialect.name == "postgresql":  # the array's text: psycopg dumps a list element by element
        return column == any_(array_parameter(wanted, String()))
    return column.in_(wanted)


def key_filter(account_id: Any, currency: Any, keys: Sequence[Key]) -> list[Any]:
    """Match exactly ``keys`` with conditions both databases answer from an index.

    SQLite cannot use an index for ``(a, b) IN (VALUES ...)`` and scans the
    table instead, so the usual case (one currency) becomes ``account_id IN
    (...) AND currency = :c``; the pairs are kept only when currencies mix.
    """
    currencies = {k[1] for k in keys}
    out = [account_id.in_(sorted({k[0] for k in keys}))]
    if len(currencies) == 1:
        out.append(currency == next(iter(currencies)))
    else:
        out.append(tuple_(account_id, currency).in_(list(keys)))
    return out


def rows_for_keys(conn: Connection, table: Table, keys: Sequence[Key], *where: Any) -> Select[Any]:
    """The rows of ``table`` (with ``account_id`` and ``currency`` columns) for exactly ``keys``
    that also meet ``where``, as a query whose plan does not depend on the table's statistics.

    PostgreSQL gets one index probe per key: the keys as two arrays unnested beside a LATERAL
    subquery that OFFSET 0 keeps from being flattened. Written as ``account_id IN (...)``,
    PostgreSQL walks every row of the rule instead whenever it misjudges the table: always in
    a first sweep, whose ``alert_state`` grows from empty faster than autovacuum analyses it
    (0.5 s a chunk at 50,000 states), and by a sequential scan once analysed. SQLite gets
    ``key_filter``, which it answers from an index.
    """
    if conn.dialect.name != "postgresql":
        return select(table).where(*key_filter(table.c.account_id, table.c.currency, keys), *where)
    pairs = (
        func.unnest(
            literal([k[0] for k in keys], postgresql.ARRAY(String)),
            literal([k[1] for k in keys], postgresql.ARRAY(String)),
        )
        .table_valued("account_id", "currency")
        .render_derived(name="k")
    )
    one = (
        select(table)
        .where(table.c.account_id == pairs.c.account_id, table.c.currency == pairs.c.currency, *where)
        .offset(0)
        .lateral("s")
    )
    return select(one).select_from(pairs).join(one, true())


def load_subjects(
    conn: Connection, rule: CompiledRule, step_set: StepSet, keys: Sequence[Key], *, lock: bool
) -> list[Subject]:
    """The balances of ``keys`` that still match ``rule``, read now.

    With ``lock`` (PostgreSQL) the balance rows are locked in key order until
    the transaction ends, so two instances never decide on the same balance at once.
    """
    # Balances are found by account id alone, the currency checked here: with a
    # currency condition too, SQLite (without statistics) prefers scanning the
    # covering currency index over the primary key, and reads every balance.
    wanted = set(keys)
    unless_owner = (
        [~owner_configured(BALANCE_TABLE.c.account_id, BALANCE_TABLE.c.currency)]
        if rule.unless_owner_configured
        else []
    )
    query = (
        select(
            BALANCE_TABLE.c.account_id,
            BALANCE_TABLE.c.currency,
            BALANCE_TABLE.c.amount,
            ACCOUNT_TABLE.c.name,
            ACCOUNT_TABLE.c.owner_email,
            ACCOUNT_TABLE.c.locale,
            ACCOUNT_TABLE.c.timezone,
            ACCOUNT_TABLE.c.billing,
            ACCOUNT_TABLE.c.parent_id,
            ACCOUNT_TABLE.c.labels,
        )
        .select_from(BALANCE_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == BALANCE_TABLE.c.account_id))
        .where(one_of(conn, BALANCE_TABLE.c.account_id, (k[0] for k in keys)))
        .where(*account_filter(rule.selector))
        .where(*unless_owner)
        .order_by(BALANCE_TABLE.c.account_id, BALANCE_TABLE.c.currency)
    )
    if lock:
        query = query.with_for_update(of=BALANCE_TABLE)
    return [
        Subject(
            r.account_id,
            r.currency,
            r.amount,
            r.name,
            r.owner_email,
            r.locale,
            r.timezone,
            r.billing,
            r.parent_id,
            dict(r.labels or {}),
        )
        for r in conn.execute(query)
        if (r.account_id, r.currency) in wanted
    ]


def inhibited(conn: Connection, rule_ids: Sequence[str], keys: Sequence[Key]) -> set[Key]:
    """The keys for which any of ``rule_ids`` has a fired step: their notifications are silenced."""
    if not rule_ids or not keys:
        return set()
    query = (
        select(ALERT_STATE_TABLE.c.account_id, ALERT_STATE_TABLE.c.currency)
        .where(
            ALERT_STATE_TABLE.c.rule_id.in_(list(rule_ids)),
            ALERT_STATE_TABLE.c.status == "fired",
            *key_filter(ALERT_STATE_TABLE.c.account_id, ALERT_STATE_TABLE.c.currency, keys),
        )
        .distinct()
    )
    return {(r.account_id, r.currency) for r in conn.execute(query)}


def load_states(conn: Connection, rule_id: str, keys: Sequence[Key]) -> dict[Key, dict[int, StepState]]:
    """Stored step states of ``rule_id`` for ``keys``: key -> step -> state."""
    out: dict[Key, dict[int, StepState]] = defaultdict(dict)
    if not keys:
        return out
    query = rows_for_keys(conn, ALERT_STATE_TABLE, keys, ALERT_STATE_TABLE.c.rule_id == rule_id)
    for r in conn.execute(query):
        out[(r.account_id, r.currency)][r.step] = StepState(
            step=r.step,
            status=r.status,
            episode=r.episode,
            reminders_sent=r.reminders_sent,
            fired_at=r.fired_at,
            last_sent_at=r.last_sent_at,
            next_reminder_at=r.next_reminder_at,
            rearmed_at=r.rearmed_at,
        )
    return out


_STATE_KEY = ("rule_id", "account_id", "currency", "step")
_STATE_COLUMNS = (
    "status",
    "episode",
    "reminders_sent",
    "fired_at",
    "last_sent_at",
    "next_reminder_at",
    "rearmed_at",
)


def write_states(conn: Connection, rule_id: str, rows: Sequence[tuple[Key, StepState]]) -> None:
    """Insert or update the given step states in one statement (each key and step at most once).

    On PostgreSQL that statement reads the rows from one array per column (``store/bulk.py``):
    one round trip and one execution for a whole chunk, where an executemany runs the upsert
    once per row.
    """
    if not rows:
        return
    # One statement may set a row once only (PostgreSQL refuses more): the last one given wins,
    # as it would executed row by row.
    unique = list({(key, st.step): (key, st) for key, st in rows}.values())
    columns = [c.name for c in ALERT_STATE_TABLE.c if c.name != "rule_id"]
    values = [
        {"rule_id": rule_id, **{name: _state_value(key, st, name) for name in columns}} for key, st in unique
    ]
    insert_rows(conn, ALERT_STATE_TABLE, values, conflict=_STATE_KEY, update=_STATE_COLUMNS)


def _state_value(key: Key, st: StepState, name: str) -> Any:
    if name == "account_id":
        return key[0]
    if name == "currency":
        return key[1]
    return getattr(st, name)


def subaccount_owners(conn: Connection, payers: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The owner addresses of the enabled subaccounts of each of ``payers``."""
    if not payers:
        return {}
    out: dict[str, list[str]] = defaultdict(list)
    query = (
        select(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.owner_email)
        .where(one_of(conn, ACCOUNT_TABLE.c.parent_id, payers), ACCOUNT_TABLE.c.enabled == true())
        .order_by(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id)
    )
    for r in conn.execute(query):
        out[r.parent_id].append(r.owner_email)
    return {k: tuple(v) for k, v in out.items()}
