"""A timeline step: the ledger entries it posts, the balances and preferences it writes, the
notifications it expects, each naming an account of the test and amounts in its currency."""

from __future__ import annotations

from datetime import datetime

from email_validator import EmailNotValidError, validate_email

from balancewatch.store.ledger import LedgerError, check_entry
from balancewatch.tools.ruletest.cases import Entry, Expectation, PreferenceWrite, Step, Write
from balancewatch.tools.ruletest.checking import Collector, Known, Loc
from balancewatch.tools.ruletest.models import (
    BalanceSpec,
    ExpectSpec,
    PostSpec,
    PreferenceWriteSpec,
    StepSpec,
)


def check_step(
    check: Collector, spec: StepSpec, here: Loc, known: Known, start: datetime, when: datetime
) -> Step | None:
    """The step at ``when`` (``start`` is the test's), or None with its problems in ``check``."""
    before = len(check.problems)
    posts = [_post(check, p, (*here, "post", n), known) for n, p in enumerate(spec.post)]
    writes = [_write(check, w, (*here, "set_balance", n), known) for n, w in enumerate(spec.set_balance)]
    prefs = [
        _preferences(check, p, (*here, "set_preferences", n), known)
        for n, p in enumerate(spec.set_preferences)
    ]
    expect = None
    if spec.expect is not None:
        expect = tuple(_expect(check, e, (*here, "expect", m), known) for m, e in enumerate(spec.expect))
    if len(check.problems) > before:
        return None
    return Step(
        check.where(here),
        when,
        when - start,
        tuple(p for p in posts if p is not None),
        tuple(w for w in writes if w is not None),
        expect,
        tuple(p for p in prefs if p is not None),
    )


def _post(check: Collector, spec: PostSpec, here: Loc, known: Known) -> Entry | None:
    payer = check.payer(spec.account, (*here, "account"), known)
    if payer is None:
        return None
    currency = spec.currency or check.only_currency(payer, spec.account, here)
    if currency is None:
        return None
    amount = check.minor(spec.amount, currency, (*here, "amount"))
    if amount is None:
        return None
    kind = spec.kind or ("top-up" if amount > 0 else "usage")
    try:
        check_entry(amount, kind, currency, spec.quantity)
    except LedgerError as exc:
        check.problem((*here, exc.field), exc.message)
        return None
    return Entry(spec.account, currency, amount, kind, spec.service, spec.quantity, spec.reference)


def _main_currency(
    check: Collector, account_id: str, currency: str | None, here: Loc, known: Known, why: str
) -> str | None:
    """The currency of a step that writes a main account's balance or preferences; None,
    with the problem reported, for an unknown account, a subaccount (``why`` says what it
    lacks and what to set instead) or a currency that cannot be told."""
    account = known.get(account_id)
    if account is None:
        check.unknown_account(account_id, (*here, "account"), known)
        return None
    if account.spec.parent is not None:
        parent = account.spec.parent
        check.problem((*here, "account"), f"{account_id!r} is a subaccount and {why.format(parent=parent)}")
        return None
    return currency or check.only_currency(account, account_id, here)


def _write(check: Collector, spec: BalanceSpec, here: Loc, known: Known) -> Write | None:
    why = "has no balance of its own; set the balance of {parent!r}"
    currency = _main_currency(check, spec.account, spec.currency, here, known, why)
    if currency is None:
        return None
    amount = check.minor(spec.amount, currency, (*here, "amount"))
    return None if amount is None else Write(spec.account, currency, amount)


def _preferences(
    check: Collector, spec: PreferenceWriteSpec, here: Loc, known: Known
) -> PreferenceWrite | None:
    why = "draws on {parent!r}'s balance; set the preferences of {parent!r}"
    currency = _main_currency(check, spec.account, spec.currency, here, known, why)
    if currency is None:
        return None
    change = check.change(spec, currency, here, opening=False)
    return None if change is None else PreferenceWrite(spec.account, currency, change)


def _expect(check: Collector, spec: ExpectSpec, here: Loc, known: Known) -> Expectation:
    if spec.account is not None and spec.account not in known:
        check.unknown_account(spec.account, (*here, "account"), known)
    if spec.step is not None and spec.currency is not None:
        check.minor(spec.step, spec.currency, (*here, "step"))
    to = None
    if spec.to is not None:
        normalized = []
        for n, address in enumerate(spec.to):
            try:
                normalized.append(validate_email(address, check_deliverability=False).normalized)
            except EmailNotValidError as exc:
                check.problem((*here, "to", n), f"{address!r} is not a valid email address: {exc}")
        to = frozenset(normalized)
    return Expectation(check.where(here), spec, to)
