"""What changed between two versions of a rule, described for people."""

from __future__ import annotations

from balancewatch.core.durations import format_duration
from balancewatch.core.money import to_major
from balancewatch.rules.compiled import CompiledRule, Selector, StepSet
from balancewatch.tools.plan.model import Change

# --- what changed --------------------------------------------------------------------------------


def moves_alerts(old: CompiledRule | None, new: CompiledRule | None) -> bool:
    """Whether replacing ``old`` with ``new`` can change who is alerted or when.

    Description, recipients and template change what is sent, not whether.
    """
    if old is None or new is None:
        present = old or new
        return present is not None and present.enabled
    if not (old.enabled or new.enabled):
        return False
    return (old.enabled, old.selector, old.step_sets, old.remind) != (
        new.enabled,
        new.selector,
        new.step_sets,
        new.remind,
    )


def differences(old: CompiledRule | None, new: CompiledRule | None) -> tuple[Change, ...]:
    """What differs between two versions of one rule; empty when either is absent."""
    if old is None or new is None:
        return ()
    pairs = [
        ("enabled", _yes_no(old.enabled), _yes_no(new.enabled)),
        ("accounts", describe_selector(old.selector), describe_selector(new.selector)),
        *_ladder_changes(old, new),
        ("rearm", _band(old), _band(new)),
        ("remind", _remind(old), _remind(new)),
        ("notify", _notify(old), _notify(new)),
        ("template", old.template, new.template),
        ("inhibited_by", ", ".join(old.inhibited_by) or "none", ", ".join(new.inhibited_by) or "none"),
        ("description", old.description, new.description),
    ]
    return tuple(Change(f, o, n) for f, o, n in pairs if o != n)


def describe_selector(sel: Selector) -> str:
    """The selector as one line: ``billing=prepaid currency=USD labels.tier=pro|enterprise``."""
    parts = [f"billing={sel.billing or 'any'}"]
    if sel.currencies is not None:
        parts.append(f"currency={','.join(sel.currencies)}")
    parts.extend(f"labels.{key}={'|'.join(values)}" for key, values in sel.labels)
    if sel.ids is not None:
        parts.append(f"ids={','.join(sel.ids)}")
    return " ".join(parts)


def _ladder_changes(old: CompiledRule, new: CompiledRule) -> list[tuple[str, str, str]]:
    old_sets = {ss.currency: ss for ss in old.step_sets}
    new_sets = {ss.currency: ss for ss in new.step_sets}
    currencies = sorted(old_sets.keys() | new_sets.keys(), key=lambda c: (c is None, c or ""))
    return [
        (f"below {c or 'any currency'}", _ladder(old_sets.get(c)), _ladder(new_sets.get(c)))
        for c in currencies
    ]


def _ladder(step_set: StepSet | None) -> str:
    if step_set is None:
        return "none"
    return "/".join(major(s.amount, step_set.currency) for s in step_set.steps)


def major(minor: int, currency: str | None) -> str:
    """Minor units as a plain major-unit number: ``25000`` USD is ``250``, ``1250`` is ``12.50``."""
    if currency is None:
        return str(minor)
    value = to_major(minor, currency)
    return str(int(value)) if value == value.to_integral_value() else str(value)


def _band(rule: CompiledRule) -> str:
    if rule.model is not None:
        band = rule.model.rearm
        return f"{band.percent}%" if band.percent is not None else f"{band.amount}"
    # Without the source model: the re-arm points themselves.
    return "; ".join(
        f"{ss.currency or 'any'} " + "/".join(major(s.rearm_above, ss.currency) for s in ss.steps)
        for ss in rule.step_sets
    )


def _remind(rule: CompiledRule) -> str:
    return format_duration(rule.remind) if rule.remind is not None else "none"


def _notify(rule: CompiledRule) -> str:
    return ", ".join([*(["owner"] if rule.notify_owner else []), *rule.recipients])


def _yes_no(value: bool) -> str:
    return "true" if value else "false"
