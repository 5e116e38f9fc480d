"""Owner preferences: an owner's own thresholds, extra recipients and daily reminder, per currency.

The platform's app may write ``owner_preference`` itself; ``balancewatch prefs``
and rule tests write it through here. Every value is checked before anything
is written, and a failure names the field (``below``, ``email``, ``remind``,
``currency``, ``account``, ``enabled``) and what to write instead:

- thresholds are amounts in major units of the row's currency, stored as
  minor units: at most three, each above zero and written once;
- recipients are email addresses, a list or one comma-separated string;
- the reminder is on (daily) or off;
- disabling keeps every value, and enabling again restores them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import update
from sqlmodel import Session, select

from balancewatch.core.money import MoneyError, check_currency, to_minor
from balancewatch.store.tables import BALANCE_TABLE, Account, Balance, OwnerPreference

MAX_THRESHOLDS = 3
CLEAR = ("", "none")  # --below '' / --below none: no thresholds (likewise --email)
REMIND_ON = ("24h", "1d", "daily", "on", "true", "yes")
REMIND_OFF = ("off", "none", "false", "no")


class PreferenceError(ValueError):
    """A preference that cannot be stored as given; ``str()`` is "field: message"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Change:
    """What to change in one (account, currency) row; None leaves a value as it is."""

    thresholds: tuple[int, ...] | None = None  # minor units, highest first; () clears them
    recipients: tuple[str, ...] | None = None
    remind: bool | None = None
    enabled: bool | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.thresholds, self.recipients, self.remind, self.enabled))


def _items(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, str):
        if value.strip().lower() in CLEAR:
            return []
        return [part.strip() for part in value.split(",")]
    return list(value) if isinstance(value, list | tuple) else [value]


def parse_thresholds(value: object, currency: str) -> tuple[int, ...]:
    """Thresholds in major units of ``currency`` (``"500,100"`` or ``[500, 100]``) as minor
    units, highest first; ``""``, ``"none"``, None or ``[]`` is none at all.

    Raises PreferenceError (field ``below``) for an item that is not an amount, is zero or
    less, has more decimals than the currency, appears twice, or for a fourth threshold.
    """
    items = _items(value)
    out: list[int] = []
    for item in items:
        if item == "":
            raise PreferenceError("below", "an empty item; separate amounts with single commas: 500,100")
        if isinstance(item, bool) or not isinstance(item, int | Decimal | str):
            raise PreferenceError("below", f"{item!r} is not an amount; write a number such as 500 or 12.50")
        try:
            minor = to_minor(item, currency)
        except MoneyError as exc:
            raise PreferenceError("below", str(exc)) from None
        if minor <= 0:
            raise PreferenceError(
                "below", f"{item} is not above zero; write the amounts at which to be told, e.g. 500,100"
            )
        if minor in out:
            raise PreferenceError("below", f"{item} appears twice; each threshold may appear once")
        out.append(minor)
    if len(out) > MAX_THRESHOLDS:
        written = ", ".join(str(i) for i in items)
        raise PreferenceError(
            "below",
            f"{len(out)} thresholds given ({written}); an owner may set at most {MAX_THRESHOLDS}: "
            f"keep the three that matter most, e.g. {','.join(str(i) for i in items[:MAX_THRESHOLDS])}",
        )
    return tuple(sorted(out, reverse=True))


def parse_recipients(value: object) -> tuple[str, ...]:
    """Extra addresses, a list or one comma-separated string, each checked and normalized;
    ``""``, ``"none"``, None or ``[]`` is none. Raises PreferenceError (field ``email``)."""
    out: list[str] = []
    for item in _items(value):
        parts = [p.strip() for p in item.split(",")] if isinstance(item, str) else [item]
        for part in parts:
            if not isinstance(part, str):
                raise PreferenceError("email", f"{part!r} is not an email address")
            if not part:
                continue
            if ";" in part:
                raise PreferenceError("email", f"{part!r}: separate addresses with commas, not ';'")
            try:
                address = validate_email(part, check_deliverability=False).normalized
            except EmailNotValidError as exc:
                raise PreferenceError("email", f"{part!r} is not a valid email address: {exc}") from None
            if address not in out:
                out.append(address)
    return tuple(out)


