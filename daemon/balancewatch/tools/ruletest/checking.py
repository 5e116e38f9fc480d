"""Where a test file's problems are, and the small checks every part of a test file uses.

A :class:`Collector` gathers the problems of one file as ``path:line: field:
message`` while the file is read, so every problem is reported in one pass;
each check returns None (with its problem recorded) where it cannot give a value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from balancewatch.core import yamlfile
from balancewatch.core.money import MoneyError, to_minor
from balancewatch.core.problems import Problem
from balancewatch.store.preferences import (
    Change,
    PreferenceError,
    parse_recipients,
    parse_remind,
    parse_thresholds,
)
from balancewatch.tools.ruletest.cases import Opening, Where
from balancewatch.tools.ruletest.models import PreferenceSpec

Loc = tuple[str | int, ...]
Known = dict[str, Opening]


class Collector:
    """The problems of one test file, each placed by its YAML location."""

    def __init__(self, path: Path, located: yamlfile.Located) -> None:
        self.path, self.located = path, located
        self.problems: list[Problem] = []

    def where(self, loc: Loc) -> Where:
        return Where(str(self.path), self.located.line_of(loc), self.located.field_of(loc))

    def problem(self, loc: Loc, message: str) -> None:
        w = self.where(loc)
        self.problems.append(Problem(w.path, w.line, w.field, message))

    def minor(self, amount: Any, currency: str, here: Loc) -> int | None:
        """``amount`` in ``currency``'s minor units, or None when it does not fit the currency."""
        try:
            return to_minor(amount, currency)
        except MoneyError as exc:
            self.problem(here, str(exc))
            return None

    def unknown_account(self, account_id: str, here: Loc, known: Known) -> None:
        have = ", ".join(known) or "none"
        self.problem(here, f"no account {account_id!r} in this test's accounts (have: {have})")

    def payer(self, account_id: str, here: Loc, known: Known) -> Opening | None:
        """The account whose balance ``account_id`` draws on: itself, or its main account."""
        account = known.get(account_id)
        if account is None:
            self.unknown_account(account_id, here, known)
            return None
        return known.get(account.spec.parent or "", account)

    def only_currency(self, payer: Opening, account_id: str, here: Loc) -> str | None:
        """The one currency ``payer`` holds, for a step that does not name its currency."""
        currencies = list(payer.spec.balances)
        if len(currencies) == 1:
            return currencies[0]
        whose = (
            f"{payer.spec.id!r} (which pays for {account_id!r})"
            if payer.spec.id != account_id
            else f"{account_id!r}"
        )
        held = f"holds {' and '.join(currencies)}" if currencies else "has no opening balance"
        self.problem((*here, "currency"), f"{whose} {held}; write the currency, e.g. currency: USD")
        return None

    def change(self, spec: PreferenceSpec, currency: str, here: Loc, *, opening: bool) -> Change | None:
        """The preferences as a Change; for an opening row, what is left out takes its default
        (no thresholds, no extra recipients, no reminder, enabled)."""
        try:
            thresholds = None if spec.below is None else parse_thresholds(spec.below, currency)
            recipients = None if spec.email is None else parse_recipients(spec.email)
            remind = None if spec.remind is None else parse_remind(spec.remind)
        except PreferenceError as exc:
            self.problem((*here, exc.field), exc.message)
            return None
        if opening:
            return Change(
                thresholds=thresholds or (),
                recipients=recipients or (),
                remind=bool(remind),
                enabled=True if spec.enabled is None else spec.enabled,
            )
        change = Change(thresholds, recipients, remind, spec.enabled)
        if change.empty:
            self.problem(here, "nothing to change; give below, email, remind and/or enabled")
            return None
        return change
