"""What a rule file may say, as pydantic models that reject unknown keys.

A rule file is a mapping with an ``alerts`` list::

    alerts:
      - id: default-ladder
        accounts: {billing: prepaid, currency: USD}
        below: [250, 100, 10]
        exhausted: true
        rearm: 10%
        remind: 24h
        notify: [owner, ops@example.com]
        template: low-balance

Amounts are in major units (dollars, rupees) and become integer minor units
when the rule is compiled against a currency.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from balancewatch.durations import Duration
from balancewatch.money import MoneyError, check_currency

RULE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
OWNER = "owner"


def _currency(value: Any) -> str:
    try:
        return check_currency(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


def _amount(value: Any, what: str = "thresholds are zero or more (use exhausted: true for zero)") -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"{value!r} is not an amount; write a number such as 100 or 12.50")
    try:
        amount = Decimal(str(value).strip().replace("_", "").replace(",", ""))
    except ArithmeticError:
        raise ValueError(f"{value!r} is not an amount; write a number such as 100 or 12.50") from None
    if not amount.is_finite():
        raise ValueError(f"{value!r} is not a finite amount")
    if amount < 0:
        raise ValueError(f"{value} is negative; {what}")
    return amount


def _band_size(value: Any) -> Decimal:
    return _amount(value, "a re-arm band is zero or more")


def _address(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an email address")
    text = value.strip()
    if text == OWNER:
        return text
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{text!r} is not a valid email address: {exc}") from None


def _split_recipients(value: Any) -> Any:
    # The seed vendors accept "a@x.com, b@y.com"; so do we, anywhere in the list.
    items = value if isinstance(value, list) else [value]
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            out.extend(part.strip() for part in item.split(",") if part.strip())
        else:
            out.append(item)
    if not out:
        raise ValueError("no recipients; write owner and/or email addresses, e.g. [owner, ops@example.com]")
    return out


def _not_empty_ladder(value: list[Decimal]) -> list[Decimal]:
    if not value:
        raise ValueError("no amounts; write at least one, e.g. [250, 100, 10]")
    return value


def _pattern(regex: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid {what}: use lower-case letters, digits, '-' and '_' "
                "(at most 64 characters)"
            )
        return value

    return check


Currency = Annotated[str, AfterValidator(_currency)]
Amount = Annotated[Decimal, BeforeValidator(_amount)]
Address = Annotated[str, BeforeValidator(_address)]
RuleId = Annotated[str, AfterValidator(_pattern(RULE_ID, "rule id"))]
TemplateName = Annotated[str, AfterValidator(_pattern(TEMPLATE_NAME, "template name"))]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str | int) else value


def _texts(value: Any) -> Any:
    # Account ids and label values are text; YAML reads `ids: [1001]` as numbers.
    items = _one_or_many(value)
    if isinstance(items, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in items]
    return items


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Selector(_Strict):
    """Which balances a rule watches. All given conditions must hold.

    ``billing`` defaults to prepaid; postpaid accounts are watched only when
    a rule says ``billing: postpaid`` or ``any``, or names them in ``ids``.
    """

    billing: Literal["prepaid", "postpaid", "any"] | None = None
    currency: Annotated[list[Currency], BeforeValidator(_one_or_many)] | None = None
    labels: dict[str, Annotated[list[str], BeforeValidator(_texts)]] = Field(default_factory=dict)
    ids: Annotated[list[str], BeforeValidator(_texts)] | None = None

    @property
    def billing_filter(self) -> str | None:
        """The billing mode to match, or None for any."""
        if self.billing == "any":
            return None
        if self.billing is None:
            return None if self.ids else "prepaid"
        return self.billing


BandSize = Annotated[Decimal, BeforeValidator(_band_size)]
MAX_BAND_PERCENT = 1000


class Band(_Strict):
    """How far above a step the balance must climb before the step re-arms: one of the two."""

    percent: BandSize | None = None
    amount: BandSize | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Band:
        if (self.percent is None) == (self.amount is None):
            raise ValueError("write a percentage such as 10% or an amount such as 5")
        if self.percent is not None and self.percent > MAX_BAND_PERCENT:
            raise ValueError(f"{self.percent}% is too large; a re-arm band is usually 5% to 25%")
        return self


def _band(value: Any) -> Any:
    if isinstance(value, Band | dict):
        return value
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(
            f"{value!r} is not a re-arm band; write a percentage such as 10% or an amount such as 5"
        )
    text = str(value).strip()
    if text.endswith("%"):
        return {"percent": text[:-1]}
    try:
        Decimal(text.replace("_", "").replace(",", ""))
    except ArithmeticError:
        raise ValueError(
            f"{value!r} is not a re-arm band; write a percentage such as 10% or an amount such as 5"
        ) from None
    return {"amount": text}


Ladder = Annotated[list[Amount], AfterValidator(_not_empty_ladder)]


def _below_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "ladder"
    if isinstance(value, dict):
        return "per-currency"
    return None


# A tagged union, so an error reports only the shape that was written.
Below = Annotated[
    Annotated[Ladder, Tag("ladder")] | Annotated[dict[Currency, Ladder], Tag("per-currency")],
    Discriminator(
        _below_kind,
        custom_error_type="below_shape",
        custom_error_message="write a list of amounts, e.g. [250, 100, 10], or a mapping of "
        "currency to amounts, e.g. {USD: [250, 100, 10], INR: [20000, 8000, 800]}",
    ),
]


class AlertRule(_Strict):
    """One alert rule: which balances, below what, who hears about it, with which template."""

    id: RuleId
    description: str = ""
    enabled: bool = True
    accounts: Selector = Field(default_factory=Selector)
    below: Below | None = None
    exhausted: bool = False
    rearm: Annotated[Band, BeforeValidator(_band)] = Field(default_factory=lambda: Band(percent=Decimal(10)))
    remind: Duration | None = None
    notify: Annotated[list[Address], BeforeValidator(_split_recipients)] = Field(
        default_factory=lambda: [OWNER]
    )
    template: TemplateName = "low-balance"

    @model_validator(mode="after")
    def _has_condition(self) -> AlertRule:
        # A message starting "field: " is reported at that field (see loader.validation_problems).
        if self.below is None and not self.exhausted:
            raise ValueError(
                "no condition: write below: [amounts] (with accounts.currency), "
                "below: {USD: [amounts]}, and/or exhausted: true"
            )
        if isinstance(self.below, list) and not self.accounts.currency:
            raise ValueError(
                "below: a list of amounts needs accounts.currency, since a threshold means nothing "
                "without its currency; add accounts: {currency: USD}, or give amounts per currency: "
                "below: {USD: [250, 100, 10], INR: [20000, 8000, 800]}"
            )
        for ladder in self._ladders():
            repeated = sorted({a for a in ladder if ladder.count(a) > 1})
            if repeated:
                raise ValueError(f"below: {repeated[0]} appears twice; each threshold may appear once")
        if self.remind is not None and self.remind < timedelta(minutes=1):
            raise ValueError(
                "remind: reminders more often than once a minute would flood inboxes; write e.g. 24h"
            )
        return self

    def _ladders(self) -> list[list[Decimal]]:
        if isinstance(self.below, dict):
            return list(self.below.values())
        return [self.below] if self.below else []


class RuleFile(_Strict):
    """The top level of a file in the rules directory."""

    alerts: list[AlertRule] = Field(default_factory=list)
