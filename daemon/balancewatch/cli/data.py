"""Data commands: accounts, ledger entries, balances."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import desc
from sqlmodel import Session, col, select

from balancewatch.cli.common import CommandError, Ctx, report_problems, table
from balancewatch.core import progress
from balancewatch.core.money import MoneyError, check_currency, format_money, to_major, to_minor
from balancewatch.core.problems import ProblemsError
from balancewatch.core.progress import Progress
from balancewatch.core.times import parse_instant
from balancewatch.store import importcsv, ledger
from balancewatch.store.accounts import AccountError, add_account, list_accounts
from balancewatch.store.platform_data import account_locale
from balancewatch.store.tables import Account, Balance, LedgerEntry


def register(commands: Any) -> None:
    _register_accounts(commands)
    _register_ledger(commands)
    balance = commands.add_parser("balance", help="balances")
    bcmds = balance.add_subparsers(dest="balance_command", metavar="ACTION", required=True)
    show = bcmds.add_parser("show", help="an account's balances and its latest ledger entries")
    show.add_argument("account")
    show.add_argument(
        "--entries", type=int, default=10, help="how many recent entries (default: %(default)s)"
    )
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_balance_show)


def _register_accounts(commands: Any) -> None:
    accounts = commands.add_parser("accounts", help="add and list accounts")
    acmds = accounts.add_subparsers(dest="accounts_command", metavar="ACTION", required=True)
    add = acmds.add_parser("add", help="add an account")
    add.add_argument("id")
    add.add_argument("--name", required=True)
    add.add_argument("--email", required=True, help="the owner's address")
    add.add_argument("--billing", choices=["prepaid", "postpaid"], default="prepaid")
    add.add_argument("--timezone", help="IANA zone, e.g. Asia/Kolkata (default: the configured one)")
    add.add_argument("--locale", help="e.g. en_IN (default: the configured one)")
    add.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    add.add_argument("--parent", help="main account whose balance this subaccount draws on")
    add.set_defaults(handler=cmd_accounts_add)
    lst = acmds.add_parser("list", help="list accounts")
    lst.add_argument("--limit", type=int, default=1000)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=cmd_accounts_list)


def _register_ledger(commands: Any) -> None:
    led = commands.add_parser("ledger", help="post and import ledger entries")
    lcmds = led.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    post = lcmds.add_parser(
        "post",
        help="post one entry; the balance moves in the same transaction",
        description="AMOUNT is in major units and signed: -12.50 is a debit.",
    )
    post.add_argument("account")
    post.add_argument("amount", help="signed, in major units: -12.50 debits, 100 credits")
    post.add_argument("--currency", default="USD")
    post.add_argument(
        "--kind", choices=list(ledger.KINDS), help="default: usage for debits, top-up for credits"
    )
    post.add_argument("--service", help="sms, voice, ...")
    post.add_argument("--quantity", type=int, help="units used, e.g. messages")
    post.add_argument("--at", help="ISO 8601 time of the entry (default: now)")
    post.add_argument(
        "--reference",
        help="unique per account: posting it again with the same amount, currency and kind "
        "posts nothing and exits 0; with others it is refused",
    )
    post.set_defaults(handler=cmd_ledger_post)
    imp = lcmds.add_parser(
        "import",
        help="import a ledger CSV (re-importing skips known references)",
        description="Columns: account, amount (required); currency, kind, service, "
        "quantity, time, reference (optional). Every row is checked "
        "before any is posted.",
    )
    imp.add_argument("file", type=Path)
    imp.add_argument("--currency", default="USD", help="for rows without a currency column")
    imp.add_argument(
        "-q", "--quiet", action="store_true", help="no progress line on a terminal (there is none elsewhere)"
    )
    imp.set_defaults(handler=cmd_ledger_import)


def _labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--label {pair!r}: write KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def cmd_accounts_add(ctx: Ctx) -> int:
    a = ctx.args
    with Session(ctx.engine) as session:
        try:
            account = add_account(
                session,
                a.id,
                a.name,
                a.email,
                billing=a.billing,
                timezone=a.timezone,
                locale=a.locale,
                labels=_labels(a.label),
                parent_id=a.parent,
            )
        except AccountError as exc:
            raise CommandError(str(exc)) from None
        session.commit()
        ctx.say(f"added {account.id} ({account.billing}, owner {account.owner_email})")
    return 0


def cmd_accounts_list(ctx: Ctx) -> int:
    with Session(ctx.read_engine) as session:
        accounts = list_accounts(session, ctx.args.limit)
    if ctx.args.json:
        ctx.emit_json([a.model_dump(mode="json") for a in accounts])
        return 0
    rows = [
        [a.id, a.name, a.owner_email, a.billing, a.parent_id or "", "" if a.enabled else "disabled"]
        for a in accounts
    ]
    ctx.say(table(rows, ["id", "name", "owner", "billing", "parent", ""]))
    return 0


def _parse_time(text: str | None, now: datetime) -> datetime:
    if not text:
        return now
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise CommandError(f"--at: {exc}") from None


def cmd_ledger_post(ctx: Ctx) -> int:
    a = ctx.args
    now = ctx.now()
    try:
        check_currency(a.currency)
    except MoneyError as exc:
        raise CommandError(f"--currency: {exc}") from None
    try:
        amount = to_minor(a.amount, a.currency)
    except MoneyError as exc:
        raise CommandError(f"amount: {exc}") from None
    kind = a.kind or ("usage" if amount < 0 else "top-up")
    occurred_at = _parse_time(a.at, now)
    with Session(ctx.engine) as session:
        try:
            posted = ledger.post(
                session,
                a.account,
                a.currency,
                amount,
                kind,
                occurred_at=occurred_at,
                now=now,
                service=a.service,
                quantity=a.quantity,
                reference=a.reference,
            )
        except ledger.AlreadyPostedError as exc:
            return _already_posted(ctx, session, exc, a.currency, amount, kind)
        except (ledger.LedgerError, MoneyError) as exc:
            raise CommandError(str(exc)) from None
        # Said before the commit: once the money is in, nothing may fail, or a caller that
        # retries on failure would post it twice.
        locale = _locale(session, posted.payer_id, ctx)
        line = (
            f"posted #{posted.entry_id}: {kind} {format_money(amount, a.currency, locale)}; "
            f"{posted.payer_id} balance {format_money(posted.balance_after, a.currency, locale)}"
        )
        session.commit()
    ctx.say(line)
    return 0


def _already_posted(
    ctx: Ctx, session: Session, exc: ledger.AlreadyPostedError, currency: str, amount: int, kind: str
) -> int:
    """A reference posted before: the same entry again is done (0), other details are refused (1)."""
    known = exc.entry
    payer = ledger.payer_of(session, known.account_id)
    locale = _locale(session, payer, ctx)
    entry = f"{known.kind} {format_money(known.amount, known.currency, locale)}"
    if not known.same(currency, amount, kind):
        raise CommandError(
            f"reference: {exc.reference!r} is already used by entry #{known.entry_id} of "
            f"{known.account_id} ({entry}); nothing posted"
        )
    balance = session.get(Balance, (payer, known.currency))
    shown = format_money(balance.amount if balance else 0, known.currency, locale)
    ctx.say(
        f"already posted #{known.entry_id} (reference {exc.reference!r}): {entry}; {payer} balance {shown}"
    )
    return 0


def cmd_ledger_import(ctx: Ctx) -> int:
    now = ctx.now()
    try:
        check_currency(ctx.args.currency)
    except MoneyError as exc:
        raise CommandError(f"--currency: {exc}") from None
    with Session(ctx.engine) as session, ImportProgress(ctx.err, ctx.args.file.name, ctx.args.quiet) as shown:
        try:
            result = importcsv.import_file(session, ctx.args.file, ctx.args.currency, now, shown)
        except ProblemsError as exc:
            shown.close(finished=False)
            return report_problems(ctx, exc, "ledger import: nothing imported")
    ctx.say(f"imported {result.posted} entries; skipped {result.skipped} already in the ledger")
    return 0


class ImportProgress:
    """The import's progress on a terminal: bytes of the file checked, then rows posted, each on a
    line of its own (see ``balancewatch.core.progress``); nothing when ``stream`` is not a terminal."""

    def __init__(self, stream: TextIO, name: str, quiet: bool) -> None:
        self.stream, self.name, self.quiet = stream, name, quiet
        self.phase = ""
        self.current: Progress | None = None

    def __enter__(self) -> ImportProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.close(finished=kind is None)

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase:
            self.close(finished=True)
            self.phase, self.current = phase, self._start(phase, total)
        if self.current is not None:
            self.current.update(done)

    def close(self, finished: bool) -> None:
        """End the current line: with its summary when ``finished``, else erased."""
        if self.current is None:
            return
        if finished:
            self.current.finish()
        else:
            self.current.abandon()
        self.current = None

    def _start(self, phase: str, total: int) -> Progress:
        if phase == importcsv.CHECKING:
            shown = Progress(
                f"checking {self.name}", total, stream=self.stream, quiet=self.quiet, fmt=progress.size
            )
        else:
            shown = Progress("importing", total, stream=self.stream, quiet=self.quiet, noun="rows")
        return shown.start()


def _locale(session: Session, account_id: str, ctx: Ctx) -> str:
    """The account's locale as Babel names it, else the configured one (see platform_data)."""
    account = session.get(Account, account_id)
    default = ctx.settings.defaults.locale
    return account_locale(account.locale, default, account.id) if account else default


