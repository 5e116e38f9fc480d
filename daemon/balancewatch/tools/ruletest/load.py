"""Reading a test file: every problem at once as ``path:line: field: message``, else a plan to run.

Shapes are checked by the models; here what refers to what is checked:
accounts named by entries and expectations exist, amounts fit their
currency, the timeline moves forward, rule files and templates exist. The
result (``cases``) holds money in integer minor units and times as aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import ValidationError

from balancewatch.core import yamlfile
from balancewatch.core.money import MoneyError, to_minor
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.rules.validation import validation_problems
from balancewatch.store.accounts import AccountError, validate_account
from balancewatch.store.ledger import LedgerError, check_entry
from balancewatch.store.preferences import (
    Change,
    PreferenceError,
    parse_recipients,
    parse_remind,
    parse_thresholds,
)
from balancewatch.tools.ruletest.cases import (
    Case,
    Entry,
    Expectation,
    Opening,
    PreferenceWrite,
    Step,
    TestFile,
    Where,
    Write,
)
from balancewatch.tools.ruletest.models import (
    AccountSpec,
    BalanceSpec,
    CaseSpec,
    ExpectSpec,
    FileSpec,
    PostSpec,
    PreferenceSpec,
    PreferenceWriteSpec,
    StepSpec,
)

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
TEST_SUFFIXES = (".test.yaml", ".test.yml")
_GLOB = frozenset("*?[")

Loc = tuple[str | int, ...]


def find_test_files(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """The test files named by ``paths``: files as given, directories searched for ``*.test.yaml``.

    Returns the files (sorted per directory, without repeats) and a message for
    each path that does not exist or holds no test file.
    """
    found: dict[Path, None] = {}
    missing: list[str] = []
    for path in paths:
        if path.is_file():
            found[path] = None
        elif path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.name.endswith(TEST_SUFFIXES)
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not inside:
                missing.append(f"{path}: no *.test.yaml files in this directory")
            found.update(dict.fromkeys(inside))
        else:
            missing.append(f"{path}: no such file or directory")
    return list(found), missing


def load_test_file(path: Path) -> TestFile:
    """Read and check one test file; raises ProblemsError listing every problem in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProblemsError([Problem(str(path), 0, "", f"cannot read: {exc}")]) from None
    located = yamlfile.load(text, str(path))
    if not isinstance(located.data, dict):
        raise ProblemsError(
            [
                Problem(
                    str(path), 1, "", "a test file is a mapping with a 'tests:' list; see docs/rule-tests.md"
                )
            ]
        )
    return _Checker(path, located).run()


