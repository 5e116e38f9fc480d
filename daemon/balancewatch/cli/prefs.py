"""``balancewatch prefs``: show or set an owner's own alert settings (owner preferences).

``prefs ACCOUNT`` alone shows them for every currency. Any of ``--below``,
``--email``, ``--remind``, ``--enable`` or ``--disable`` changes the row of one
currency (``--currency``, default: the only one the account holds) and leaves
the other values as they are. ``--below ''`` (or ``none``) clears the
thresholds, ``--email ''`` (or ``none``) the extra recipients.
"""

from __future__ import annotations

import argparse
from typing import Any

from sqlmodel import Session

from balancewatch.cli.common import CommandError, Ctx, table
from balancewatch.core.money import MoneyError, check_currency, format_money, to_major
from balancewatch.store.platform_data import account_locale
from balancewatch.store.preferences import (
    Change,
    PreferenceError,
    default_currency,
    parse_recipients,
    parse_remind,
    parse_thresholds,
    preferences_of,
    set_preferences,
)
from balancewatch.store.tables import Account, OwnerPreference

DESCRIPTION = """\
Show or set an owner's own alert settings, per currency: up to three
thresholds, extra recipients, a daily reminder while the balance stays below
a threshold, and whether they are used at all. Disabling keeps every value;
enabling again restores them unchanged.

  balancewatch prefs acme                                  show them
  balancewatch prefs acme --below 500,100 --email cfo@acme.example,ops@acme.example
  balancewatch prefs acme --currency INR --below 20000 --remind 24h
  balancewatch prefs acme --below none                     clear the thresholds
  balancewatch prefs acme --disable                        keep them, stop using them

Amounts are in major units of the currency. Rules use them through
`below: owner`, `notify: [preferences]` and `unless: owner-configured`
(see docs/usage-alerts.md).
"""

_OPTIONS = {
    "below": "--below",
    "email": "--email",
    "remind": "--remind",
    "currency": "--currency",
    "account": "ACCOUNT",
}


def register(commands: Any) -> None:
    prefs = commands.add_parser(
        "prefs",
        help="show or set an owner's own thresholds, recipients and reminder",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prefs.add_argument("account", metavar="ACCOUNT")
    prefs.add_argument("--currency", help="the currency to set (default: the only one the account holds)")
    prefs.add_argument(
        "--below",
        metavar="AMOUNTS",
        help="up to three thresholds in major units, comma-separated: 500,100 ('' or none: clear them)",
    )
    prefs.add_argument(
        "--email",
        metavar="ADDRESSES",
        help="extra recipients besides the owner, comma-separated ('' or none: clear them)",
    )
    prefs.add_argument("--remind", metavar="24h|off", help="a daily reminder while below a threshold")
    switch = prefs.add_mutually_exclusive_group()
    switch.add_argument("--enable", dest="enabled", action="store_const", const=True, help="use them again")
    switch.add_argument(
        "--disable",
        dest="enabled",
        action="store_const",
        const=False,
        help="stop using them, keeping every value",
    )
    prefs.add_argument("--json", action="store_true", help="print the preferences as JSON")
    prefs.set_defaults(handler=cmd_prefs)


def cmd_prefs(ctx: Ctx) -> int:
    a = ctx.args
    if a.currency is not None:
        try:
            check_currency(a.currency)
        except MoneyError as exc:
            raise CommandError(f"--currency: {exc}") from None
    changing = any(v is not None for v in (a.below, a.email, a.remind, a.enabled))
    currency = a.currency
    try:
        with Session(ctx.engine if changing else ctx.read_engine) as session:
            if changing:
                currency = currency or default_currency(session, a.account)
                change = Change(
                    thresholds=None if a.below is None else parse_thresholds(a.below, currency),
                    recipients=None if a.email is None else parse_recipients(a.email),
                    remind=None if a.remind is None else parse_remind(a.remind),
                    enabled=a.enabled,
                )
                set_preferences(session, a.account, currency, change, ctx.now())
                session.commit()
            account, rows = preferences_of(session, a.account)
    except PreferenceError as exc:
        option = _OPTIONS.get(exc.field)
        if exc.field == "enabled":
            option = "--enable" if a.enabled else "--disable"
        raise CommandError(f"{option or exc.field}: {exc.message}") from None
    if a.currency:
        rows = [r for r in rows if r.currency == a.currency]
    locale = account_locale(account.locale, ctx.settings.defaults.locale, account.id)
    if a.json:
        ctx.emit_json(_as_json(account, rows))
        return 0
    if changing:
        ctx.say(f"saved {account.id} {currency} preferences")
    _show(ctx, account, rows, locale, a.currency)
    return 0


def _as_json(account: Account, rows: list[OwnerPreference]) -> dict[str, Any]:
    return {
        "account": account.id,
        "name": account.name,
        "owner_email": account.owner_email,
        "preferences": [
            {
                "currency": r.currency,
                "enabled": r.enabled,
                "thresholds": [str(to_major(t, r.currency)) for t in r.thresholds],
                "thresholds_minor": r.thresholds,
                "recipients": list(r.recipients),
                "remind": "24h" if r.remind else "off",
                "updated_at": r.updated_at.isoformat(),
            }
            for r in rows
        ],
    }


def _show(ctx: Ctx, account: Account, rows: list[OwnerPreference], locale: str, currency: str | None) -> None:
    ctx.say(f"{account.id} ({account.name}), owner {account.owner_email}")
    if not rows:
        which = f"no {currency} preferences" if currency else "no preferences"
        option = f" --currency {currency}" if currency else ""
        ctx.say(f"{which} of its own: the default alerts apply")
        ctx.say(f"set some with: balancewatch prefs {account.id}{option} --below 500,100")
        return
    lines = [
        [
            r.currency,
            "enabled" if r.enabled else "disabled",
            ", ".join(format_money(t, r.currency, locale) for t in r.thresholds) or "none",
            "daily" if r.remind else "off",
            ", ".join(r.recipients) or "-",
        ]
        for r in rows
    ]
    ctx.say(table(lines, ["currency", "status", "thresholds", "reminder", "also to"]))
    if any(not r.enabled for r in rows):
        ctx.say("disabled preferences are kept but not used; --enable restores them unchanged")
