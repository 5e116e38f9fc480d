"""Rules compiled for evaluation: thresholds as integer minor units per currency."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_CEILING, Decimal

from balancewatch.money import MoneyError, to_minor
from balancewatch.rules.models import OWNER, AlertRule


@dataclass(frozen=True, slots=True)
class Step:
    """One threshold: fires at or below ``amount``, re-arms above ``rearm_above``."""

    amount: int
    rearm_above: int
    exhausted: bool = False


@dataclass(frozen=True, slots=True)
class StepSet:
    """The steps of one rule for one currency (``None``: any currency), highest first."""

    currency: str | None
    steps: tuple[Step, ...]

    @property
    def highest(self) -> int:
        return self.steps[0].amount


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
    inhibited_by: tuple[str, ...] = ()


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
        recipients=tuple(dict.fromkeys(a for a in rule.notify if a != OWNER)),
        template=rule.template,
        source=source,
        line=line,
        model=rule,
        inhibited_by=tuple(dict.fromkeys(rule.inhibited_by)),
    )


def _selector(rule: AlertRule) -> Selector:
    sel = rule.accounts
    return Selector(
        billing=sel.billing_filter,
        currencies=tuple(sel.currency) if sel.currency else None,
        labels=tuple(sorted((k, tuple(v)) for k, v in sel.labels.items())),
        ids=tuple(sel.ids) if sel.ids else None,
    )


def _ladders(rule: AlertRule) -> dict[str | None, list[Decimal]]:
    wanted = rule.accounts.currency
    if isinstance(rule.below, dict):
        outside = [
            (
                f"below.{c}",
                f"{c} thresholds would never apply: accounts.currency is {', '.join(wanted or [])}",
            )
            for c in rule.below
            if wanted and c not in wanted
        ]
        if outside:
            raise CompileError(*outside[0], errors=outside)
        return dict(rule.below)
    if isinstance(rule.below, list):
        return {c: list(rule.below) for c in wanted or []}
    return {c: [] for c in wanted} if wanted else {None: []}


def _step_sets(rule: AlertRule) -> tuple[StepSet, ...]:
    sets, errors = [], []
    for currency, ladder in _ladders(rule).items():
        try:
            sets.append(_step_set(rule, currency, ladder))
        except CompileError as exc:
            errors.extend(e for e in exc.errors if e not in errors)
    if errors:
        raise CompileError(*errors[0], errors=errors)
    return tuple(sets)


def _step_set(rule: AlertRule, currency: str | None, ladder: list[Decimal]) -> StepSet:
    where = "below" if isinstance(rule.below, list) or currency is None else f"below.{currency}"
    errors, minors = [], set()
    for i, amount in enumerate(ladder):
        try:
            minors.add(_minor(amount, currency, f"{where}[{i}]"))
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
    if errors:
        raise CompileError(*errors[0], errors=errors)
    return StepSet(currency=currency, steps=tuple(steps))


def _minor(amount: Decimal, currency: str | None, field_name: str) -> int:
    if currency is None:
        return 0
    try:
        return to_minor(amount, currency)
    except MoneyError as exc:
        raise CompileError(field_name, str(exc)) from None


def _band(rule: AlertRule, step: int, currency: str | None) -> int:
    band = rule.rearm
    if band.percent is not None:
        return int((Decimal(step) * band.percent / 100).to_integral_value(ROUND_CEILING))
    if currency is None:
        raise CompileError(
            "rearm", "an amount band needs accounts.currency to know its unit; use a percentage"
        )
    return _minor(band.amount or Decimal(0), currency, "rearm")
