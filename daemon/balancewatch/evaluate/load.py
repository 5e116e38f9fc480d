"""Reading a chunk of candidates with their state, and writing state back."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, true, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from balancewatch.evaluate.candidates import Key, account_filter, owner_configured
from balancewatch.evaluate.decide import StepState
from balancewatch.rules.compiled import CompiledRule, StepSet
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
        .where(BALANCE_TABLE.c.account_id.in_(sorted({k[0] for k in keys})))
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
    query = select(ALERT_STATE_TABLE).where(
        ALERT_STATE_TABLE.c.rule_id == rule_id,
        *key_filter(ALERT_STATE_TABLE.c.account_id, ALERT_STATE_TABLE.c.currency, keys),
    )
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
    """Insert or update the given step states in one statement."""
    if not rows:
        return
    values = [
        {
            "rule_id": rule_id,
            "account_id": key[0],
            "currency": key[1],
            "step": st.step,
            **{c: getattr(st, c) for c in _STATE_COLUMNS},
        }
        for key, st in rows
    ]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(ALERT_STATE_TABLE)
    stmt = stmt.on_conflict_do_update(
        index_elements=[
            ALERT_STATE_TABLE.c.rule_id,
            ALERT_STATE_TABLE.c.account_id,
            ALERT_STATE_TABLE.c.currency,
            ALERT_STATE_TABLE.c.step,
        ],
        set_={c: stmt.excluded[c] for c in _STATE_COLUMNS},
    )
    conn.execute(stmt, values)


def subaccount_owners(conn: Connection, payers: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The owner addresses of the enabled subaccounts of each of ``payers``."""
    if not payers:
        return {}
    out: dict[str, list[str]] = defaultdict(list)
    query = (
        select(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.owner_email)
        .where(ACCOUNT_TABLE.c.parent_id.in_(sorted(set(payers))), ACCOUNT_TABLE.c.enabled == true())
        .order_by(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id)
    )
    for r in conn.execute(query):
        out[r.parent_id].append(r.owner_email)
    return {k: tuple(v) for k, v in out.items()}
