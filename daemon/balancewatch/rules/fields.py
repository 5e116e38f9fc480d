"""The values a rule file's fields hold: amounts, currencies, addresses, ids, durations.

Each check is a function that raises ValueError saying how to write the value, wrapped
in an ``Annotated`` type with the JSON Schema editors see (rules/editor_schema.py).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

from balancewatch.config.channels import CHANNEL_NAME, REFERENCE_PREFIX
from balancewatch.core.durations import parse_duration
from balancewatch.core.money import MoneyError, check_currency
from balancewatch.rules.editor_schema import AMOUNT_SCHEMA, CURRENCY_SCHEMA, REMIND_SCHEMA, TEXTS_SCHEMA

RULE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
OWNER = "owner"
PREFERENCES = "preferences"  # the extra addresses an owner set in their preferences
SUBACCOUNT_OWNERS = "subaccount-owners"  # the owners of the subaccounts drawing on the balance
RECIPIENT_WORDS = (OWNER, PREFERENCES, SUBACCOUNT_OWNERS)
ADU = "average-daily-usage"
RUNWAY = "runway"
OWNER_THRESHOLDS = "owner"
DEFAULT_WINDOW_DAYS = 30


def _currency(value: Any) -> str:
    try:
        return check_currency(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


def as_written(value: Any) -> str:
    """``value`` the way YAML spells it where that differs from Python: true, false."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def parse_amount(
    value: Any, what: str = "thresholds are zero or more (use exhausted: true for zero)"
) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"{as_written(value)} is not an amount; write a number such as 100 or 12.50")
    try:
        amount = Decimal(str(value).strip().replace("_", "").replace(",", ""))
    except ArithmeticError:
        raise ValueError(f"{value!r} is not an amount; write a number such as 100 or 12.50") from None
    if not amount.is_finite():
        raise ValueError(f"{value!r} is not a finite amount")
    if amount < 0:
        raise ValueError(f"{value} is negative; {what}")
    return amount


def band_size(value: Any) -> Decimal:
    return parse_amount(value, "a re-arm band is zero or more")


def _address(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"{as_written(value)} is not an email address; write owner or an address such as ops@example.com"
        )
    text = value.strip()
    if text in RECIPIENT_WORDS:
        return text
    if text.startswith(REFERENCE_PREFIX):
        name = text[len(REFERENCE_PREFIX) :].strip()
        if not CHANNEL_NAME.fullmatch(name):
            raise ValueError(
                f"{text!r} does not name a channel: write channel: and a channel's name from the "
                "config's channels (lower-case letters, digits, '-' and '_'), e.g. channel:ops-chat"
            )
        return REFERENCE_PREFIX + name
    if ";" in text:
        raise ValueError(f"{text!r}: separate recipients with commas, not ';'")
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{text!r} is not a valid email address: {exc}") from None


def split_recipients(value: Any) -> Any:
    # The seed vendors accept "a@x.com, b@y.com"; so do we, anywhere in the list.
    items = [] if value is None else value if isinstance(value, list) else [value]
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            out.extend(part.strip() for part in item.split(",") if part.strip())
        else:
            out.append(item)
    if not out:
        raise ValueError("no recipients; write owner and/or email addresses, e.g. [owner, ops@example.com]")
    return out


def not_empty_ladder(value: list[Decimal]) -> list[Decimal]:
    if not value:
        raise ValueError("no amounts; write at least one, e.g. [250, 100, 10]")
    return value


def _pattern(regex: re.Pattern[str], what: str, characters: str) -> Any:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid {what}: use lower-case letters, digits, {characters} "
                "(at most 64 characters)"
            )
        return value

    return check


def _reminder(value: Any) -> timedelta:
    if (isinstance(value, float) and not math.isfinite(value)) or (
        isinstance(value, Decimal) and not value.is_finite()
    ):
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 24h, 1d or 1h30m")
    return parse_duration(value)


Currency = Annotated[str, AfterValidator(_currency), WithJsonSchema(CURRENCY_SCHEMA)]
Amount = Annotated[Decimal, BeforeValidator(parse_amount), WithJsonSchema(AMOUNT_SCHEMA)]
Address = Annotated[str, BeforeValidator(_address)]
RuleId = Annotated[
    str,
    AfterValidator(_pattern(RULE_ID, "rule id", "'.', '-' and '_', starting with a letter or digit")),
    WithJsonSchema({"type": "string", "pattern": RULE_ID.pattern, "examples": ["default-ladder"]}),
]
TemplateName = Annotated[
    str,
    AfterValidator(_pattern(TEMPLATE_NAME, "template name", "'-' and '_', starting with a letter or digit")),
    WithJsonSchema({"type": "string", "pattern": TEMPLATE_NAME.pattern, "examples": ["low-balance"]}),
]
Reminder = Annotated[timedelta, BeforeValidator(_reminder), WithJsonSchema(REMIND_SCHEMA)]


def one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str | int) else value


def _texts(value: Any) -> Any:
    # Account ids and label values are text; YAML reads `ids: [1001]` as numbers.
    items = one_or_many(value)
    if isinstance(items, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in items]
    return items


Texts = Annotated[list[str], BeforeValidator(_texts), WithJsonSchema(TEXTS_SCHEMA)]