def parse_remind(value: object) -> bool:
    """``24h`` (or ``1d``, ``daily``, ``on``, true) turns the daily reminder on; ``off`` (or
    ``none``, false) turns it off. Raises PreferenceError (field ``remind``) for anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower().replace(" ", "")
    if text in REMIND_ON:
        return True
    if text in REMIND_OFF:
        return False
    raise PreferenceError(
        "remind",
        f"{value!r}: an owner's reminder is daily while the balance stays below a threshold; "
        "write 24h to turn it on, or off",
    )


def _account(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise PreferenceError(
            "account", f"no account {account_id!r} (add it with `balancewatch accounts add`)"
        )
    if account.parent_id is not None:
        raise PreferenceError(
            "account",
            f"{account_id!r} is a subaccount of {account.parent_id!r} and draws on its balance; "
            f"set the preferences of {account.parent_id!r}",
        )
    return account


def preferences_of(session: Session, account_id: str) -> tuple[Account, list[OwnerPreference]]:
    """The account and its preference rows (enabled or not), by currency.

    Raises PreferenceError (field ``account``) for an unknown account or a subaccount.
    """
    account = _account(session, account_id)
    query = select(OwnerPreference).where(OwnerPreference.account_id == account_id)
    return account, sorted(session.exec(query), key=lambda p: p.currency)


def default_currency(session: Session, account_id: str) -> str:
    """The currency meant when none is named: the only one the account holds a balance or
    preferences in. Raises PreferenceError (field ``currency``) when there are none or several."""
    _account(session, account_id)
    held = {b.currency for b in session.exec(select(Balance).where(Balance.account_id == account_id))}
    held |= {
        p.currency
        for p in session.exec(select(OwnerPreference).where(OwnerPreference.account_id == account_id))
    }
    if len(held) == 1:
        return next(iter(held))
    if not held:
        raise PreferenceError("currency", f"{account_id!r} has no balance yet; name the currency, e.g. USD")
    have = " and ".join(sorted(held))
    raise PreferenceError("currency", f"{account_id!r} holds {have}; name one of them")


def set_preferences(
    session: Session, account_id: str, currency: str, change: Change, now: datetime
) -> OwnerPreference:
    """Apply ``change`` to the (account, currency) row, creating it (enabled, no reminder) when
    it is missing; not committed. Values the change leaves out are kept, disabled or not. The
    balance's ``updated_at`` moves to ``now`` too, so the next poll evaluates it.

    Raises PreferenceError, before changing anything, for an unknown account, a subaccount,
    an unknown currency, more than three thresholds, or enabling/disabling a row that does
    not exist.
    """
    _account(session, account_id)
    try:
        check_currency(currency)
    except MoneyError as exc:
        raise PreferenceError("currency", str(exc)) from None
    if change.thresholds is not None and len(change.thresholds) > MAX_THRESHOLDS:
        raise PreferenceError(
            "below", f"at most {MAX_THRESHOLDS} thresholds; keep the three that matter most"
        )
    row = session.get(OwnerPreference, (account_id, currency))
    if row is None:
        if change.thresholds is None and change.recipients is None and change.remind is None:
            word = "enable" if change.enabled else "disable"
            raise PreferenceError(
                "enabled",
                f"{account_id!r} has no {currency} preferences to {word}; set thresholds or addresses first",
            )
        row = OwnerPreference(account_id=account_id, currency=currency, recipients=[], updated_at=now)
    if change.thresholds is not None:
        padded = [*sorted(change.thresholds, reverse=True), None, None, None]
        row.threshold_1, row.threshold_2, row.threshold_3 = padded[:MAX_THRESHOLDS]
    if change.recipients is not None:
        row.recipients = list(change.recipients)
    if change.remind is not None:
        row.remind = change.remind
    if change.enabled is not None:
        row.enabled = change.enabled
    row.updated_at = now
    session.add(row)
    _touch_balance(session, account_id, currency, now)
    return row


def _touch_balance(session: Session, account_id: str, currency: str, now: datetime) -> None:
    # The poll reads balances changed since the last one: marking the balance changed makes
    # the next poll decide under the new preferences, not the next full sweep.
    session.connection().execute(
        update(BALANCE_TABLE)
        .where(BALANCE_TABLE.c.account_id == account_id, BALANCE_TABLE.c.currency == currency)
        .values(updated_at=now)
    )
