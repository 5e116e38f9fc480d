"""Posting ledger entries: the entry and the balance it moves commit together.

A subaccount draws on its main account's balance: its entries are recorded
under the subaccount (usage per subaccount) and move the main account's balance.

A reference names one entry of an account (unique ``(account_id, reference)``).
Posting a reference the ledger holds raises :class:`AlreadyPostedError`, carrying
the entry that holds it, and changes nothing, also when another transaction
posts the same reference at the same moment: every writer moves the balance
first (so writers of one balance take turns on its row), then inserts the
entry unless the reference is taken; when it is, the balance change is rolled
back to a savepoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from balancewatch.core.money import MoneyError, check_currency
from balancewatch.store.tables import BALANCE_TABLE, LEDGER_TABLE, Account, Balance

KINDS = ("usage", "top-up", "refund", "adjustment")


class LedgerError(ValueError):
    """An entry that cannot be posted: ``field`` and what would be valid; ``str()`` is "field: message"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Posted:
    entry_id: int
    payer_id: str
    balance_after: int


@dataclass(frozen=True, slots=True)
class Known:
    """An entry the ledger holds under a reference: what it recorded."""

    entry_id: int
    account_id: str
    currency: str
    amount: int
    kind: str
    balance_after: int | None

    def same(self, currency: str, amount: int, kind: str) -> bool:
        """True when posting ``amount`` ``currency`` as ``kind`` would record this very entry."""
        return (self.currency, self.amount, self.kind) == (currency, amount, kind)


class AlreadyPostedError(LedgerError):
    """The account's ledger holds the reference already (``entry``); nothing was changed."""

    def __init__(self, reference: str, entry: Known) -> None:
        super().__init__(
            "reference",
            f"{reference!r} is already in the ledger of {entry.account_id!r} (entry #{entry.entry_id})",
        )
        self.reference = reference
        self.entry = entry


def check_kind(kind: str) -> None:
    """Raise LedgerError unless ``kind`` is one of KINDS."""
    if kind not in KINDS:
        raise LedgerError("kind", f"{kind!r} is not a kind; write one of {', '.join(KINDS)}")


def check_entry(amount: int, kind: str, currency: str, quantity: int | None = None) -> None:
    """Raise LedgerError when the kind, the sign, the currency or the quantity is wrong."""
    check_kind(kind)
    try:
        check_currency(currency)
    except MoneyError as exc:
        raise LedgerError("currency", str(exc)) from None
    if kind == "usage" and amount > 0:
        raise LedgerError("amount", "usage is a debit; write it negative (e.g. -12.50)")
    if kind in ("top-up", "refund") and amount < 0:
        raise LedgerError("amount", f"a {kind} is a credit; write it positive")
    if amount == 0:
        raise LedgerError("amount", "zero moves nothing")
    if quantity is not None and quantity < 0:
        raise LedgerError("quantity", f"{quantity} is negative; write the units used (e.g. 250 messages)")


def payer_of(session: Session, account_id: str) -> str:
    """The account whose balance pays for ``account_id``: itself, or its main account."""
    account = session.get(Account, account_id)
    if account is None:
        raise LedgerError("account", f"no account {account_id!r} (add it with `balancewatch accounts add`)")
    return account.parent_id or account.id


