"""The outbox commands: what was decided, to whom it went, and how each recipient fared."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import desc, or_, select
from sqlmodel import Session

from balancewatch.cli.common import CommandError, Ctx, table
from balancewatch.deliver.outcome import shown
from balancewatch.outbox import PENDING
from balancewatch.store.tables import Outbox

STATUSES = ["pending", "sending", "sent", "parked"]


def register(commands: Any) -> None:
    box = commands.add_parser("outbox", help="what was sent to whom, and how delivery went")
    ocmds = box.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    lst = ocmds.add_parser(
        "list",
        help="newest first",
        description="One line per message; each recipient is followed by its state when the "
        "recipients fared differently (sent, pending: to be tried again, parked: refused for good).",
    )
    lst.add_argument("--status", choices=STATUSES)
    lst.add_argument("--account")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=cmd_outbox_list)
    show = ocmds.add_parser("show", help="one message: every field, and each recipient's delivery")
    show.add_argument("message", metavar="ID|KEY", help="the row's id (outbox list) or its idempotency key")
    show.add_argument("--body", action="store_true", help="print the plain-text part too")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_outbox_show)


def recipient_states(row: Outbox) -> list[tuple[str, str]]:
    """Each recipient with its state: ``sent``, ``parked``, ``pending`` (tried, to be tried
    again), or ``waiting`` (not tried yet)."""
    deliveries: Mapping[str, Mapping[str, Any]] = row.deliveries or {}
    return [
        (address, str(deliveries.get(address, {}).get("status", "waiting"))) for address in row.recipients
    ]


def _to(row: Outbox) -> str:
    states = recipient_states(row)
    if len({state for _, state in states}) <= 1:
        return ", ".join(shown(address) for address, _ in states)
    return ", ".join(f"{shown(address)} ({state})" for address, state in states)


def cmd_outbox_list(ctx: Ctx) -> int:
    a = ctx.args
    query = select(Outbox).order_by(desc(Outbox.id)).limit(a.limit)
    if a.status:
        query = query.where(Outbox.status == a.status)
    if a.account:
        query = query.where(Outbox.account_id == a.account)
    with Session(ctx.engine) as session:
        rows = list(session.exec(query).scalars())  # type: ignore[call-overload]
    if a.json:
        ctx.emit_json([r.model_dump(mode="json", exclude={"text", "html"}) for r in rows])
        return 0
    ctx.say(
        table(
            [
                [
                    str(r.id),
                    r.created_at.strftime("%Y-%m-%d %H:%M"),
                    r.status,
                    str(r.attempts),
                    _to(r),
                    r.subject[:60],
                    (r.last_error or "")[:80],
                ]
                for r in rows
            ],
            ["id", "decided (UTC)", "status", "tries", "to", "subject", "last error"],
        )
    )
    return 0


def _find(session: Session, ref: str) -> Outbox:
    where = Outbox.idem_key == ref  # type: ignore[arg-type]
    if ref.isdigit() and len(ref) < 19:  # a row id fits in 64 bits; a longer number is a key, if anything
        where = or_(where, Outbox.id == int(ref))  # type: ignore[arg-type]
    row = session.exec(select(Outbox).where(where)).scalars().first()  # type: ignore[call-overload]
    if row is None:
        raise CommandError(f"no outbox row {ref!r}; `balancewatch outbox list` shows their ids and keys")
    return row  # type: ignore[no-any-return]


def cmd_outbox_show(ctx: Ctx) -> int:
    with Session(ctx.engine) as session:
        row = _find(session, ctx.args.message)
    if ctx.args.json:
        ctx.emit_json(row.model_dump(mode="json", exclude=set() if ctx.args.body else {"text", "html"}))
        return 0

    def when(value: Any) -> str:
        return value.isoformat() if value is not None else "-"

    fields = [
        ("id", str(row.id)),
        ("key", row.idem_key),
        ("message-id", row.message_id),
        ("kind", row.kind),
        ("rule", row.rule_id or "-"),
        ("account", f"{row.account_id} {row.currency}" if row.account_id else "-"),
        ("status", row.status),
        ("attempts", str(row.attempts)),
        ("decided", when(row.created_at)),
        ("next attempt", when(row.next_attempt_at) if row.status == PENDING else "-"),
        ("sent", when(row.sent_at)),
        ("claimed by", f"{row.claimed_by} until {when(row.lease_until)}" if row.status == "sending" else "-"),
        ("last error", row.last_error or "-"),
        ("subject", row.subject),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        ctx.say(f"{name.ljust(width)}  {value}")
    ctx.say()
    deliveries: Mapping[str, Mapping[str, Any]] = row.deliveries or {}
    ctx.say(
        table(
            [
                [
                    shown(address),
                    state,
                    str(deliveries.get(address, {}).get("attempts", 0)),
                    str(deliveries.get(address, {}).get("at") or "-"),
                    str(deliveries.get(address, {}).get("error") or ""),
                ]
                for address, state in recipient_states(row)
            ],
            ["recipient", "state", "tries", "last try (UTC)", "error"],
        )
    )
    if ctx.args.body:
        ctx.say()
        ctx.say(row.text.rstrip())
    return 0
