"""Rules compiled for evaluation: thresholds as integer minor units per currency.

A step is *fixed* (an amount per currency, or zero for exhausted) or *follows*
something per account: usage (``UsageSpec``: times the average daily usage)
or the owner's own thresholds. Fixed and owner steps keep their alert state
under their amount, so a changed threshold starts fresh; usage steps, whose
amount moves with usage, keep it under a stable negative key (-1, -2, ...: the
position of the usage item in the rule's ladder).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal

from balancewatch.config.channels import reference
from balancewatch.core.money import MoneyError, to_minor
from balancewatch.rules.fields import OWNER, OWNER_THRESHOLDS, PREFERENCES, SUBACCOUNT_OWNERS
from balancewatch.rules.models import AlertRule, UsageStep
from balancewatch.rules.models import Selector as SelectorModel


@dataclass(frozen=True, slots=True)
class UsageSpec:
    """A step at ``times`` the average daily usage over ``window_days``."""

    key: int
    window_days: int
    times: Decimal
    runway: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One threshold: fires at or below ``amount``, re-arms above ``rearm_above``.

    ``key`` is where its alert state is kept when that is not the amount (usage steps).
    """

    amount: int
    rearm_above: int
    exhausted: bool = False
    key: int | None = None
    usage: UsageSpec | None = None
    owner: bool = False

    @property
    def state_key(self) -> int:
        return self.amount if self.key is None else self.key


@dataclass(frozen=True, slots=True)
class StepSet:
    """The steps of one rule for one currency (``None``: any currency).

    ``steps`` are the fixed ones, highest first; ``usage`` and ``owner`` add
    steps whose amounts are known per balance only (see ``dynamic``).
    """

    currency: str | None
    steps: tuple[Step, ...]
    usage: tuple[UsageSpec, ...] = ()
    owner: bool = False

    @property
    def highest(self) -> int:
        return self.steps[0].amount if self.steps else 0

    @property
    def dynamic(self) -> bool:
        return bool(self.usage) or self.owner


@dataclass(frozen=True, slots=True)
class Selector:
    """Which balances a compiled rule watches; ``None`` fields do not filter."""

    billing: str | None
    currencies: tuple[str, ...] | None
    labels: tuple[tuple[str, tuple[str, ...]], ...]
    ids: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A validated rule ready for the evaluator. Immutable: a reload builds new ones."""

    id: str
    description: str
    enabled: bool
    selector: Selector
    step_sets: tuple[StepSet, ...]
    remind: timedelta | None
    notify_owner: bool
    recipients: tuple[str, ...]
    template: str
    source: str = ""
    line: int = 0
    model: AlertRule | None = field(default=None, compare=False, repr=False)
    # The config's channels named in notify (channel:NAME), each with the line naming it.
    channels: tuple[str, ...] = ()
    channel_lines: tuple[int, ...] = field(default=(), compare=False)
    inhibited_by: tuple[str, ...] = ()
    unless_owner_configured: bool = False
    notify_preferences: bool = False
    notify_subaccount_owners: bool = False
    restored_template: str | None = None
    topup: tuple[tuple[str | None, int], ...] | None = None  # (currency or None for any, minor units)
    topup_template: str | None = None
    band_percent: Decimal | None = Decimal(10)
    band_major: Decimal | None = None

    @property
    def restored(self) -> bool:
        return self.restored_template is not None

    def templates(self) -> dict[str, str]:
        """Every template this rule may render, and for what: ``alert``, ``restored`` or ``topup-failed``."""
        out = {self.template: "alert"} if self.topup is None else {}
        if self.restored_template is not None:
            out[self.restored_template] = "restored"
        if self.topup_template is not None:
            out[self.topup_template] = "topup-failed"
        return out

    def rearm_above(self, amount: int, currency: str) -> int:
        """The re-arm point of a step at ``amount`` (minor units of ``currency``)."""
        if self.band_percent is not None:
            return amount + _percent_band(amount, self.band_percent)
        return amount + to_minor(self.band_major or Decimal(0), currency)

    def topup_amount(self, currency: str) -> int | None:
        """The recharge for ``currency`` in minor units, or None when this rule does not recharge it."""
        return dict(self.topup or ()).get(currency)


def addresses(notify: Iterable[str]) -> tuple[str, ...]:
    """The email addresses a notify list names, without repeats."""
    words = (OWNER, PREFERENCES, SUBACCOUNT_OWNERS)
    return tuple(dict.fromkeys(a for a in notify if a not in words and reference(a) is None))


def channel_references(notify: Iterable[str]) -> tuple[str, ...]:
    """The channels a notify list names (``channel:NAME``), without repeats."""
    return tuple(dict.fromkeys(name for a in notify if (name := reference(a)) is not None))


class CompileError(ValueError):
    """A rule that validated but cannot be turned into minor units.

    ``field`` names where, dotted with indexes (``below.USD[1]``); ``errors`` holds every
    (field, message) found in the rule.
    """

    def __init__(self, field_name: str, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.field = field_name
        self.errors = errors or [(field_name, message)]


def compile_rule(rule: AlertRule, source: str = "", line: int = 0) -> CompiledRule:
    """Compile ``rule``; raises CompileError listing every amount a currency cannot hold."""
    return CompiledRule(
        id=rule.id,
        description=rule.description,
        enabled=rule.enabled,
        selector=_selector(rule),
        step_sets=_step_sets(rule),
        remind=rule.remind,
        notify_owner=OWNER in rule.notify,
        recipients=addresses(rule.notify),
        channels=channel_references(rule.notify),
        template=rule.template,
        source=source,
        line=line,
        model=rule,
        inhibited_by=tuple(dict.fromkeys(rule.inhibited_by)),
        unless_owner_configured=rule.unless == "owner-configured",
        notify_preferences=PREFERENCES in rule.notify,
        notify_subaccount_owners=SUBACCOUNT_OWNERS in rule.notify,
        restored_template=(
            "balance-restored"
            if rule.restored is True
            else rule.restored
            if isinstance(rule.restored, str)
            else None
        ),
        topup=_topup(rule),
        topup_template=rule.topup.template if rule.topup else None,
        band_percent=rule.rearm.percent,
        band_major=rule.rearm.amount,
    )


def _topup(rule: AlertRule) -> tuple[tuple[str | None, int], ...] | None:
    if rule.topup is None:
        return None
    amount = rule.topup.amount
    if isinstance(amount, dict):
        return tuple((c, _minor(a, c, f"topup.amount.{c}")) for c, a in amount.items())
    return tuple((c, _minor(amount, c, "topup.amount")) for c in rule.accounts.currency or [])


def _selector(rule: AlertRule) -> Selector:
    return compile_selector(rule.accounts)


def compile_selector(sel: SelectorModel) -> Selector:
    """A selector as written, as the evaluator's conditions."""
    return Selector(
        billing=sel.billing_filter,
        currencies=tuple(sel.currency) if sel.currency else None,
        labels=tuple(sorted((k, tuple(v)) for k, v in sel.labels.items())),
        ids=tuple(sel.ids) if sel.ids else None,
    )


