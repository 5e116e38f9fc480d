"""The `topup` commands: list automatic top-up requests, report one failed or succeeded.

``topup fail ID --reason TEXT`` is how a platform without a hook answer (or
an operator) says a charge failed later: the request closes as failed and
the owner's email is recorded in the outbox in one transaction, under the
same key the daemon would use, so the owner is told once. The running
daemon delivers it.
"""

from __future__ import annotations

from typing import Any

from balancewatch.cli.common import CommandError, Ctx, report_problems, table
from balancewatch.core.money import Money, to_major
from balancewatch.core.problems import ProblemsError
from balancewatch.runtime.loadset import load_set
from balancewatch.store import topup_requests as topups
from balancewatch.topup.answer import one_line
from balancewatch.topup.notify import email_key
from balancewatch.topup.worker import fail, succeed


def register(commands: Any) -> None:
    """Add this module's commands to the parser."""
    topup = commands.add_parser(
        "topup",
        help="automatic top-up requests: list them, report one failed or succeeded",
        description="Top-up requests made by rules with `topup:` (docs/topup.md).",
    )
    cmds = topup.add_subparsers(dest="topup_command", metavar="ACTION", required=True)
    lst = cmds.add_parser("list", help="newest first")
    lst.add_argument("--status", choices=list(topups.STATUSES))
    lst.add_argument("--account", metavar="ACCOUNT")
    lst.add_argument("--limit", type=int, default=50, help="(default: %(default)s)")
    lst.add_argument("--json", action="store_true", help="print the requests as JSON")
    lst.set_defaults(handler=cmd_list)

    failed = cmds.add_parser(
        "fail",
        help="report an open request failed: the owner is emailed once",
        description="Close an open (pending or requested) request as failed with REASON, and "
        "record the failure email to the owner in the outbox; the daemon sends it. "
        "Exit 1 if the request is not open.",
    )
    failed.add_argument("id", type=int, metavar="ID")
    failed.add_argument("--reason", required=True, help="why the charge failed; the owner reads it")
    failed.set_defaults(handler=cmd_fail)

    done = cmds.add_parser(
        "succeed",
        help="report an open request succeeded (the credit came another way): no email",
        description="Close an open request as succeeded, e.g. when the credit was booked under "
        "another kind than top-up. Exit 1 if the request is not open.",
    )
    done.add_argument("id", type=int, metavar="ID")
    done.add_argument("--note", default="marked succeeded by hand", help="kept with the request")
    done.set_defaults(handler=cmd_succeed)


def _row(r: topups.Request) -> dict[str, Any]:
    return {
        "id": r.id,
        "status": r.status,
        "account": r.account_id,
        "currency": r.currency,
        "amount": format(to_major(r.amount, r.currency), "f"),
        "amount_minor": r.amount,
        "rule": r.rule_id,
        "idempotency_key": r.idem_key,
        "attempts": r.attempts,
        "next_attempt_at": r.next_attempt_at.isoformat() if r.status == topups.PENDING else None,
        "last_error": r.last_error,
        "hook_response": r.hook_response,
        "created_at": r.created_at.isoformat(),
        "updated_at": r.updated_at.isoformat(),
    }


def cmd_list(ctx: Ctx) -> int:
    a = ctx.args
    with ctx.read_engine.connect() as conn:
        rows = topups.listing(conn, status=a.status, account_id=a.account, limit=a.limit)
    if a.json:
        ctx.emit_json([_row(r) for r in rows])
        return 0
    if not rows:
        ctx.say("no top-up requests" + (f" with status {a.status}" if a.status else ""))
        return 0
    ctx.say(
        table(
            [
                [
                    str(r.id),
                    r.created_at.strftime("%Y-%m-%d %H:%M"),
                    r.status,
                    r.account_id,
                    Money(r.amount, r.currency).format("en_US"),
                    str(r.attempts),
                    r.rule_id,
                    (r.last_error or "")[:60],
                ]
                for r in rows
            ],
            ["id", "made (UTC)", "status", "account", "amount", "tries", "rule", "last error"],
        )
    )
    return 0


def _not_open(ctx: Ctx, request_id: int) -> CommandError:
    with ctx.engine.connect() as conn:
        found = topups.get(conn, request_id)
    if found is None:
        return CommandError(f"no top-up request {request_id} (see `balancewatch topup list`)")
    return CommandError(
        f"request {request_id} is {found.status}, not open (pending or requested): nothing changed"
    )


def cmd_fail(ctx: Ctx) -> int:
    a = ctx.args
    reason = one_line(a.reason)
    if not reason:
        raise CommandError("--reason: say why the charge failed; the owner reads it")
    settings = ctx.settings
    try:
        live = load_set(
            settings.rules_dir,
            settings.templates_dir,
            budget=settings.render.budget(),
            channels=tuple(settings.channels),
        )
    except ProblemsError as exc:
        return report_problems(
            ctx, exc, "cannot write the failure email: the rules or templates have problems"
        )
    failed = fail(ctx.engine, live, settings, a.id, reason, "reported", ctx.now())
    if failed is None:
        raise _not_open(ctx, a.id)
    r = failed.request
    told = (
        f"the failure email to {', '.join(failed.email.recipients)} is in the outbox "
        f"({email_key(r.id)}); the daemon sends it"
        if failed.email is not None
        else "no failure email (see the log)"
    )
    ctx.say(f"request {r.id} ({r.account_id} {Money(r.amount, r.currency).format('en_US')}) failed: {told}")
    return 0


def cmd_succeed(ctx: Ctx) -> int:
    a = ctx.args
    closed = succeed(ctx.engine, a.id, one_line(a.note) or "marked succeeded by hand", ctx.now())
    if closed is None:
        raise _not_open(ctx, a.id)
    ctx.say(f"request {closed.id} ({closed.account_id}) succeeded")
    return 0
