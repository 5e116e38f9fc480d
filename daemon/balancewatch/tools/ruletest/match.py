"""Expected against decided: which notification satisfies which expectation, and why others do not.

An expectation matches a notification when every field it gives agrees.
Pairs are found as a maximum matching, so the order in which a step's
notifications are written or decided never decides the verdict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from balancewatch.core.money import MoneyError, to_major, to_minor
from balancewatch.tools.ruletest.cases import Expectation


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification the pipeline decided, as its outbox row holds it (step in minor units)."""

    rule: str
    account: str
    currency: str
    step: int
    kind: str
    template: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str | None

    @property
    def step_major(self) -> Decimal:
        return to_major(self.step, self.currency)


@dataclass(frozen=True, slots=True)
class Miss:
    """An expectation nothing matched; ``closest`` is the unmatched notification nearest to it."""

    expectation: Expectation
    closest: Notification | None
    differences: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Comparison:
    """The verdict for one step."""

    matched: tuple[tuple[Expectation, Notification], ...]
    missing: tuple[Miss, ...]
    unexpected: tuple[Notification, ...]


def compare(expected: Sequence[Expectation], decided: Sequence[Notification]) -> Comparison:
    """Pair ``expected`` with ``decided``; what is left over on either side is a failure."""
    fits = [[j for j, n in enumerate(decided) if not differences(e, n)] for e in expected]
    owner: dict[int, int] = {}  # decided index -> expected index

    def claim(i: int, visited: set[int]) -> bool:
        for j in fits[i]:
            if j not in visited:
                visited.add(j)
                if j not in owner or claim(owner[j], visited):
                    owner[j] = i
                    return True
        return False

    for i in range(len(expected)):
        claim(i, set())
    paired = {i: j for j, i in owner.items()}
    left = [n for j, n in enumerate(decided) if j not in owner]
    missing = []
    for i, e in enumerate(expected):
        if i in paired:
            continue
        ranked = sorted(left, key=lambda n: len(differences(e, n)))
        closest = ranked[0] if ranked else None
        missing.append(Miss(e, closest, tuple(differences(e, closest)) if closest else ()))
    return Comparison(
        matched=tuple((expected[i], decided[j]) for i, j in sorted(paired.items())),
        missing=tuple(missing),
        unexpected=tuple(left),
    )


def differences(expectation: Expectation, n: Notification) -> list[str]:
    """Why ``n`` does not satisfy ``expectation``, one phrase per field; empty when it does."""
    e = expectation.spec
    out = []
    for name, want, got in (
        ("rule", e.rule, n.rule),
        ("account", e.account, n.account),
        ("currency", e.currency, n.currency),
        ("kind", e.kind, n.kind),
        ("template", e.template, n.template),
    ):
        if want is not None and want != got:
            out.append(f"{name} is {got}, not {want}")
    if e.step is not None and _minor(e.step, n.currency) != n.step:
        out.append(f"step is {amount(n.step_major)}, not {amount(e.step)}")
    if expectation.to is not None and expectation.to != frozenset(n.recipients):
        out.append(f"to is {addresses(n.recipients)}, not {addresses(expectation.to)}")
    subject, text = spaced(n.subject), spaced(n.text)
    if e.subject is not None and spaced(e.subject) != subject:
        out.append(f"subject is {quote(n.subject)}, not {quote(e.subject)}")
    out.extend(
        f"subject {quote(n.subject)} does not contain {quote(t)}"
        for t in e.subject_contains
        if spaced(t) not in subject
    )
    out.extend(f"text does not contain {quote(t)}" for t in e.text_contains if spaced(t) not in text)
    if e.html_contains and n.html is None:
        out.append("there is no HTML part")
    elif n.html is not None:
        html = spaced(n.html)
        out.extend(f"HTML does not contain {quote(t)}" for t in e.html_contains if spaced(t) not in html)
    return out


_SPACES = str.maketrans({"\u00a0": " ", "\u2007": " ", "\u202f": " "})


def spaced(text: str) -> str:
    """``text`` with no-break spaces as plain spaces.

    Locales put them between an amount and its sign (``250,00\u00a0€`` in de_DE);
    nobody can see the difference in a test file, so it never decides a match.
    """
    return text.translate(_SPACES)


def _minor(step: Decimal, currency: str) -> int | None:
    try:
        return to_minor(step, currency)
    except MoneyError:
        return None  # more decimals than the currency has: matches no step of it


def amount(value: Decimal) -> str:
    """A major-unit amount as it would be written in a test file: ``100``, ``12.50``."""
    return str(value.quantize(Decimal(1))) if value == value.to_integral_value() else str(value)


def quote(text: str) -> str:
    """Text as a double-quoted YAML string (every character shown, nothing escaped that needs none)."""
    return json.dumps(text, ensure_ascii=False)


def addresses(items: Sequence[str] | frozenset[str]) -> str:
    return "[" + ", ".join(sorted(items)) + "]"
