"""The outbox commands: what was decided, to whom it went, how each recipient fared, and putting
parked recipients back in line once the cause is fixed."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, col, select

from balancewatch import outbox
from balancewatch.cli.common import CommandError, Ctx, table
from balancewatch.core.durations import parse_duration
from balancewatch.core.times import EXAMPLE, parse_instant
from balancewatch.deliver.outcome import shown
from balancewatch.outbox import PARKED, PENDING, QUEUED, SENDING, SENT
from balancewatch.store.tables import Outbox

STATUSES = [QUEUED, PENDING, SENDING, SENT, PARKED]

RETRY_DESCRIPTION = """\
Put parked messages back in line, once the cause (a full mailbox, a mistyped
address now fixed at the server, a relay that refused) is dealt with. In each
message only the recipients that were parked go again, as if never tried: their
tries start from zero and they are due at once; recipients that have the
message are not sent it again. The running daemon (or `run --once`) delivers
them. Only parked messages are changed, in one transaction, so a message a
daemon is sending is never touched; retrying twice changes nothing more.

Exit status 1 only when none of the given messages could be retried.
"""


def register(commands: Any) -> None:
    box = commands.add_parser("outbox", help="what was sent to whom, and how delivery went")
    ocmds = box.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    lst = ocmds.add_parser(
        "list",
        help="newest first",
        description="One line per message, newest first; each recipient is followed by its state "
        "when the recipients fared differently (sent, pending: to be tried again, parked: refused "
        "for good). A last line says how many more match beyond --limit.",
    )
    lst.add_argument(
        "--status",
        action="append",
        type=_statuses,
        metavar="STATUS[,STATUS]",
        help=f"only these statuses ({', '.join(STATUSES)}); repeat or separate with commas",
    )
    _add_filters(lst)
    lst.add_argument("--limit", type=_positive, default=50, help="at most this many rows (default: 50)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=cmd_outbox_list)

    show = ocmds.add_parser("show", help="one message: every field, and each recipient's delivery")
    show.add_argument("message", metavar="ID|KEY", help="the row's id (outbox list) or its idempotency key")
    show.add_argument("--body", action="store_true", help="print the plain-text part too")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_outbox_show)

    retry = ocmds.add_parser(
        "retry",
        help="send parked messages again to the recipients that refused them",
        description=RETRY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    retry.add_argument("messages", nargs="*", metavar="ID|KEY", help="the parked messages to retry")
    retry.add_argument(
        "--parked", action="store_true", help="every parked message (narrowed by the filters below)"
    )
    _add_filters(retry)
    retry.add_argument("--json", action="store_true")
    retry.set_defaults(handler=cmd_outbox_retry, usage=retry.format_usage)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--account", metavar="ID", help="only this account's messages")
    parser.add_argument("--rule", metavar="ID", help="only messages decided by this rule or report")
    parser.add_argument(
        "--channel", metavar="NAME", help="only messages of this channel (email, or a name from channels:)"
    )
    parser.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help=f"only messages decided since then: a duration back from now (2h, 1d) or a time ({EXAMPLE})",
    )


def _statuses(text: str) -> list[str]:
    """``--status`` value: one status or several separated by commas."""
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    for status in chosen:
        if status not in STATUSES:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {status!r} (choose from {', '.join(STATUSES)})"
            )
    if not chosen:
        raise argparse.ArgumentTypeError(f"name a status: {', '.join(STATUSES)}")
    return chosen


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write a whole number of rows, 1 or more")
    return value


def _since(text: str) -> timedelta | datetime:
    """``--since`` value: a duration back from the command's ``now``, or a point in time.

    A bare number is not taken for seconds here: 20260301 is more likely a date.
    """
    if not text.strip().isdigit():
        try:
            return parse_duration(text)
        except ValueError:
            pass
    try:
        return parse_instant(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration such as 2h or 1d nor an ISO 8601 time such as {EXAMPLE}"
        ) from None


def _filters(ctx: Ctx, statuses: list[list[str]] | None = None) -> outbox.Filters:
    a = ctx.args
    since = ctx.now() - a.since if isinstance(a.since, timedelta) else a.since
    chosen = tuple(dict.fromkeys(s for group in statuses or [] for s in group))
    return outbox.Filters(
        statuses=chosen, account_id=a.account, rule_id=a.rule, since=since, channel=a.channel
    )


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
    with Session(ctx.read_engine) as session:
        rows, more = outbox.newest(session, _filters(ctx, a.status), a.limit)
    footer = f"… and {more:,} more; use --limit or a filter" if more else ""
    if a.json:
        ctx.emit_json([r.model_dump(mode="json", exclude={"text", "html", "context"}) for r in rows])
        if footer:
            ctx.warn(footer)  # stdout stays one JSON document
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
                    r.subject[:60] if r.context is None else "(not rendered yet)",
                    (r.last_error or "")[:80],
                ]
                for r in rows
            ],
            ["id", "decided (UTC)", "status", "tries", "to", "subject", "last error"],
        )
    )
    if footer:
        ctx.say(footer)
    return 0


def _find(session: Session, ref: str) -> Outbox:
    where = col(Outbox.idem_key) == ref
    if ref.isdigit() and len(ref) < 19:  # a row id fits in 64 bits; a longer number is a key, if anything
        where = or_(where, col(Outbox.id) == int(ref))
    row = session.exec(select(Outbox).where(where)).first()
    if row is None:
        raise CommandError(f"no outbox row {ref!r}; `balancewatch outbox list` shows their ids and keys")
    return row


def _when(value: Any) -> str:
    return value.isoformat() if value is not None else "-"


def cmd_outbox_show(ctx: Ctx) -> int:
    with Session(ctx.read_engine) as session:
        row = _find(session, ctx.args.message)
    if ctx.args.json:
        hidden = {"context"} if ctx.args.body else {"text", "html", "context"}
        ctx.emit_json(row.model_dump(mode="json", exclude=hidden))
        return 0
    fields = _fields(row, ctx.settings.delivery.retry.give_up_after)
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        ctx.say(f"{name.ljust(width)}  {value}")
    ctx.say()
    ctx.say(_recipients_table(row))
    if ctx.args.body:
        ctx.say()
        ctx.say(row.text.rstrip())
    return 0


def _fields(row: Outbox, give_up_after: timedelta) -> list[tuple[str, str]]:
    deliveries: Mapping[str, Mapping[str, Any]] = row.deliveries or {}
    due = [address for address, state in recipient_states(row) if state in (PENDING, "waiting")]
    in_progress = row.status in (QUEUED, PENDING, SENDING) and due
    gives_up = outbox.give_up_from(row.created_at, deliveries, due) + give_up_after if in_progress else None
    if row.status == SENDING:
        worker = f"{row.claimed_by}, lease until {_when(row.lease_until)}"
    else:
        worker = f"{row.claimed_by} (the last to try it)" if row.claimed_by else "-"
    return [
        ("id", str(row.id)),
        ("key", row.idem_key),
        ("message-id", row.message_id),
        ("kind", row.kind),
        ("channel", row.channel),
        ("rule", row.rule_id or "-"),
        ("account", f"{row.account_id} {row.currency}" if row.account_id else "-"),
        ("from", shown(row.sender) or "-"),
        ("status", row.status),
        ("attempts", str(row.attempts)),
        ("decided", _when(row.created_at)),
        ("next attempt", _when(row.next_attempt_at) if row.status in (QUEUED, PENDING) else "-"),
        ("gives up", _when(gives_up)),
        ("sent", _when(row.sent_at)),
        ("worker", worker),
        ("last error", row.last_error or "-"),
        ("template", row.template or "-"),
        ("subject", row.subject if row.context is None else "(not rendered yet)"),
        ("attachments", ", ".join(a.get("filename", "?") for a in row.attachments) or "-"),
    ]


def _recipients_table(row: Outbox) -> str:
    """Each recipient: state, tries, last try, next try, when it was re-queued by hand, last error."""
    deliveries: Mapping[str, Mapping[str, Any]] = row.deliveries or {}
    lines = []
    for address, state in recipient_states(row):
        entry = deliveries.get(address, {})
        lines.append(
            [
                shown(address),
                state,
                str(entry.get("attempts", 0)),
                str(entry.get("at") or "-"),
                _next_try(row, state),
                str(entry.get("requeued_at") or "-"),
                str(entry.get("error") or ""),
            ]
        )
    return table(lines, ["recipient", "state", "tries", "last try (UTC)", "next try", "re-queued", "error"])


def _next_try(row: Outbox, state: str) -> str:
    if state not in (PENDING, "waiting"):
        return "-"
    if row.status == SENDING:
        return "now (being sent)"
    return _when(row.next_attempt_at) if row.status == PENDING else "-"


def cmd_outbox_retry(ctx: Ctx) -> int:
    a = ctx.args
    complaint = _retry_usage(a)
    if complaint:
        ctx.warn(f"{a.usage()}balancewatch outbox retry: error: {complaint}")
        return 2
    now = ctx.now()
    with ctx.engine.begin() as conn:
        if a.parked:
            done, left = outbox.requeue_parked(conn, _filters(ctx), now)
        else:
            done, left = outbox.requeue_refs(conn, a.messages, now)
    if a.json:
        ctx.emit_json(
            {
                "requeued": [
                    {"id": r.id, "idem_key": r.idem_key, "recipients": r.recipients, "delivered": r.delivered}
                    for r in done
                ],
                "left": [{"message": n.ref, "reason": n.reason} for n in left],
            }
        )
    else:
        _say_retried(ctx, done, left, bool(a.parked))
    return 1 if a.messages and not done else 0


def _retry_usage(a: argparse.Namespace) -> str | None:
    if a.parked and a.messages:
        return "give message ids or --parked, not both"
    if not a.parked and not a.messages:
        return "give the ids of parked messages, or --parked to retry every parked message"
    if not a.parked and (a.account or a.rule or a.since):
        return "--account, --rule and --since narrow --parked; with ids, leave them out"
    return None


def _say_retried(ctx: Ctx, done: list[outbox.Requeued], left: list[outbox.NotRequeued], bulk: bool) -> None:
    for r in done:
        line = f"re-queued #{r.id} {r.idem_key}: {', '.join(map(shown, r.recipients))}"
        if r.delivered:
            line += f" (not sent again to {', '.join(map(shown, r.delivered))}: already delivered)"
        ctx.say(line)
    for n in left:
        ctx.warn(f"{n.ref} {n.reason}")
    if done:
        count = sum(len(r.recipients) for r in done)
        ctx.say(
            f"{len(done)} message{'s' if len(done) != 1 else ''} re-queued for {count} "
            f"recipient{'s' if count != 1 else ''}; the next delivery round sends them"
        )
    elif bulk and not left:
        ctx.say("nothing to retry: no parked message matches")
