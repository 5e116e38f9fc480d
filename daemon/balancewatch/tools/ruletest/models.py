"""What a rule test file may say, as pydantic models that reject unknown keys.

A test file (``*.test.yaml``) names the rule files under test and holds a
list of tests; each test has accounts with opening balances (and optionally
owner preferences and a daily usage history) and a timeline of steps, each
step a time, ledger entries, balance and preference writes and the
notifications expected::

    rule_files: [../low-balance.yaml]
    start: 2026-03-01T09:00:00Z
    tests:
      - name: a jump over two steps sends one email, for the lowest
        accounts:
          - {id: acme, name: Acme Ltd, email: owner@acme.example, balances: {USD: 300}}
        timeline:
          - at: 1m
            post: {account: acme, amount: -210}
            expect:
              - {rule: default-ladder, account: acme, step: 100, subject_contains: "below $100.00"}

These models check shapes only; ``load`` checks what refers to what
(accounts, currencies, amounts a currency can hold, the order of the
timeline) and checks preferences as ``balancewatch prefs`` does. See
docs/rule-tests.md.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from balancewatch.core.durations import parse_duration
from balancewatch.core.money import MoneyError, check_currency


def _text(value: Any) -> Any:
    # Account ids and label values are text; YAML reads `id: 1001` as a number.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _currency(value: Any) -> str:
    try:
        return check_currency(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


def _amount(value: Any) -> Decimal:
    """A signed amount in major units, exactly as written (YAML decimals arrive as Decimal)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"{value!r} is not an amount; write a number such as -12.50 or 300")
    try:
        amount = Decimal(value.strip().replace("_", "").replace(",", "") if isinstance(value, str) else value)
    except ArithmeticError:
        raise ValueError(f"{value!r} is not an amount; write a number such as -12.50 or 300") from None
    if not amount.is_finite():
        raise ValueError(f"{value!r} is not a finite amount")
    return amount


def _step_amount(value: Any) -> Decimal:
    amount = _amount(value)
    if amount < 0:
        raise ValueError(f"{value} is negative; a threshold step is zero or more (0 for exhausted)")
    return amount


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str | dict) else value


def _addresses(value: Any) -> Any:
    # As in rule files: a list, or one comma-separated string.
    items = value if isinstance(value, list) else [value]
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            out.extend(part.strip() for part in item.split(",") if part.strip())
        else:
            out.append(item)
    return out


def _at(value: Any) -> timedelta | datetime:
    """An offset from the test's start (``90s``, ``1h``, ``1d2h``, ``0``) or an ISO time with a zone."""
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, date):
        raise ValueError(
            f"{value} is a date; write a time with its zone, e.g. {value}T09:00:00Z, or an offset"
        )
    if value == 0 or (isinstance(value, str) and value.strip() in ("0", "0s")):
        return timedelta(0)
    try:
        return parse_duration(value)
    except ValueError:
        pass
    if isinstance(value, str):
        try:
            return _aware(datetime.fromisoformat(value.strip()))
        except ValueError as exc:
            if "time zone" in str(exc):
                raise
    raise ValueError(
        f"{value!r} is neither an offset from start (0, 30s, 5m, 2h, 1d, 1d12h) "
        "nor an ISO time such as 2026-03-01T09:00:00Z"
    )


def _start(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, date):
        raise ValueError(f"{value} is a date; write a time with its zone, e.g. {value}T09:00:00Z")
    if isinstance(value, str):
        try:
            return _aware(datetime.fromisoformat(value.strip()))
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an ISO time; write e.g. 2026-03-01T09:00:00Z")


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{value.isoformat()} has no time zone; add one, e.g. {value.isoformat()}Z")
    return value


