"""What a run looks like on a terminal: a diff per failing step, then one summary line.

Notifications print as YAML flow mappings with the field names of
``expect:``, so a decided notification can be pasted into a test as it is::

    FAIL rules/tests/ladder.test.yaml:8: a jump over two steps sends one email, for the lowest
      rules/tests/ladder.test.yaml:12: step at +1m (2026-03-01T09:01:00Z)
        - expected, not decided (line 14): {rule: default-ladder, account: acme, step: 10}
            closest decided: step is 100, not 10
        + decided, not expected: {rule: default-ladder, account: acme, currency: USD, step: 100, ...}
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from balancewatch.core.durations import format_duration
from balancewatch.tools.ruletest.cases import Expectation, Step
from balancewatch.tools.ruletest.match import Notification, addresses, amount, quote
from balancewatch.tools.ruletest.runner import CaseResult, Run, StepResult

_PLAIN = re.compile(r"^[A-Za-z0-9_.@/+-]+$")


def failure(result: CaseResult) -> list[str]:
    """The lines describing a failed test: each failing step with expected against decided."""
    case = result.case
    lines = [f"FAIL {case.where}: {case.name}"]
    for step in result.steps:
        if not step.ok:
            lines.extend(_step_diff(step))
    if result.stopped_early:
        lines.append("  (the steps after this one were not run)")
    return lines


def passed(result: CaseResult, *, steps: bool) -> list[str]:
    """The lines for a passing test; with ``steps``, what each step decided."""
    lines = [f"ok   {result.case.where}: {result.case.name}"]
    if steps:
        for s in result.steps:
            lines.extend(_decided(s))
    return lines


def summary(run: Run) -> str:
    """One line: ``ok 9 tests in 3 files``, or what failed."""
    cases = run.cases
    failed = sum(not c.ok for c in cases)
    ran = f"{_count(len(cases), 'test')} in {_count(len(run.files), 'file')}"
    if run.ok:
        return f"ok {ran}"
    parts = []
    if failed:
        parts.append(f"{failed} of {ran} failed")
    elif cases:
        parts.append(f"{ran} passed")
    if run.broken:
        parts.append(f"{_count(len(run.broken), 'file')} could not be run (problems listed above)")
    return "FAILED: " + "; ".join(parts)


def _step_diff(result: StepResult) -> list[str]:
    lines = [f"  {_step_title(result.step)}"]
    c = result.comparison
    if c is not None:
        for miss in c.missing:
            line = miss.expectation.where.line
            lines.append(f"    - expected, not decided (line {line}): {expected(miss.expectation)}")
            if miss.closest is not None:
                lines.append(f"        closest decided: {'; '.join(miss.differences)}")
            else:
                lines.append("        nothing else was decided at this step")
        lines.extend(f"    + decided, not expected: {notification(n)}" for n in c.unexpected)
        lines.extend(f"      as expected (line {e.where.line}): {notification(n)}" for e, n in c.matched)
    lines.extend(f"    error: {e}" for e in result.errors)
    return lines


def _decided(result: StepResult) -> list[str]:
    title = f"    {_step_title(result.step)}"
    if not result.decided:
        return [f"{title}: nothing decided"]
    return [f"{title}:", *(f"      {notification(n)}" for n in result.decided)]


def _step_title(step: Step) -> str:
    return f"{step.where}: step at +{_offset(step.offset)} ({_iso(step.at)})"


def notification(n: Notification) -> str:
    """A decided notification as a flow mapping in the field names of ``expect:``."""
    return _mapping(
        [
            ("rule", _scalar(n.rule)),
            ("account", _scalar(n.account)),
            ("currency", n.currency),
            ("step", amount(n.step_major)),
            ("kind", n.kind),
            ("template", _scalar(n.template)),
            ("to", addresses(n.recipients)),
            ("subject", quote(n.subject)),
        ]
    )


def expected(e: Expectation) -> str:
    """An expectation as written: only the fields it gives."""
    s = e.spec
    items: list[tuple[str, str]] = []
    for name in ("rule", "account", "currency", "step", "kind", "template"):
        value = getattr(s, name)
        if value is not None:
            items.append((name, amount(value) if name == "step" else _scalar(value)))
    if e.to is not None:
        items.append(("to", addresses(e.to)))
    if s.subject is not None:
        items.append(("subject", quote(s.subject)))
    for name in ("subject_contains", "text_contains", "html_contains"):
        texts = getattr(s, name)
        if texts:
            items.append((name, _texts(texts)))
    return _mapping(items)


def _mapping(items: Iterable[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"


def _texts(texts: list[str]) -> str:
    return quote(texts[0]) if len(texts) == 1 else "[" + ", ".join(quote(t) for t in texts) + "]"


def _scalar(value: str) -> str:
    return value if _PLAIN.match(value) else quote(value)


def _offset(delta: timedelta) -> str:
    return format_duration(delta) if delta else "0"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
