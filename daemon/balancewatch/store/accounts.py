"""Adding and listing accounts."""

from __future__ import annotations

from collections.abc import Mapping

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, select

from balancewatch.core.money import MoneyError, check_locale
from balancewatch.store.platform_data import canonical_zone
from balancewatch.store.tables import Account, utcnow

BILLING_MODES = ("prepaid", "postpaid")


class AccountError(ValueError):
    """An account that cannot be stored as given; the message says which field and why."""


def validate_account(
    account_id: str,
    name: str,
    owner_email: str,
    billing: str = "prepaid",
    timezone: str | None = None,
    locale: str | None = None,
) -> str:
    """Check the fields a user types; return the normalized owner email.

    A locale or zone is accepted in any spelling ``platform_data`` reads (``en-IN``, ``asia/kolkata``).
    """
    if not account_id or len(account_id) > 64 or any(c.isspace() for c in account_id):
        raise AccountError(f"id {account_id!r}: 1 to 64 characters without spaces")
    if not name or len(name) > 200:
        raise AccountError("name: 1 to 200 characters")
    if billing not in BILLING_MODES:
        raise AccountError(f"billing {billing!r}: one of {', '.join(BILLING_MODES)}")
    try:
        email = validate_email(owner_email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise AccountError(f"owner email {owner_email!r}: {exc}") from None
    if timezone is not None and canonical_zone(timezone) is None:
        raise AccountError(f"timezone {timezone!r}: not an IANA zone such as Europe/Berlin")
    if locale is not None:
        try:
            check_locale(locale)
        except MoneyError as exc:
            raise AccountError(f"locale: {exc}") from None
    return email


def add_account(
    session: Session,
    account_id: str,
    name: str,
    owner_email: str,
    *,
    billing: str = "prepaid",
    timezone: str | None = None,
    locale: str | None = None,
    labels: Mapping[str, str] | None = None,
    parent_id: str | None = None,
) -> Account:
    """Add an account (not committed); raises AccountError on a bad field or a known id."""
    email = validate_account(account_id, name, owner_email, billing, timezone, locale)
    if session.get(Account, account_id) is not None:
        raise AccountError(f"id {account_id!r}: an account with this id exists already")
    if parent_id is not None:
        parent = session.get(Account, parent_id)
        if parent is None:
            raise AccountError(f"parent {parent_id!r}: no such account")
        if parent.parent_id is not None:
            raise AccountError(f"parent {parent_id!r} is itself a subaccount; name its main account")
    account = Account(
        id=account_id,
        name=name,
        owner_email=email,
        billing=billing,
        # Stored as Babel and zoneinfo name them, so reports group accounts of one zone together.
        timezone=canonical_zone(timezone) if timezone else None,
        locale=check_locale(locale) if locale else None,
        labels=dict(labels or {}),
        parent_id=parent_id,
        created_at=utcnow(),
    )
    session.add(account)
    return account


def list_accounts(session: Session, limit: int = 1000) -> list[Account]:
    return list(session.exec(select(Account).order_by(Account.id).limit(limit)))