def post(
    session: Session,
    account_id: str,
    currency: str,
    amount: int,
    kind: str,
    *,
    occurred_at: datetime,
    now: datetime,
    service: str | None = None,
    quantity: int | None = None,
    reference: str | None = None,
    check_reference: bool = True,
) -> Posted:
    """Record one entry and move the paying balance (not committed; caller commits).

    Raises LedgerError, before changing anything, on a wrong field or an
    unknown account; and AlreadyPostedError (a LedgerError) when the account's
    ledger holds ``reference`` already, committed before or by a concurrent
    transaction this one waited for. ``check_reference=False`` skips the first
    look (the caller looked for many references at once); the database's
    unique constraint still decides, and AlreadyPostedError is still raised.
    """
    check_entry(amount, kind, currency, quantity)
    payer = payer_of(session, account_id)
    if reference is not None and check_reference:
        known = find_reference(session.connection(), account_id, reference)
        if known is not None:
            raise AlreadyPostedError(reference, known)
    entry = {
        "account_id": account_id,
        "currency": currency,
        "amount": amount,
        "kind": kind,
        "service": service,
        "quantity": quantity,
        "occurred_at": occurred_at,
        "reference": reference,
    }
    if reference is None:
        after = _move_balance(session.connection(), payer, currency, amount, now)
        entry_id = _insert_entry(session.connection(), {**entry, "balance_after": after})
        assert entry_id is not None  # without a reference nothing can conflict
        return Posted(entry_id, payer, after)
    return _post_referenced(session, payer, entry, now)


def _post_referenced(session: Session, payer: str, entry: dict[str, Any], now: datetime) -> Posted:
    # The balance first: two posts of one reference queue on the balance row, and the
    # second finds the first's entry. Under a savepoint, so a taken reference undoes it.
    savepoint = session.begin_nested()
    try:
        conn = session.connection()
        after = _move_balance(conn, payer, entry["currency"], entry["amount"], now)
        entry_id = _insert_entry(conn, {**entry, "balance_after": after})
    except BaseException:
        savepoint.rollback()
        raise
    if entry_id is None:
        savepoint.rollback()
        known = find_reference(session.connection(), entry["account_id"], entry["reference"])
        assert known is not None  # the insert met it, and entries are never deleted
        raise AlreadyPostedError(entry["reference"], known)
    savepoint.commit()
    return Posted(entry_id, payer, after)


def find_reference(conn: Connection, account_id: str, reference: str) -> Known | None:
    """The entry of ``account_id`` holding ``reference``, or None."""
    row = conn.execute(
        select(
            LEDGER_TABLE.c.id,
            LEDGER_TABLE.c.account_id,
            LEDGER_TABLE.c.currency,
            LEDGER_TABLE.c.amount,
            LEDGER_TABLE.c.kind,
            LEDGER_TABLE.c.balance_after,
        ).where(LEDGER_TABLE.c.account_id == account_id, LEDGER_TABLE.c.reference == reference)
    ).first()
    if row is None:
        return None
    return Known(row.id, row.account_id, row.currency, row.amount, row.kind, row.balance_after)


def _insert_entry(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert one entry; its id, or None when the account's ledger holds its reference already."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(LEDGER_TABLE)
        .values(values)
        .on_conflict_do_nothing(index_elements=[LEDGER_TABLE.c.account_id, LEDGER_TABLE.c.reference])
        .returning(LEDGER_TABLE.c.id)
    )
    found = conn.execute(stmt).first()
    return None if found is None else int(found[0])


def _move_balance(conn: Connection, account_id: str, currency: str, amount: int, now: datetime) -> int:
    """Add ``amount`` to the balance (created at ``amount`` when missing); the amount after it.

    One upsert: two first posts in a new currency cannot both create the row.
    """
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(BALANCE_TABLE).values(
        account_id=account_id, currency=currency, amount=amount, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[BALANCE_TABLE.c.account_id, BALANCE_TABLE.c.currency],
        set_={
            "amount": BALANCE_TABLE.c.amount + stmt.excluded.amount,
            "updated_at": stmt.excluded.updated_at,
        },
    ).returning(BALANCE_TABLE.c.amount)
    return int(conn.execute(stmt).scalar_one())


def set_balance(session: Session, account_id: str, currency: str, amount: int, now: datetime) -> None:
    """Set a balance outright, as a billing system writing the table would (with updated_at)."""
    row = session.get(Balance, (account_id, currency))
    if row is None:
        session.add(
            Balance(account_id=account_id, currency=check_currency(currency), amount=amount, updated_at=now)
        )
    else:
        row.amount, row.updated_at = amount, now
        session.add(row)
