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

Every field carries a description, and every custom type a JSON Schema that
says what it accepts (``WithJsonSchema``): ``balancewatch schema`` publishes
them for editors. What a schema cannot check is listed in rules/schema.py.
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
    WithJsonSchema,
    model_validator,
)

from balancewatch.core.durations import parse_duration
from balancewatch.core.money import MoneyError, check_currency

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


def _as_written(value: Any) -> str:
    """``value`` the way YAML spells it where that differs from Python: true, false."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _amount(value: Any, what: str = "thresholds are zero or more (use exhausted: true for zero)") -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"{_as_written(value)} is not an amount; write a number such as 100 or 12.50")
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
        raise ValueError(
            f"{_as_written(value)} is not an email address; write owner or an address such as ops@example.com"
        )
    text = value.strip()
    if text in RECIPIENT_WORDS:
        return text
    if ";" in text:
        raise ValueError(f"{text!r}: separate recipients with commas, not ';'")
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{text!r} is not a valid email address: {exc}") from None


def _split_recipients(value: Any) -> Any:
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


def _not_empty_ladder(value: list[Decimal]) -> list[Decimal]:
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
    if isinstance(value, float | Decimal) and not value.is_finite():
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 24h, 1d or 1h30m")
    return parse_duration(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- JSON Schema for editors: what each custom type accepts, as the validators above do ---------
# (A field with a default_factory states its default in json_schema_extra: pydantic leaves it out.)

MAX_BAND_PERCENT = 1000

_NUMBER = r"\+?([0-9][0-9_,]*(\.[0-9_]*)?|\.[0-9][0-9_]*)([eE][+-]?[0-9]+)?"
AMOUNT_TEXT = rf"^\s*{_NUMBER}\s*$"
PERCENT_TEXT = rf"^\s*{_NUMBER}\s*%\s*$"
CURRENCY_CODE = r"^[A-Z]{3}$"
_DURATION_PART = r"[0-9]+(\.[0-9]+)? *([mM][sS]|[sSmMhHdDwW])"
DURATION_TEXT = rf"^ *(({_DURATION_PART} *)+|[0-9]+(\.[0-9]+)? *)$"
_RECIPIENT = r"(owner|preferences|subaccount-owners|[^\s@,;]+@[^\s@,;]+\.[^\s@,;]+)"
RECIPIENTS_TEXT = rf"^[\s,]*{_RECIPIENT}(\s*,[\s,]*{_RECIPIENT})*[\s,]*$"
_TEXT_OR_NUMBER = {"type": ["string", "integer"]}

AMOUNT_SCHEMA: dict[str, Any] = {
    "description": "An amount in major units (dollars, rupees), zero or more: 100, 12.50. "
    "Quote it to group digits: '1,000'.",
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": AMOUNT_TEXT, "patternErrorMessage": "write a number such as 100"},
    ],
}
CURRENCY_SCHEMA: dict[str, Any] = {
    "description": "An ISO 4217 currency code in capitals: USD, INR, EUR, JPY "
    "(balancewatch check verifies that the currency exists).",
    "type": "string",
    "pattern": CURRENCY_CODE,
    "patternErrorMessage": "write a currency code in capitals, e.g. USD",
    "examples": ["USD", "INR", "EUR"],
}
USAGE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"const": "average-daily-usage", "description": "One day of average usage (over 30 days)."},
        {
            "type": "object",
            "description": "times x the average daily usage over days: {average-daily-usage: {days: 30, "
            "times: 2}}.",
            "properties": {
                "average-daily-usage": {
                    "anyOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "properties": {
                                "days": {"type": "integer", "minimum": 1, "maximum": 365},
                                "times": AMOUNT_SCHEMA,
                            },
                            "additionalProperties": False,
                        },
                    ]
                }
            },
            "required": ["average-daily-usage"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "description": "Less than N days of usage left: {runway: 3d} or {runway: {days: 3, window: 30}}.",
            "properties": {"runway": {}},
            "required": ["runway"],
            "additionalProperties": False,
        },
    ],
}
LADDER_ITEM_SCHEMA: dict[str, Any] = {"anyOf": [AMOUNT_SCHEMA, USAGE_SCHEMA]}
LADDER_SCHEMA: dict[str, Any] = {
    "description": "Thresholds in major units, each once: [250, 100, 10]; an item may follow usage: "
    "[average-daily-usage, 100, 10].",
    "type": "array",
    "items": LADDER_ITEM_SCHEMA,
    "minItems": 1,
    "uniqueItems": True,
}
BELOW_SCHEMA: dict[str, Any] = {
    "anyOf": [
        LADDER_SCHEMA,
        USAGE_SCHEMA,
        {"const": "owner", "description": "The owner's own thresholds (owner preferences)."},
        {
            "description": "Thresholds per currency: {USD: [250, 100, 10], INR: [20000, 8000, 800]}.",
            "type": "object",
            "propertyNames": {"pattern": CURRENCY_CODE},
            "additionalProperties": LADDER_SCHEMA,
            "minProperties": 1,
        },
    ],
}
REMIND_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            "pattern": DURATION_TEXT,
            "patternErrorMessage": "write a duration such as 30m, 24h, 1d or 1h30m",
        },
        {"type": "number", "minimum": 60, "description": "seconds"},
    ],
    "examples": ["24h", "12h", "1d"],
}
PERCENT_NUMBER_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_BAND_PERCENT},
        {"type": "string", "pattern": AMOUNT_TEXT, "patternErrorMessage": "write a number such as 10"},
    ],
}
PERCENT_SCHEMA: dict[str, Any] = {
    "description": "A percentage of the step: 10%.",
    "type": "string",
    "pattern": PERCENT_TEXT,
    "patternErrorMessage": "write a percentage such as 10% or an amount such as 5",
}
RECIPIENTS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "description": "owner and/or addresses, comma-separated: 'owner, ops@example.com'.",
            "type": "string",
            "pattern": RECIPIENTS_TEXT,
        },
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "description": "owner (the account owner's address) or an email address.",
                "type": "string",
                "pattern": RECIPIENTS_TEXT,
                "examples": ["owner", "ops@example.com"],
            },
        },
    ],
    "examples": [["owner"], ["owner", "ops@example.com"]],
}
TEXTS_SCHEMA: dict[str, Any] = {
    "anyOf": [_TEXT_OR_NUMBER, {"type": "array", "items": _TEXT_OR_NUMBER}],
}


def _rearm_schema(schema: dict[str, Any]) -> None:
    """Band is also written as "10%" or 5; keep its mapping form (a reference) as the third way."""
    ref = schema.pop("$ref")
    schema["anyOf"] = [PERCENT_SCHEMA, AMOUNT_SCHEMA, {"$ref": ref}]


def _may_be_empty(schema: dict[str, Any]) -> None:
    """``alerts:`` with nothing after it is read as no rules."""
    listed = {key: schema.pop(key) for key in ("type", "items")}
    schema["anyOf"] = [listed, {"type": "null"}]


Currency = Annotated[str, AfterValidator(_currency), WithJsonSchema(CURRENCY_SCHEMA)]
Amount = Annotated[Decimal, BeforeValidator(_amount), WithJsonSchema(AMOUNT_SCHEMA)]
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


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str | int) else value


def _texts(value: Any) -> Any:
    # Account ids and label values are text; YAML reads `ids: [1001]` as numbers.
    items = _one_or_many(value)
    if isinstance(items, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in items]
    return items


Texts = Annotated[list[str], BeforeValidator(_texts), WithJsonSchema(TEXTS_SCHEMA)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Selector(_Strict):
    """Which balances a rule watches; every condition given must hold.

    Without billing only prepaid accounts are watched, unless ids names accounts.
    """

    billing: Literal["prepaid", "postpaid", "any"] | None = Field(
        default=None,
        description="prepaid (the default), postpaid or any. Postpaid accounts are watched only when "
        "a rule says so or names them in ids.",
    )
    currency: (
        Annotated[
            list[Currency],
            BeforeValidator(_one_or_many),
            WithJsonSchema({"anyOf": [CURRENCY_SCHEMA, {"type": "array", "items": CURRENCY_SCHEMA}]}),
        ]
        | None
    ) = Field(
        default=None,
        description="A currency code or a list of them: USD, [USD, EUR]. Default: any currency. "
        "A ladder (below: [250, 100, 10]) applies to each of them.",
    )
    labels: dict[str, Texts] = Field(
        default_factory=dict,
        description="Labels the account must have: {tier: gold} or {region: [eu, in]} (any of the "
        "values); every key given must match.",
        json_schema_extra={"default": {}},
    )
    ids: Texts | None = Field(
        default=None, description="Account ids, one or a list: acme, [1001, acme]. Default: all accounts."
    )

    @property
    def billing_filter(self) -> str | None:
        """The billing mode to match, or None for any."""
        if self.billing == "any":
            return None
        if self.billing is None:
            return None if self.ids else "prepaid"
        return self.billing


BandAmount = Annotated[Decimal, BeforeValidator(_band_size), WithJsonSchema(AMOUNT_SCHEMA)]
BandPercent = Annotated[Decimal, BeforeValidator(_band_size), WithJsonSchema(PERCENT_NUMBER_SCHEMA)]


class Band(_Strict):
    """A re-arm band written as a mapping: exactly one of percent or amount."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    percent: BandPercent | None = Field(
        default=None,
        description=f"A percentage of the step, 0 to {MAX_BAND_PERCENT}: percent: 10 is rearm: 10%.",
    )
    amount: BandAmount | None = Field(
        default=None,
        description="An amount in major units of the step's currency: amount: 5 is rearm: 5.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> Band:
        if self.percent is not None and self.amount is not None:
            raise ValueError("write percent or amount, not both: e.g. rearm: 10% or rearm: 5")
        if self.percent is None and self.amount is None:
            raise ValueError("write a percentage such as 10% or an amount such as 5")
        if self.percent is not None and self.percent > MAX_BAND_PERCENT:
            raise ValueError(f"{self.percent}% is too large; a re-arm band is usually 5% to 25%")
        return self


def _band(value: Any) -> Any:
    if isinstance(value, Band | dict):
        return value
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(
            f"{_as_written(value)} is not a re-arm band; "
            "write a percentage such as 10% or an amount such as 5"
        )
    text = str(value).strip()
    if text.endswith("%"):
        if text.startswith("-"):
            raise ValueError(f"{text} is negative; a re-arm band is zero or more, e.g. 10%")
        return {"percent": text[:-1]}
    try:
        Decimal(text.replace("_", "").replace(",", ""))
    except ArithmeticError:
        raise ValueError(
            f"{value!r} is not a re-arm band; write a percentage such as 10% or an amount such as 5"
        ) from None
    return {"amount": text}


def _positive(value: Any) -> Decimal:
    amount = _amount(value, "write a multiple above zero, e.g. 1 or 2.5")
    if amount <= 0:
        raise ValueError("write a multiple above zero, e.g. 1 or 2.5")
    return amount


class UsageStep(_Strict):
    """A threshold that follows usage: ``times`` the average daily usage over ``days``.

    Written ``average-daily-usage`` (1 x over 30 days), ``{average-daily-usage: {days: 14,
    times: 2}}``, or as runway: ``{runway: 3d}`` is "less than 3 days of usage left"
    (3 x the average over 30 days; ``{runway: {days: 3, window: 14}}`` for another window).
    """

    days: int = Field(default=DEFAULT_WINDOW_DAYS, ge=1, le=365, description="The averaging window, in days.")
    times: Annotated[Decimal, BeforeValidator(_positive)] = Field(
        default=Decimal(1), description="The multiple of the average daily usage: 1 is one day of usage."
    )
    runway: bool = Field(default=False, description="Written as runway: the email speaks of days left.")


def _usage_step(value: Any) -> Any:
    if value == ADU:
        return UsageStep()
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in (ADU, RUNWAY):
        return value
    ((key, spec),) = value.items()
    if key == ADU:
        return UsageStep.model_validate({} if spec is None else spec)
    if isinstance(spec, dict):
        unknown = set(spec) - {"days", "window"}
        if unknown:
            raise ValueError(f"runway: unknown field {sorted(unknown)[0]!r}; write {{days: 3, window: 30}}")
        days, window = spec.get("days"), spec.get("window", DEFAULT_WINDOW_DAYS)
    else:
        days, window = spec, DEFAULT_WINDOW_DAYS
    seconds = parse_duration(days if isinstance(days, str) else f"{days}d").total_seconds()
    return UsageStep(days=window, times=Decimal(str(seconds)) / 86400, runway=True)


def _ladder_item(value: Any) -> Any:
    step = _usage_step(value)
    return step if isinstance(step, UsageStep) else _amount(step)


LadderItem = Annotated[Decimal | UsageStep, BeforeValidator(_ladder_item), WithJsonSchema(LADDER_ITEM_SCHEMA)]
Ladder = Annotated[list[LadderItem], AfterValidator(_not_empty_ladder)]


def _below_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "ladder"
    if value == OWNER_THRESHOLDS:
        return "owner"
    if value == ADU or (isinstance(value, dict) and set(value) & {ADU, RUNWAY}):
        return "usage"
    if isinstance(value, dict):
        return "per-currency"
    return None


# A tagged union, so an error reports only the shape that was written.
Below = Annotated[
    Annotated[Ladder, Tag("ladder")]
    | Annotated[Literal["owner"], Tag("owner")]
    | Annotated[LadderItem, Tag("usage")]
    | Annotated[dict[Currency, Ladder], Tag("per-currency")],
    Discriminator(
        _below_kind,
        custom_error_type="below_shape",
        custom_error_message="write a list of amounts, e.g. [250, 100, 10], a mapping of currency to "
        "amounts, e.g. {USD: [250, 100, 10], INR: [20000, 8000, 800]}, average-daily-usage, "
        "{runway: 3d}, or owner (the owner's own thresholds)",
    ),
    WithJsonSchema(BELOW_SCHEMA),
]


class Topup(_Strict):
    """Ask the platform to recharge when a step fires, instead of emailing about it."""

    amount: (
        Annotated[Decimal, BeforeValidator(_amount), WithJsonSchema(AMOUNT_SCHEMA)]
        | dict[Currency, Annotated[Decimal, BeforeValidator(_amount), WithJsonSchema(AMOUNT_SCHEMA)]]
    ) = Field(
        description="How much to recharge, in major units: 200, or per currency {USD: 200, INR: 15000}."
    )
    template: TemplateName = Field(
        default="topup-failed", description="The email sent to the owner when the charge fails."
    )


# What validation checks across fields, for editors: a condition, and a ladder's currency.
_RULE_SCHEMA_EXTRA: dict[str, Any] = {
    "anyOf": [
        {"required": ["below"]},
        {"required": ["exhausted"], "properties": {"exhausted": {"const": True}}},
    ],
    "if": {"required": ["below"], "properties": {"below": {"type": "array"}}},
    "then": {"required": ["accounts"], "properties": {"accounts": {"required": ["currency"]}}},
}


class AlertRule(_Strict):
    """One alert rule: which balances, below what, who hears about it, with which template."""

    model_config = ConfigDict(json_schema_extra=_RULE_SCHEMA_EXTRA)

    id: RuleId = Field(
        description="The rule's stable name: lower-case letters, digits, '.', '-' and '_', at most 64 "
        "characters, unique across all rule files. Alert state is keyed on it: a renamed rule starts "
        "afresh.",
    )
    description: str = Field(default="", description="Free text; templates show it as rule.description.")
    enabled: bool = Field(
        default=True,
        description="false sends nothing and keeps the rule's state; true again resumes where it was.",
    )
    accounts: Selector = Field(
        default_factory=Selector,
        description="Which balances the rule watches. Default: every prepaid account.",
        json_schema_extra={"default": {}},
    )
    below: Below | None = Field(
        default=None,
        description="Thresholds in major units: a ladder [250, 100, 10] for each currency in "
        "accounts.currency, or amounts per currency {USD: [250, 100, 10], INR: [20000, 8000, 800]}. "
        "One alert per step as the balance falls to or below it.",
    )
    exhausted: bool = Field(
        default=False, description="Also alert when the balance is at or below zero: service stops."
    )
    rearm: Annotated[Band, BeforeValidator(_band)] = Field(
        default_factory=lambda: Band(percent=Decimal(10)),
        description="How far above a step the balance must climb before the step can fire again: "
        "a percentage of the step (10%) or an amount in major units (5). Default 10%.",
        json_schema_extra=_rearm_schema,
    )
    remind: Reminder | None = Field(
        default=None,
        description="Repeat the alert this often while the balance stays at or below the step: "
        "24h, 1d, 1h30m (units ms, s, m, h, d, w), at least 1m. Default: no reminders.",
    )
    notify: Annotated[
        list[Address], BeforeValidator(_split_recipients), WithJsonSchema(RECIPIENTS_SCHEMA)
    ] = Field(
        default_factory=lambda: [OWNER],
        description="Who gets the email: owner (the account owner's address) and/or email addresses, "
        "as a list or one comma-separated string. Default [owner].",
        json_schema_extra={"default": [OWNER]},
    )
    template: TemplateName = Field(
        default="low-balance",
        description="The email template: a directory in templates_dir holding subject.txt, body.txt "
        "and optionally body.html.",
    )
    unless: Literal["owner-configured"] | None = Field(
        default=None,
        description="owner-configured: skip balances whose owner set their own thresholds (enabled "
        "owner preferences for that currency), so defaults never override the owner.",
    )
    restored: bool | TemplateName = Field(
        default=False,
        description="Also send one 'balance restored' email when credit lifts the balance back above "
        "every step that had fired (above their re-arm points): true uses the balance-restored "
        "template, or name another.",
    )
    topup: Topup | None = Field(
        default=None,
        description="Instead of an email, ask the platform to recharge this amount when a step fires "
        "(one request per episode); the owner is emailed only if the charge fails.",
    )
    inhibited_by: Annotated[list[RuleId], BeforeValidator(_one_or_many)] = Field(
        default_factory=list,
        description="Ids of rules whose alert, while fired for the same balance, silences this rule: "
        "a ladder inhibited_by [exhausted] sends no 'below $10' email when the balance drops straight "
        "to zero, only the exhausted one. The silenced steps still count as fired.",
        json_schema_extra={"default": []},
    )

    @model_validator(mode="after")
    def _has_condition(self) -> AlertRule:
        # A message starting "field: " is reported at that field (see loader.validation_problems).
        if self.below is None and not self.exhausted:
            raise ValueError(
                "no condition: write below: [amounts] (with accounts.currency), "
                "below: {USD: [amounts]}, and/or exhausted: true"
            )
        if self.below == {}:
            raise ValueError("below: no currencies; write amounts per currency, e.g. {USD: [250, 100, 10]}")
        if self.topup is not None:
            if isinstance(self.topup.amount, Decimal) and not self.accounts.currency:
                raise ValueError(
                    "topup: a plain amount needs accounts.currency; or write it per currency, "
                    "e.g. topup: {amount: {USD: 200, INR: 15000}}"
                )
            if self.remind is not None:
                raise ValueError("remind: a top-up rule sends no alert to remind of; remove remind")
        if isinstance(self.below, list) and _has_amounts(self.below) and not self.accounts.currency:
            raise ValueError(
                "below: a list of amounts needs accounts.currency, since a threshold means nothing "
                "without its currency; add accounts: {currency: USD}, or give amounts per currency: "
                "below: {USD: [250, 100, 10], INR: [20000, 8000, 800]}"
            )
        for ladder in self._ladders():
            repeated = sorted({a for a in ladder if ladder.count(a) > 1})
            if repeated:
                raise ValueError(f"below: {repeated[0]} appears twice; each threshold may appear once")
        if self.id in self.inhibited_by:
            raise ValueError("inhibited_by: a rule cannot silence itself; name other rules' ids")
        if self.remind is not None and self.remind < timedelta(minutes=1):
            raise ValueError(
                "remind: reminders more often than once a minute would flood inboxes; write e.g. 24h"
            )
        return self

    def _ladders(self) -> list[list[Decimal | UsageStep]]:
        if isinstance(self.below, dict):
            return list(self.below.values())
        return [self.below] if isinstance(self.below, list) else []


def _has_amounts(ladder: list[Decimal | UsageStep]) -> bool:
    return any(isinstance(item, Decimal) for item in ladder)
