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

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

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
from balancewatch.rules.editor_schema import (
    AMOUNT_SCHEMA,
    BELOW_SCHEMA,
    CURRENCY_SCHEMA,
    LADDER_ITEM_SCHEMA,
    MAX_BAND_PERCENT,
    PERCENT_NUMBER_SCHEMA,
    RECIPIENTS_SCHEMA,
    RULE_SCHEMA_EXTRA,
    rearm_schema,
)
from balancewatch.rules.fields import (
    ADU,
    DEFAULT_WINDOW_DAYS,
    OWNER,
    OWNER_THRESHOLDS,
    RUNWAY,
    Address,
    Currency,
    Reminder,
    RuleId,
    TemplateName,
    Texts,
    as_written,
    band_size,
    not_empty_ladder,
    one_or_many,
    parse_amount,
    split_recipients,
)

# rules/reports.py still imports these two from here; they live in rules/fields.py.
from balancewatch.rules.fields import PREFERENCES as PREFERENCES

_split_recipients = split_recipients


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
            BeforeValidator(one_or_many),
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


BandAmount = Annotated[Decimal, BeforeValidator(band_size), WithJsonSchema(AMOUNT_SCHEMA)]
BandPercent = Annotated[Decimal, BeforeValidator(band_size), WithJsonSchema(PERCENT_NUMBER_SCHEMA)]


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
            f"{as_written(value)} is not a re-arm band; write a percentage such as 10% or an amount such as 5"
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
    amount = parse_amount(value, "write a multiple above zero, e.g. 1 or 2.5")
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
    return step if isinstance(step, UsageStep) else parse_amount(step)


LadderItem = Annotated[Decimal | UsageStep, BeforeValidator(_ladder_item), WithJsonSchema(LADDER_ITEM_SCHEMA)]
Ladder = Annotated[list[LadderItem], AfterValidator(not_empty_ladder)]


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
        Annotated[Decimal, BeforeValidator(parse_amount), WithJsonSchema(AMOUNT_SCHEMA)]
        | dict[Currency, Annotated[Decimal, BeforeValidator(parse_amount), WithJsonSchema(AMOUNT_SCHEMA)]]
    ) = Field(
        description="How much to recharge, in major units: 200, or per currency {USD: 200, INR: 15000}."
    )
    template: TemplateName = Field(
        default="topup-failed", description="The email sent to the owner when the charge fails."
    )


class AlertRule(_Strict):
    """One alert rule: which balances, below what, who hears about it, with which template."""

    model_config = ConfigDict(json_schema_extra=RULE_SCHEMA_EXTRA)

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
        json_schema_extra=rearm_schema,
    )
    remind: Reminder | None = Field(
        default=None,
        description="Repeat the alert this often while the balance stays at or below the step: "
        "24h, 1d, 1h30m (units ms, s, m, h, d, w), at least 1m. Default: no reminders.",
    )
    notify: Annotated[list[Address], BeforeValidator(split_recipients), WithJsonSchema(RECIPIENTS_SCHEMA)] = (
        Field(
            default_factory=lambda: [OWNER],
            description="Who gets the email: owner (the account owner's address) and/or email addresses, "
            "as a list or one comma-separated string. Default [owner].",
            json_schema_extra={"default": [OWNER]},
        )
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
    inhibited_by: Annotated[list[RuleId], BeforeValidator(one_or_many)] = Field(
        default_factory=list,
        description="Ids of rules whose alert, while fired for the same balance, silences this rule: "
        "a ladder inhibited_by [exhausted] sends no 'below $10' email when the balance drops straight "
        "to zero, only the exhausted one. The silenced steps still count as fired.",
        json_schema_extra={"default": []},
    )

    @model_validator(mode="after")
    def _has_condition(self) -> AlertRule:
        # A message starting "field: " is reported at that field (see validation.validation_problems).
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
            # Amounts in order, then usage steps (which have no order among amounts).
            repeated = sorted({a for a in ladder if ladder.count(a) > 1}, key=_ladder_order)
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


def _ladder_order(item: Decimal | UsageStep) -> tuple[bool, Decimal]:
    return (True, Decimal(0)) if isinstance(item, UsageStep) else (False, item)
