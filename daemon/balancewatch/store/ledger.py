"""Posting ledger entries: the entry and the balance it moves commit together.

A subaccount draws on its main account's balance: its entries are recorded
under the subaccount (usage per subaccount) and move the main account's balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlmodel import Session

from balancewatch.money import MoneyError, check_currency
from balancewatch.store.tables import Account, Balance, LedgerEntry

KINDS = ("usage", "top-up", "refund", "adjustment")
B = Balance.__table__.c  # type: ignore[attr-defined]
L = LedgerEntry.__table__.c  # type: ignore[attr-defined]


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

    Raises LedgerError, before changing anything, on a wrong field, an unknown
    account or a reference the account's ledger already holds (unless the
    caller checked references itself: ``check_reference=False``).
    """
    check_entry(amount, kind, currency, quantity)
    payer = payer_of(session, account_id)
    if reference is not None and check_reference:
        _refuse_known_reference(session, account_id, reference)
    after = _move_balance(session, payer, currency, amount, now)
    entry = LedgerEntry(
        account_id=account_id,
        currency=currency,
        amount=amount,
        kind=kind,
        service=service,
        quantity=quantity,
        occurred_at=occurred_at,
        reference=reference,
        balance_after=after,
    )
    session.add(entry)
    session.flush()
    assert entry.id is not None
    return Posted(entry.id, payer, after)


def _refuse_known_reference(session: Session, account_id: str, reference: str) -> None:
    found = (
        session.connection()
        .execute(select(L.id).where(L.account_id == account_id, L.reference == reference).limit(1))
        .first()
    )
    if found is not None:
        raise LedgerError(
            "reference", f"{reference!r} is already in the ledger of {account_id!r} (entry #{found[0]})"
        )


def _move_balance(session: Session, account_id: str, currency: str, amount: int, now: datetime) -> int:
    result = (
        session.connection()
        .execute(
            update(Balance.__table__)  # type: ignore[arg-type]
            .where(B.account_id == account_id, B.currency == currency)
            .values(amount=B.amount + amount, updated_at=now)
            .returning(B.amount)
        )
        .first()
    )
    if result is not None:
        return int(result[0])
    session.connection().execute(
        insert(Balance.__table__),  # type: ignore[arg-type]
        {"account_id": account_id, "currency": currency, "amount": amount, "updated_at": now},
    )
    return amount


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