Text = Annotated[str, BeforeValidator(_text)]
Currency = Annotated[str, BeforeValidator(_currency)]
Amount = Annotated[Decimal, BeforeValidator(_amount)]
StepAmount = Annotated[Decimal, BeforeValidator(_step_amount)]
At = Annotated[timedelta | datetime, BeforeValidator(_at)]
Start = Annotated[datetime, BeforeValidator(_start)]
Texts = Annotated[list[str], BeforeValidator(_one_or_many)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreferenceSpec(_Strict):
    """An owner's own settings for one currency; ``load`` checks the values as the CLI does."""

    below: Any = None  # up to three amounts: [500, 100] or "500,100"; [] or none: no thresholds
    email: Any = None  # extra recipients: a list or one comma-separated string
    remind: bool | str | None = None  # true / 24h: a daily reminder; false / off: none
    enabled: bool | None = None


class AccountSpec(_Strict):
    """An account as the test starts: who owns it, what it holds, how much it used before."""

    id: Text
    name: str | None = None  # default: the id
    email: str
    billing: Literal["prepaid", "postpaid"] = "prepaid"
    locale: str | None = None
    timezone: str | None = None
    labels: dict[str, Text] = Field(default_factory=dict)
    parent: Text | None = None
    enabled: bool = True
    balances: dict[Currency, Amount] = Field(default_factory=dict)
    preferences: dict[Currency, PreferenceSpec] = Field(default_factory=dict)
    daily_usage: dict[Currency, Amount] = Field(default_factory=dict)  # used each day before start
    usage_days: int = Field(default=30, ge=1, le=365)  # how many days of daily_usage


class PostSpec(_Strict):
    """One ledger entry, posted at the step's time as a billing system would."""

    account: Text
    amount: Amount
    currency: Currency | None = None  # default: the paying account's only currency
    kind: Literal["usage", "top-up", "refund", "adjustment"] | None = None  # default: by the sign
    service: str | None = None
    quantity: int | None = None
    reference: str | None = None


class BalanceSpec(_Strict):
    """A balance written outright, as a billing system writing the table would."""

    account: Text
    amount: Amount
    currency: Currency | None = None


class PreferenceWriteSpec(PreferenceSpec):
    """Owner preferences changed at a step; only the fields given change."""

    account: Text
    currency: Currency | None = None  # default: the account's only currency


class ExpectSpec(_Strict):
    """A notification expected at a step; only the fields given are compared."""

    rule: str | None = None
    account: Text | None = None
    currency: Currency | None = None
    step: StepAmount | None = None
    kind: Literal["alert", "reminder", "restored"] | None = None
    template: str | None = None
    to: Annotated[list[str], BeforeValidator(_addresses)] | None = None
    subject: str | None = None
    subject_contains: Texts = Field(default_factory=list)
    text_contains: Texts = Field(default_factory=list)
    html_contains: Texts = Field(default_factory=list)


class StepSpec(_Strict):
    """One point of the timeline: move the clock, write entries, evaluate, compare."""

    at: At
    post: Annotated[list[PostSpec], BeforeValidator(_one_or_many)] = Field(default_factory=list)
    set_balance: Annotated[list[BalanceSpec], BeforeValidator(_one_or_many)] = Field(default_factory=list)
    set_preferences: Annotated[list[PreferenceWriteSpec], BeforeValidator(_one_or_many)] = Field(
        default_factory=list
    )
    expect: list[ExpectSpec] | None = None  # None: not checked; []: no notification

    @field_validator("expect", mode="before")
    @classmethod
    def _expect_written_empty(cls, value: Any) -> Any:
        # `expect:` with nothing after it reads as null; say which of the two was meant.
        if value is None:
            raise ValueError(
                "empty; write expect: [] to require no notification at this step, "
                "or leave expect out to not check this step"
            )
        return value


class CaseSpec(_Strict):
    """One test: a fresh database, these accounts, this timeline."""

    name: str = Field(min_length=1)
    start: Start | None = None
    accounts: list[AccountSpec] = Field(min_length=1)
    timeline: list[StepSpec] = Field(min_length=1)


class FileSpec(_Strict):
    """The top level of a ``*.test.yaml`` file."""

    rule_files: Texts | None = Field(default=None, min_length=1)  # default: every file in rules_dir
    templates: str | None = None  # default: the configured templates_dir
    start: Start | None = None
    tests: list[Any] = Field(min_length=1)  # each one validated as a CaseSpec on its own
