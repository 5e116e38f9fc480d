"""A test's accounts: ids unique, values valid, subaccounts under a main account listed above
them, opening balances, preferences and daily usage in minor units."""

from __future__ import annotations

from typing import Any

from balancewatch.store.accounts import AccountError, validate_account
from balancewatch.tools.ruletest.cases import Opening
from balancewatch.tools.ruletest.checking import Collector, Loc
from balancewatch.tools.ruletest.models import AccountSpec


def check_accounts(check: Collector, specs: list[AccountSpec], at: Loc) -> list[Opening]:
    """The accounts of one test in their order, each with its opening values; problems go to ``check``."""
    out: dict[str, Opening] = {}
    for j, a in enumerate(specs):
        here = (*at, j)
        if a.id in out:
            check.problem((*here, "id"), f"account {a.id!r} is listed twice in this test")
            continue
        try:
            validate_account(a.id, a.name or a.id, a.email, a.billing, a.timezone, a.locale)
        except AccountError as exc:
            check.problem((*here, _account_field(str(exc))), str(exc))
        if a.parent is not None:
            _check_parent(check, a, out, here)
        out[a.id] = _opening(check, a, here, out)
    return list(out.values())


def _opening(check: Collector, a: AccountSpec, here: Loc, above: dict[str, Opening]) -> Opening:
    """The account's opening balances, preferences and daily usage, values checked."""
    balances, preferences, usage = [], [], []
    for currency, amount in a.balances.items():
        minor = check.minor(amount, currency, (*here, "balances", currency))
        if minor is not None:
            balances.append((currency, minor))
    for currency, pref in a.preferences.items():
        change = check.change(pref, currency, (*here, "preferences", currency), opening=True)
        if change is not None:
            preferences.append((currency, change))
    payer = above.get(a.parent) if a.parent is not None else None
    held = payer.spec.balances if payer is not None else a.balances
    for currency, per_day in a.daily_usage.items():
        daily = _daily_usage(check, per_day, currency, held, (*here, "daily_usage", currency))
        if daily is not None:
            usage.append(daily)
    return Opening(a, tuple(balances), tuple(preferences), tuple(usage))


def _daily_usage(
    check: Collector, per_day: Any, currency: str, held: dict[str, Any], here: Loc
) -> tuple[str, int] | None:
    if currency not in held:
        check.problem(
            here,
            f"the paying account has no opening {currency} balance for this usage to draw on; "
            f"give it one, e.g. balances: {{{currency}: 100}}",
        )
        return None
    minor = check.minor(per_day, currency, here)
    if minor is not None and minor <= 0:
        check.problem(here, f"{per_day} is not above zero; write the amount used each day, e.g. 40")
        return None
    return None if minor is None else (currency, minor)


def _check_parent(check: Collector, a: AccountSpec, above: dict[str, Opening], here: Loc) -> None:
    parent = above.get(a.parent or "")
    if parent is None:
        check.problem(
            (*here, "parent"),
            f"no account {a.parent!r} above this one; list the main account before its subaccounts",
        )
    elif parent.spec.parent is not None:
        check.problem((*here, "parent"), f"{a.parent!r} is itself a subaccount; name its main account")
    for field in ("balances", "preferences"):
        if getattr(a, field):
            check.problem(
                (*here, field),
                f"a subaccount draws on its main account's balance; give the {field} to {a.parent!r}",
            )


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