class _Checker:
    """Collects the problems of one file while building its plan."""

    def __init__(self, path: Path, located: yamlfile.Located) -> None:
        self.path, self.located = path, located
        self.base = path.parent
        self.problems: list[Problem] = []

    def run(self) -> TestFile:
        data = self.located.data
        try:
            top: FileSpec | None = FileSpec.model_validate(data)
        except ValidationError as exc:
            # Reported, and the tests are still checked: every problem in one pass.
            self.problems.extend(validation_problems(exc, self.located, FileSpec))
            top = None
        rule_files = self._rule_files(top.rule_files) if top and top.rule_files is not None else None
        templates = self._templates(top.templates) if top and top.templates is not None else None
        file_start = (top.start if top else None) or DEFAULT_START
        tests = data.get("tests") if isinstance(data.get("tests"), list) else []
        cases: list[Case] = []
        names: dict[str, int] = {}
        for i, item in enumerate(tests):
            try:
                spec = CaseSpec.model_validate(item)
            except ValidationError as exc:
                # Each test on its own, so one bad test does not hide the problems of the others.
                self.problems.extend(validation_problems(exc, self.located, CaseSpec, prefix=("tests", i)))
                continue
            if spec.name in names:
                self._problem(
                    ("tests", i, "name"), f"a test named {spec.name!r} is already on line {names[spec.name]}"
                )
            names.setdefault(spec.name, self.located.line_of(("tests", i, "name")))
            case = self._case(spec, ("tests", i), spec.start or file_start)
            if case is not None:
                cases.append(case)
        if self.problems:
            raise ProblemsError(self.problems)
        return TestFile(self.path, rule_files, templates, tuple(cases))

    # --- where things are ---------------------------------------------------------------------

    def where(self, loc: Loc) -> Where:
        return Where(str(self.path), self.located.line_of(loc), self.located.field_of(loc))

    def _problem(self, loc: Loc, message: str) -> None:
        w = self.where(loc)
        self.problems.append(Problem(w.path, w.line, w.field, message))

    # --- the top level ------------------------------------------------------------------------

    def _rule_files(self, entries: list[str]) -> tuple[Path, ...]:
        out: dict[Path, None] = {}
        for i, entry in enumerate(entries):
            target = self.base / entry
            if _GLOB & set(entry):
                matches = sorted(p for p in Path(target.anchor).glob(str(target.relative_to(target.anchor))))
                # A pattern such as *.yaml next to the tests must not pick up the tests themselves.
                files = [p for p in matches if p.is_file() and not p.name.endswith(TEST_SUFFIXES)]
                if not files:
                    self._problem(("rule_files", i), f"{entry!r} matches no file (relative to {self.base})")
                out.update(dict.fromkeys(files))
            elif target.is_file():
                out[target] = None
            else:
                self._problem(("rule_files", i), f"{entry!r}: no such file (relative to {self.base})")
        return tuple(out)

    def _templates(self, entry: str) -> Path:
        target = self.base / entry
        if not target.is_dir():
            self._problem(("templates",), f"{entry!r}: no such directory (relative to {self.base})")
        return target

    # --- one test -----------------------------------------------------------------------------

    def _case(self, spec: CaseSpec, at: Loc, start: datetime) -> Case | None:
        before = len(self.problems)
        accounts = self._accounts(spec.accounts, (*at, "accounts"))
        known = {a.spec.id: a for a in accounts}
        steps = []
        previous = start = start.astimezone(UTC)
        for k, step_spec in enumerate(spec.timeline):
            here = (*at, "timeline", k)
            when = (
                start + step_spec.at if isinstance(step_spec.at, timedelta) else step_spec.at.astimezone(UTC)
            )
            if when < previous:
                earlier = "the test's start" if k == 0 else "an earlier step"
                self._problem(
                    (*here, "at"),
                    f"{_iso(when)} is before {earlier} ({_iso(previous)}); the timeline runs forward",
                )
            previous = max(previous, when)
            step = self._step(step_spec, here, known, start, when)
            if step is not None:
                steps.append(step)
        if len(self.problems) > before:
            return None
        return Case(spec.name, self.where(at), start, tuple(accounts), tuple(steps))

    def _accounts(self, specs: list[AccountSpec], at: Loc) -> list[Opening]:
        out: dict[str, Opening] = {}
        for j, a in enumerate(specs):
            here = (*at, j)
            if a.id in out:
                self._problem((*here, "id"), f"account {a.id!r} is listed twice in this test")
                continue
            try:
                validate_account(a.id, a.name or a.id, a.email, a.billing, a.timezone, a.locale)
            except AccountError as exc:
                self._problem((*here, _account_field(str(exc))), str(exc))
            if a.parent is not None:
                self._parent(a, out, here)
            out[a.id] = self._opening(a, here, out)
        return list(out.values())

    def _opening(self, a: AccountSpec, here: Loc, above: dict[str, Opening]) -> Opening:
        """The account's opening balances, preferences and daily usage, values checked."""
        balances, preferences, usage = [], [], []
        for currency, amount in a.balances.items():
            minor = self._minor(amount, currency, (*here, "balances", currency))
            if minor is not None:
                balances.append((currency, minor))
        for currency, pref in a.preferences.items():
            change = self._change(pref, currency, (*here, "preferences", currency), opening=True)
            if change is not None:
                preferences.append((currency, change))
        payer = above.get(a.parent) if a.parent is not None else None
        held = payer.spec.balances if payer is not None else a.balances
        for currency, per_day in a.daily_usage.items():
            daily = self._daily_usage(per_day, currency, held, (*here, "daily_usage", currency))
            if daily is not None:
                usage.append(daily)
        return Opening(a, tuple(balances), tuple(preferences), tuple(usage))

    def _daily_usage(
        self, per_day: Any, currency: str, held: dict[str, Any], here: Loc
    ) -> tuple[str, int] | None:
        if currency not in held:
            self._problem(
                here,
                f"the paying account has no opening {currency} balance for this usage to draw on; "
                f"give it one, e.g. balances: {{{currency}: 100}}",
            )
            return None
        minor = self._minor(per_day, currency, here)
        if minor is not None and minor <= 0:
            self._problem(here, f"{per_day} is not above zero; write the amount used each day, e.g. 40")
            return None
        return None if minor is None else (currency, minor)

    def _change(self, spec: PreferenceSpec, currency: str, here: Loc, *, opening: bool) -> Change | None:
        """The preferences as a Change; for an opening row, what is left out takes its default
        (no thresholds, no extra recipients, no reminder, enabled)."""
        try:
            thresholds = None if spec.below is None else parse_thresholds(spec.below, currency)
            recipients = None if spec.email is None else parse_recipients(spec.email)
            remind = None if spec.remind is None else parse_remind(spec.remind)
        except PreferenceError as exc:
            self._problem((*here, exc.field), exc.message)
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
            self._problem(here, "nothing to change; give below, email, remind and/or enabled")
            return None
        return change

    def _parent(self, a: AccountSpec, above: dict[str, Opening], here: Loc) -> None:
        parent = above.get(a.parent or "")
        if parent is None:
            self._problem(
                (*here, "parent"),
                f"no account {a.parent!r} above this one; list the main account before its subaccounts",
            )
        elif parent.spec.parent is not None:
            self._problem((*here, "parent"), f"{a.parent!r} is itself a subaccount; name its main account")
        if a.balances:
            self._problem(
                (*here, "balances"),
                f"a subaccount draws on its main account's balance; give the balances to {a.parent!r}",
            )
        if a.preferences:
            self._problem(
                (*here, "preferences"),
                f"a subaccount draws on its main account's balance; give the preferences to {a.parent!r}",
            )

    def _step(
        self, spec: StepSpec, here: Loc, known: dict[str, Opening], start: datetime, when: datetime
    ) -> Step | None:
        before = len(self.problems)
        posts = [self._post(p, (*here, "post", n), known) for n, p in enumerate(spec.post)]
        writes = [self._write(w, (*here, "set_balance", n), known) for n, w in enumerate(spec.set_balance)]
        prefs = [
            self._preferences(p, (*here, "set_preferences", n), known)
            for n, p in enumerate(spec.set_preferences)
        ]
        expect = None
        if spec.expect is not None:
            expect = tuple(self._expect(e, (*here, "expect", m), known) for m, e in enumerate(spec.expect))
        if len(self.problems) > before:
            return None
        return Step(
            self.where(here),
            when,
            when - start,
            tuple(p for p in posts if p is not None),
            tuple(w for w in writes if w is not None),
            expect,
            tuple(p for p in prefs if p is not None),
        )

    def _post(self, spec: PostSpec, here: Loc, known: dict[str, Opening]) -> Entry | None:
        payer = self._payer(spec.account, (*here, "account"), known)
        if payer is None:
            return None
        currency = spec.currency or self._only_currency(payer, spec.account, here)
        if currency is None:
            return None
        amount = self._minor(spec.amount, currency, (*here, "amount"))
        if amount is None:
            return None
        kind = spec.kind or ("top-up" if amount > 0 else "usage")
        try:
            check_entry(amount, kind, currency, spec.quantity)
        except LedgerError as exc:
            self._problem((*here, exc.field), exc.message)
            return None
        return Entry(spec.account, currency, amount, kind, spec.service, spec.quantity, spec.reference)

    def _main_currency(
        self, account_id: str, currency: str | None, here: Loc, known: dict[str, Opening], why: str
    ) -> str | None:
        """The currency of a step that writes a main account's balance or preferences; None,
        with the problem reported, for an unknown account, a subaccount (``why`` says what it
        lacks and what to set instead) or a currency that cannot be told."""
        account = known.get(account_id)
        if account is None:
            self._unknown_account(account_id, (*here, "account"), known)
            return None
        if account.spec.parent is not None:
            parent = account.spec.parent
            self._problem(
                (*here, "account"), f"{account_id!r} is a subaccount and {why.format(parent=parent)}"
            )
            return None
        return currency or self._only_currency(account, account_id, here)

    def _write(self, spec: BalanceSpec, here: Loc, known: dict[str, Opening]) -> Write | None:
        why = "has no balance of its own; set the balance of {parent!r}"
        currency = self._main_currency(spec.account, spec.currency, here, known, why)
        if currency is None:
            return None
        amount = self._minor(spec.amount, currency, (*here, "amount"))
        return None if amount is None else Write(spec.account, currency, amount)

    def _preferences(
        self, spec: PreferenceWriteSpec, here: Loc, known: dict[str, Opening]
    ) -> PreferenceWrite | None:
        why = "draws on {parent!r}'s balance; set the preferences of {parent!r}"
        currency = self._main_currency(spec.account, spec.currency, here, known, why)
        if currency is None:
            return None
        change = self._change(spec, currency, here, opening=False)
        return None if change is None else PreferenceWrite(spec.account, currency, change)

    def _expect(self, spec: ExpectSpec, here: Loc, known: dict[str, Opening]) -> Expectation:
        if spec.account is not None and spec.account not in known:
            self._unknown_account(spec.account, (*here, "account"), known)
        if spec.step is not None and spec.currency is not None:
            self._minor(spec.step, spec.currency, (*here, "step"))
        to = None
        if spec.to is not None:
            normalized = []
            for n, address in enumerate(spec.to):
                try:
                    normalized.append(validate_email(address, check_deliverability=False).normalized)
                except EmailNotValidError as exc:
                    self._problem((*here, "to", n), f"{address!r} is not a valid email address: {exc}")
            to = frozenset(normalized)
        return Expectation(self.where(here), spec, to)

    # --- small checks -------------------------------------------------------------------------

    def _payer(self, account_id: str, here: Loc, known: dict[str, Opening]) -> Opening | None:
        account = known.get(account_id)
        if account is None:
            self._unknown_account(account_id, here, known)
            return None
        return known.get(account.spec.parent or "", account)

    def _unknown_account(self, account_id: str, here: Loc, known: dict[str, Opening]) -> None:
        have = ", ".join(known) or "none"
        self._problem(here, f"no account {account_id!r} in this test's accounts (have: {have})")

    def _only_currency(self, payer: Opening, account_id: str, here: Loc) -> str | None:
        currencies = list(payer.spec.balances)
        if len(currencies) == 1:
            return currencies[0]
        whose = (
            f"{payer.spec.id!r} (which pays for {account_id!r})"
            if payer.spec.id != account_id
            else (f"{account_id!r}")
        )
        held = f"holds {' and '.join(currencies)}" if currencies else "has no opening balance"
        self._problem((*here, "currency"), f"{whose} {held}; write the currency, e.g. currency: USD")
        return None

    def _minor(self, amount: Any, currency: str, here: Loc) -> int | None:
        try:
            return to_minor(amount, currency)
        except MoneyError as exc:
            self._problem(here, str(exc))
            return None


def _account_field(message: str) -> str:
    """The field of a test account that an AccountError message is about."""
    for prefix, name in (
        ("owner email", "email"),
        ("id", "id"),
        ("name", "name"),
        ("billing", "billing"),
        ("timezone", "timezone"),
        ("locale", "locale"),
    ):
        if message.startswith(prefix):
            return name
    return "id"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
