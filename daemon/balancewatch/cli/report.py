"""Reports on demand: ``report run`` (now, through the claims and the outbox) and ``report list``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from balancewatch import outbox
from balancewatch.cli.common import CommandError, Ctx, table
from balancewatch.core.progress import Progress
from balancewatch.deliver.registry import make_registry
from balancewatch.deliver.worker import deliver_batch
from balancewatch.liveset import LiveSet
from balancewatch.render.templates import TemplateSuspendedError
from balancewatch.reports import accounts as accts
from balancewatch.reports import claims, schedule
from balancewatch.reports.compose import Prepared
from balancewatch.reports.periods import LAST
from balancewatch.reports.runner import RunError, ZoneRun, run_now
from balancewatch.rules.reports import CompiledReport
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.service import instance_name
from balancewatch.store.tables import ACCOUNT_TABLE


def register(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="scheduled reports: run one now, list them",
        description="Reports are defined in rule files (reports:); the daemon sends them on schedule.",
    )
    actions = report.add_subparsers(dest="report_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="render and send a report now",
        description="Renders report ID for its accounts (or one) and the period given, and sends it "
        "through the outbox like the schedule does: a report already sent for that period is not "
        "sent again; one that failed is tried again. Exit status 1 if any report failed.",
    )
    run.add_argument("id", metavar="ID", help="the report's id in the rule files")
    run.add_argument("--account", metavar="A", help="only this account (default: every account it goes to)")
    run.add_argument(
        "--period",
        metavar="P",
        default=LAST,
        help="a day 2026-03-14, an ISO week 2026-W11, a month 2026-03, or last (the default: the last "
        "complete one, in each account's timezone)",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="print the subject, recipients and text of each; write nothing"
    )
    run.add_argument(
        "-q", "--quiet", action="store_true", help="no progress line on a terminal (there is none elsewhere)"
    )
    run.set_defaults(handler=cmd_run)
    listing = actions.add_parser(
        "list", help="the reports defined, their next send time per timezone, and what was sent last"
    )
    listing.add_argument("--json", action="store_true", help="as JSON")
    listing.set_defaults(handler=cmd_list)


def _live(ctx: Ctx) -> LiveSet:
    """The rules and templates as ``check`` loads them; ProblemsError lists what is wrong."""
    settings = ctx.settings
    return load_set(
        settings.rules_dir,
        settings.templates_dir,
        budget=settings.render.budget(),
        channels=tuple(settings.channels),
    )


def _report(live: LiveSet, report_id: str) -> CompiledReport:
    report = live.report(report_id)
    if report is None:
        known = ", ".join(sorted(r.id for r in live.reports)) or "none"
        raise CommandError(f"no report {report_id!r} in the rule files (reports: {known})")
    return report


def cmd_run(ctx: Ctx) -> int:
    args, settings = ctx.args, ctx.settings
    live = _live(ctx)
    report = _report(live, args.id)
    total = _accounts_to_do(ctx, report, args.account)
    try:
        shown = Progress(f"report {report.id}", total, stream=ctx.err, quiet=args.quiet, noun="accounts")
        with shown:
            runs = run_now(
                ctx.engine,
                live,
                settings,
                report,
                ctx.now(),
                instance_name(settings),
                account_id=args.account,
                period=args.period,
                dry_run=args.dry_run,
                on_batch=shown.advance,
            )
    except RunError as exc:
        raise CommandError(str(exc)) from None
    except TemplateSuspendedError as exc:
        raise CommandError(f"{exc.problem}; the reports not sent yet go out at a later run") from None
    if args.dry_run:
        for run in runs:
            _print_dry(ctx, report, run)
    failed = _summarise(ctx, report, runs, args.dry_run)
    if args.dry_run:
        return 1 if failed else 0
    keys = [m.idem_key for r in runs for p in r.done for m in p.messages]
    delivered = _deliver(ctx, keys)
    return 1 if failed or not delivered else 0


def _accounts_to_do(ctx: Ctx, report: CompiledReport, account_id: str | None) -> int:
    """How many accounts a run goes over: one for a single account or an operators' report, else
    every account the report goes to (its zones split them, each into one run)."""
    if account_id is not None or report.contents == "low-balance":
        return 1
    query = select(func.count(ACCOUNT_TABLE.c.id)).where(*accts.chosen(report))
    with ctx.engine.connect().execution_options(readonly=True) as conn:
        return int(conn.execute(query).scalar_one())


def _print_dry(ctx: Ctx, report: CompiledReport, run: ZoneRun) -> None:
    for p in run.done:
        for m in p.messages:
            _print_message(ctx, report, run, p, m)


def _print_message(ctx: Ctx, report: CompiledReport, run: ZoneRun, p: Prepared, m: outbox.NewMessage) -> None:
    ctx.say(f"--- report {report.id}, {_who(p)}, period {run.period.key} ({run.zone})")
    to = f"channel {m.channel}" if m.channel != outbox.EMAIL else ", ".join(m.recipients)
    ctx.say(f"To: {to}")
    ctx.say(f"Subject: {m.subject}")
    for a in m.attachments:
        ctx.say(f"Attachment: {a.filename} ({a.content_type}, {len(a.content.encode())} bytes)")
    ctx.say()
    ctx.say(m.text.rstrip("\n"))
    ctx.say()


def _who(p: Prepared) -> str:
    return "operators" if p.outcome.account_id == claims.OPERATORS else f"account {p.outcome.account_id}"


def _summarise(ctx: Ctx, report: CompiledReport, runs: Sequence[ZoneRun], dry_run: bool) -> bool:
    """Print one line per zone, and each report that failed or was skipped; True if any failed."""
    failed = False
    verb = "would send" if dry_run else "sent"
    for run in runs:
        counts = {claims.SENT: 0, claims.SKIPPED: 0, claims.FAILED: 0}
        for p in run.done:
            counts[p.outcome.status] += 1
            if p.outcome.status != claims.SENT:
                ctx.say(f"{report.id}: {_who(p)}: {p.outcome.status}: {p.outcome.note}")
        for account_id, row in sorted(run.before.items()):
            when = f" at {_at(row.finished_at, run.zone)}" if row.finished_at else ""
            ctx.say(f"{report.id}: account {account_id}: already {row.status} for {run.period.key}{when}")
        failed = failed or counts[claims.FAILED] > 0
        ctx.say(
            f"{report.id} {run.period.key} ({run.zone}): {verb} {counts[claims.SENT]}, skipped "
            f"{counts[claims.SKIPPED]}, failed {counts[claims.FAILED]}, already done {len(run.before)}"
        )
    return failed


def _deliver(ctx: Ctx, keys: Sequence[str]) -> bool:
    """Deliver the messages just written (a few, right away; many: left to the daemon). False if one
    could not be delivered now."""
    settings = ctx.settings
    if not keys:
        return True
    if len(keys) > settings.delivery.batch_size:
        ctx.say(f"{len(keys)} messages are in the outbox; the running daemon delivers them")
        return True
    transport, worker, ok = make_registry(settings), instance_name(settings), True
    for key in keys:
        stats = deliver_batch(ctx.engine, transport, settings, ctx.now(), worker, key=key)
        outcome = next(iter(stats.outcomes), "not claimed")
        if outcome != "sent":
            ok = False
            ctx.warn(f"{key}: {outcome}; the daemon tries again (see balancewatch outbox list)")
    return ok


def cmd_list(ctx: Ctx) -> int:
    settings = ctx.settings
    live = _live(ctx)
    now = ctx.now()
    rows: list[dict[str, Any]] = []
    with ctx.read_engine.connect().execution_options(readonly=True) as conn:
        for report in live.reports:
            zones = set(accts.report_zones(conn, report, settings).zones)
            zones |= {c.zone for c in schedule.cursors(conn, report.id)}
            last = {s.zone: s for s in claims.last_sent(conn, report.id)}
            for zone in sorted(zones) or [""]:
                upcoming = (
                    schedule.next_fire_time(report.cron, zone, now) if zone and report.enabled else None
                )
                sent = last.get(zone)
                rows.append(
                    {
                        "id": report.id,
                        "enabled": report.enabled,
                        "schedule": report.cron,
                        "contents": report.contents,
                        "period": report.period or "now",
                        "timezone": zone or "(no accounts)",
                        "next": _at(upcoming, zone) if upcoming else None,
                        "last_period": sent.period_key if sent else None,
                        "last_sent_at": _at(sent.at, zone) if sent else None,
                        "last_count": sent.count if sent else 0,
                    }
                )
    if ctx.args.json:
        ctx.emit_json(rows)
        return 0
    if not rows:
        ctx.say(f"no reports in {settings.rules_dir}")
        return 0
    header = ["ID", "CONTENTS", "PERIOD", "SCHEDULE", "TIMEZONE", "NEXT", "LAST SENT"]
    ctx.say(
        table(
            [
                [
                    r["id"] + ("" if r["enabled"] else " (disabled)"),
                    r["contents"],
                    r["period"],
                    r["schedule"],
                    r["timezone"],
                    r["next"] or "-",
                    f"{r['last_period']}: {r['last_count']} at {r['last_sent_at']}"
                    if r["last_period"]
                    else "-",
                ]
                for r in rows
            ],
            header,
        )
    )
    return 0


def _at(moment: Any, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone or "UTC")).strftime("%Y-%m-%d %H:%M %Z")