def _balances_json(
    account_id: str, payer: str, balances: list[Balance], entries: list[LedgerEntry]
) -> dict[str, Any]:
    """What ``balance show --json`` prints: amounts in minor units and as exact decimal text."""
    return {
        "account": account_id,
        "paid_by": payer,
        "balances": [
            {
                "currency": b.currency,
                "amount_minor": b.amount,
                "amount": str(to_major(b.amount, b.currency)),
                "updated_at": b.updated_at.isoformat(),
            }
            for b in balances
        ],
        "entries": [e.model_dump(mode="json") for e in entries],
    }


def cmd_balance_show(ctx: Ctx) -> int:
    a = ctx.args
    with Session(ctx.read_engine) as session:
        account = session.get(Account, a.account)
        if account is None:
            raise CommandError(f"no account {a.account!r}")
        payer = account.parent_id or account.id
        balances = list(session.exec(select(Balance).where(col(Balance.account_id) == payer)))
        entries = list(
            session.exec(
                select(LedgerEntry)
                .where(col(LedgerEntry.account_id) == a.account)
                .order_by(desc(col(LedgerEntry.occurred_at)), desc(col(LedgerEntry.id)))
                .limit(a.entries)
            )
        )
    locale = account_locale(account.locale, ctx.settings.defaults.locale, account.id)
    if a.json:
        ctx.emit_json(_balances_json(account.id, payer, balances, entries))
        return 0
    if payer != account.id:
        ctx.say(f"{account.id} is a subaccount: it draws on {payer}'s balance")
    ctx.say(
        table(
            [
                [b.currency, format_money(b.amount, b.currency, locale), b.updated_at.isoformat()]
                for b in balances
            ],
            ["currency", "balance", "updated"],
        )
    )
    if entries:
        ctx.say()
        ctx.say(
            table(
                [
                    [
                        e.occurred_at.isoformat(),
                        e.kind,
                        format_money(e.amount, e.currency, locale),
                        e.service or "",
                        str(e.quantity or ""),
                        e.reference or "",
                    ]
                    for e in entries
                ],
                ["time", "kind", "amount", "service", "quantity", "reference"],
            )
        )
    return 0