def _ladders(rule: AlertRule) -> dict[str | None, list[Decimal | UsageStep]]:
    wanted = rule.accounts.currency
    below = rule.below
    if isinstance(below, dict):
        outside = [
            (
                f"below.{c}",
                f"{c} thresholds would never apply: accounts.currency is {', '.join(wanted or [])}",
            )
            for c in below
            if wanted and c not in wanted
        ]
        if outside:
            raise CompileError(*outside[0], errors=outside)
        return {currency: amounts for currency, amounts in below.items()}
    ladder: list[Decimal | UsageStep] = (
        list(below) if isinstance(below, list) else [below] if isinstance(below, UsageStep) else []
    )
    return {c: list(ladder) for c in wanted} if wanted else {None: ladder}


def _step_sets(rule: AlertRule) -> tuple[StepSet, ...]:
    sets: list[StepSet] = []
    errors: list[tuple[str, str]] = []
    for currency, ladder in _ladders(rule).items():
        try:
            sets.append(_step_set(rule, currency, ladder))
        except CompileError as exc:
            errors.extend(e for e in exc.errors if e not in errors)
    if errors:
        raise CompileError(*errors[0], errors=errors)
    return tuple(sets)


def _step_set(rule: AlertRule, currency: str | None, ladder: list[Decimal | UsageStep]) -> StepSet:
    where = "below" if isinstance(rule.below, list) or currency is None else f"below.{currency}"
    errors: list[tuple[str, str]] = []
    minors: set[int] = set()
    usage: list[UsageSpec] = []
    for i, item in enumerate(ladder):
        if isinstance(item, UsageStep):
            usage.append(UsageSpec(-(len(usage) + 1), item.days, item.times, item.runway))
            continue
        try:
            minors.add(_minor(item, currency, f"{where}[{i}]"))
        except CompileError as exc:
            errors.append((exc.field, str(exc)))
    if rule.exhausted:
        minors.add(0)
    steps = []
    for m in sorted(minors, reverse=True):
        try:
            steps.append(Step(amount=m, rearm_above=m + _band(rule, m, currency), exhausted=(m == 0)))
        except CompileError as exc:
            errors.append((exc.field, str(exc)))
            break
    if (usage or rule.below == OWNER_THRESHOLDS) and currency is None and rule.rearm.amount is not None:
        errors.append(("rearm", "an amount band needs accounts.currency to know its unit; use a percentage"))
    if errors:
        raise CompileError(*errors[0], errors=errors)
    return StepSet(currency, tuple(steps), tuple(usage), owner=rule.below == OWNER_THRESHOLDS)


def _minor(amount: Decimal, currency: str | None, field_name: str) -> int:
    if currency is None:
        return 0
    try:
        return to_minor(amount, currency)
    except MoneyError as exc:
        raise CompileError(field_name, str(exc)) from None


def _percent_band(step: int, percent: Decimal) -> int:
    """``percent`` of ``step``, rounded down to the minor unit: balances are whole minor units, so
    "above step + 10%" (say above 1357.4 cents) is exactly "above step + the band rounded down"."""
    return int((Decimal(step) * percent / 100).to_integral_value(ROUND_FLOOR))


def _band(rule: AlertRule, step: int, currency: str | None) -> int:
    band = rule.rearm
    if band.percent is not None:
        return _percent_band(step, band.percent)
    if currency is None:
        raise CompileError(
            "rearm", "an amount band needs accounts.currency to know its unit; use a percentage"
        )
    return _minor(band.amount or Decimal(0), currency, "rearm")
