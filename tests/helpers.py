"""Small steps the evaluation tests repeat: accounts, ledger entries, balance writes, reading results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlmodel import Session

from balancewatch.store import ledger
from balancewatch.store.accounts import add_account
from balancewatch.store.tables import Account, AlertState, Balance, Outbox

OUTBOX = Outbox.__table__  # type: ignore[attr-defined]
STATE = AlertState.__table__  # type: ignore[attr-defined]
BALANCE = Balance.__table__  # type: ignore[attr-defined]
ACCOUNT = Account.__table__  # type: ignore[attr-defined]


def account(
    engine: Engine,
    account_id: str,
    *,
    name: str | None = None,
    billing: str = "prepaid",
    labels: Mapping[str, str] | None = None,
    parent_id: str | None = None,
    locale: str | None = None,
) -> None:
    """Add an account owned by ``<id>@owner.example`` and commit it."""
    with Session(engine) as s:
        add_account(
            s,
            account_id,
            name or account_id.capitalize(),
            f"{account_id}@owner.example",
            billing=billing,
            labels=labels,
            parent_id=parent_id,
            locale=locale,
        )
        s.commit()


def post(engine: Engine, account_id: str, currency: str, amount: int, at: datetime) -> int:
    """Post a top-up (amount > 0) or usage (amount < 0) in minor units at ``at``; return the
    paying balance after it."""
    kind = "top-up" if amount > 0 else "usage"
    with Session(engine) as s:
        posted = ledger.post(s, account_id, currency, amount, kind, occurred_at=at, now=at)
        s.commit()
    return posted.balance_after


def set_balance(engine: Engine, account_id: str, currency: str, amount: int, at: datetime) -> None:
    """Write the balance as a billing system would: the amount, and ``updated_at`` = ``at``."""
    with Session(engine) as s:
        ledger.set_balance(s, account_id, currency, amount, at)
        s.commit()


def write_amount_only(engine: Engine, account_id: str, currency: str, amount: int) -> None:
    """Write the amount as a careless billing system would: ``updated_at`` left as it was."""
    c = BALANCE.c
    with engine.begin() as conn:
        result = conn.execute(
            update(BALANCE).where(c.account_id == account_id, c.currency == currency).values(amount=amount)
        )
        assert result.rowcount == 1


def set_enabled(engine: Engine, account_id: str, enabled: bool) -> None:
    with engine.begin() as conn:
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == account_id).values(enabled=enabled))


def set_labels(engine: Engine, account_id: str, labels: Mapping[str, str]) -> None:
    with engine.begin() as conn:
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == account_id).values(labels=dict(labels)))


@dataclass(frozen=True)
class Sent:
    """One outbox row, as the tests look at it."""

    idem_key: str
    kind: str
    rule_id: str
    account_id: str
    currency: str
    step: int
    recipients: tuple[str, ...]
    subject: str
    text: str
    created_at: datetime


def outbox(engine: Engine, account_id: str | None = None) -> list[Sent]:
    """Outbox rows in the order they were decided, optionally for one account."""
    c = OUTBOX.c
    query = select(OUTBOX).order_by(c.id)
    if account_id is not None:
        query = query.where(c.account_id == account_id)
    with engine.connect() as conn:
        return [
            Sent(
                r.idem_key,
                r.kind,
                r.rule_id,
                r.account_id,
                r.currency,
                r.step,
                tuple(r.recipients),
                r.subject,
                r.text,
                r.created_at,
            )
            for r in conn.execute(query)
        ]


@dataclass(frozen=True)
class StateRow:
    status: str
    episode: int
    reminders_sent: int
    next_reminder_at: datetime | None


def states(engine: Engine, rule_id: str, account_id: str, currency: str = "USD") -> dict[int, StateRow]:
    """Stored alert state of one balance under one rule: step -> state."""
    c = STATE.c
    query = select(STATE).where(c.rule_id == rule_id, c.account_id == account_id, c.currency == currency)
    with engine.connect() as conn:
        return {
            r.step: StateRow(r.status, r.episode, r.reminders_sent, r.next_reminder_at)
            for r in conn.execute(query)
        }


def all_states(engine: Engine) -> list[tuple[object, ...]]:
    """Every alert_state row, sorted: to compare before and after."""
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(select(STATE)))
