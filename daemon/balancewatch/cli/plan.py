"""The `plan` command: what an edit of the rules would do, before the daemon loads it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from balancewatch.cli.common import CommandError, Ctx, report_problems, table
from balancewatch.core.money import format_money, to_major
from balancewatch.core.problems import ProblemsError
from balancewatch.rules.compiled import CompiledRule
from balancewatch.rules.loader import SourceFile, parse_rules, read_files, rule_files
from balancewatch.runtime.loadset import load_set
from balancewatch.store import status
from balancewatch.tools.plan import compare, read_only
from balancewatch.tools.plan.model import DEFAULT_LIMIT, Entry, Plan, Reason, RulePlan, Start, Status, Stop

DESCRIPTION = """\
Compares the rules on disk (validated exactly as `check` does) with the rules
in effect, as the running daemon last recorded them in the database, and reads
the live database to show, per rule, which accounts would start alerting now
and which fired alerts would no longer apply. Nothing is sent and nothing is
written: the database is read in one read-only transaction.

With no daemon reporting in the last 10 minutes there is nothing to compare
with: pass --against DIR (say, a checkout of the rules before the edit), or
--against-empty to see what a first start would send.

Exit status: 0 the plan was computed (whatever it says); 1 the rules have
problems, there is no baseline, or the database cannot be read; 2 bad usage.
"""


REASONS = {
    Reason.rule_removed: "rule removed",
    Reason.rule_disabled: "rule disabled",
    Reason.not_selected: "account no longer selected",
    Reason.currency_gone: "currency no longer covered",
    Reason.step_gone: "step no longer in the rule",
    Reason.rearmed: "balance above the new re-arm point",
}


def register(commands: Any) -> None:
    """Add the ``plan`` command to the parser."""
    p = commands.add_parser(
        "plan",
        help="show which accounts would start or stop alerting under the edited rules",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--rules", type=Path, metavar="DIR", help="the edited rules (default: rules_dir from the config)"
    )
    baseline = p.add_mutually_exclusive_group()
    baseline.add_argument(
        "--against",
        type=Path,
        metavar="DIR",
        help="compare with the rules in DIR instead of the rules the running daemon loaded",
    )
    baseline.add_argument(
        "--against-empty",
        action="store_true",
        help="compare with no rules at all: what a first start would send",
    )
    p.add_argument(
        "--limit",
        type=_count,
        default=DEFAULT_LIMIT,
        metavar="N",
        help="accounts listed per rule, for start and for stop (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(handler=cmd_plan)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; write 0 or more")
    return value


@dataclass(frozen=True)
class Baseline:
    """The rules an edit is compared with, and how to name them."""

    rules: tuple[CompiledRule, ...]
    label: str
    info: dict[str, Any] = field(default_factory=dict)


def cmd_plan(ctx: Ctx) -> int:
    args, settings = ctx.args, ctx.settings
    new_dir: Path = args.rules or settings.rules_dir
    try:
        live = load_set(
            new_dir,
            settings.templates_dir,
            budget=settings.render.budget(),
            channels=tuple(settings.channels),
        )
    except ProblemsError as exc:
        return report_problems(ctx, exc, f"plan: the rules in {new_dir} have problems")
    against: Baseline | None = None
    if args.against is not None:
        try:
            against = _directory(args.against)
        except ProblemsError as exc:
            return report_problems(ctx, exc, f"plan: the rules in {args.against} (--against) have problems")
    elif args.against_empty:
        against = Baseline((), "no rules (--against-empty)", {"source": "empty"})
    now = ctx.now()
    engine = ctx.read_engine  # plan never writes, nor creates a database
    try:
        with read_only(engine) as conn:
            try:
                baseline = against or _in_effect(conn, now)
            except ProblemsError as exc:
                return report_problems(
                    ctx, exc, "plan: the rules in effect do not load with this version; pass --against DIR"
                )
            result = compare(
                conn, baseline.rules, live.rules, now, args.limit, min_history=settings.usage.min_history
            )
    finally:
        ctx.close()
    new_label = f"the rules in {new_dir} (set {live.digest[:12]})"
    if args.json:
        ctx.emit_json(
            to_json(result, {"source": "directory", "path": str(new_dir), "digest": live.digest}, baseline)
        )
    else:
        for line in render(result, new_label, baseline.label, settings.defaults.locale):
            ctx.say(line)
    return 0


def _directory(path: Path) -> Baseline:
    rules = parse_rules(read_files(rule_files(path)))
    return Baseline(tuple(rules), f"the rules in {path}", {"source": "directory", "path": str(path)})


def _in_effect(conn: Connection, now: datetime) -> Baseline:
    """The rules the running daemon recorded; CommandError when none reported lately."""
    found = status.rules_in_effect(conn, now)
    if found is None:
        raise CommandError(_no_baseline(conn))
    if not found.files:
        raise CommandError(
            f"instance {found.instance} reports set {found.digest[:12]} but not its rule files "
            "(a daemon older than `plan`?); pass --against DIR with the rules it runs"
        )
    files = [SourceFile(Path(name), text) for name, text in sorted(found.files.items())]
    loaded = f", loaded {found.loaded_at:%Y-%m-%d %H:%M} UTC" if found.loaded_at else ""
    return Baseline(
        tuple(parse_rules(files)),
        f"the rules in effect on {found.instance} (set {found.digest[:12]}{loaded})",
        {
            "source": "in-effect",
            "instance": found.instance,
            "digest": found.digest,
            "loaded_at": found.loaded_at.isoformat() if found.loaded_at else None,
        },
    )


def _no_baseline(conn: Connection) -> str:
    rows = status.read_all(conn)
    last = (
        f"the last report came from {rows[0].instance} at {rows[0].heartbeat_at:%Y-%m-%d %H:%M} UTC"
        if rows
        else "no daemon has ever reported to this database"
    )
    return (
        f"no running daemon has reported the rules in effect in the last 10 minutes ({last}); "
        "pass --against DIR to compare with the rules in DIR, or --against-empty to compare with no rules"
    )


# --- text ----------------------------------------------------------------------------------------


def render(plan: Plan, new_label: str, old_label: str, locale: str) -> list[str]:
    """The plan as the lines ``plan`` prints."""
    lines = [f"Comparing {new_label}", f"     with {old_label}.", ""]
    unchanged = [r.rule_id for r in plan.rules if r.status is Status.unchanged]
    for rule in plan.rules:
        if rule.status is not Status.unchanged:
            lines.extend(_rule_lines(rule, locale))
            lines.append("")
    if unchanged:
        lines.extend([f"unchanged: {', '.join(unchanged)}", ""])
    lines.append(
        "Plan: "
        + ", ".join(f"{plan.count(s)} {s.value}" for s in Status)
        + f"; {plan.starting} would start alerting now, {plan.stopping} would stop."
    )
    return lines


def _rule_lines(rule: RulePlan, locale: str) -> list[str]:
    changes = "; ".join(f"{c.field}: {c.old} -> {c.new}" for c in rule.changes)
    lines = [f"rule {rule.rule_id}: {rule.status.value}" + (f" ({changes})" if changes else "")]
    if rule.start is None or rule.stop is None:
        lines.append("  no effect on who is alerted")
        return lines
    lines.extend(_start_lines(rule.start, locale))
    lines.extend(_stop_lines(rule.stop, locale))
    return lines


def _start_lines(start: Start, locale: str) -> list[str]:
    lines = [f"  would start alerting now: {_how_many(start.accounts, start.balances)}"]
    if start.due_anyway:
        lines.append(f"    (and {start.due_anyway} due under the rules in effect too, not counted)")
    rows = [
        [
            e.account_id,
            e.name,
            _money(e.balance, e.currency, locale),
            f"{e.why} at {_money(e.step, e.currency, locale)}",
        ]
        for e in start.first
    ]
    return lines + _listed(rows, ["account", "name", "balance", "notification"], start.balances)


def _stop_lines(stop: Stop, locale: str) -> list[str]:
    lines = [f"  would stop: {_how_many(stop.accounts, stop.balances)}"]
    lines.extend(
        f"    step {_money(g.step, g.currency, locale)}: {g.states} fired, {REASONS[g.reason]}"
        for g in stop.groups
    )
    rows = [
        [
            e.account_id,
            e.name,
            _money(e.balance, e.currency, locale),
            f"step {_money(e.step, e.currency, locale)}",
            REASONS[Reason(e.why)],
        ]
        for e in stop.first
    ]
    return lines + _listed(rows, ["account", "name", "balance", "fired", "why"], stop.states)


def _listed(rows: list[list[str]], header: list[str], total: int) -> list[str]:
    out = ["      " + line for line in table(rows, header).splitlines()] if rows else []
    if total > len(rows):
        out.append(f"      ... and {total - len(rows)} more (a higher --limit lists them)")
    return out


def _how_many(accounts: int, balances: int) -> str:
    text = f"{accounts} account{'s' if accounts != 1 else ''}"
    return text if balances == accounts else f"{text} ({balances} balances)"


def _money(minor: int, currency: str, locale: str) -> str:
    return format_money(minor, currency, locale)


# --- JSON ----------------------------------------------------------------------------------------


def to_json(plan: Plan, new: dict[str, Any], baseline: Baseline) -> dict[str, Any]:
    """The plan as JSON: the same structure as the text, amounts exact (minor units and major text)."""
    return {
        "now": plan.now.isoformat(),
        "new": new,
        "old": baseline.info,
        "rules": [_rule_json(r) for r in plan.rules],
        "totals": {
            **{s.value: plan.count(s) for s in Status},
            "start": plan.starting,
            "stop": plan.stopping,
        },
    }


def _rule_json(rule: RulePlan) -> dict[str, Any]:
    return {
        "id": rule.rule_id,
        "status": rule.status.value,
        "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in rule.changes],
        "start": None
        if rule.start is None
        else {
            "accounts": rule.start.accounts,
            "balances": rule.start.balances,
            "due_anyway": rule.start.due_anyway,
            "first": [_entry_json(e, "kind") for e in rule.start.first],
        },
        "stop": None
        if rule.stop is None
        else {
            "accounts": rule.stop.accounts,
            "balances": rule.stop.balances,
            "states": rule.stop.states,
            "by_reason": [
                {
                    "reason": g.reason.value,
                    "currency": g.currency,
                    "step_minor": g.step,
                    "step": str(to_major(g.step, g.currency)),
                    "states": g.states,
                }
                for g in rule.stop.groups
            ],
            "first": [_entry_json(e, "reason") for e in rule.stop.first],
        },
    }


def _entry_json(entry: Entry, why: str) -> dict[str, Any]:
    return {
        "account": entry.account_id,
        "name": entry.name,
        "currency": entry.currency,
        "balance_minor": entry.balance,
        "balance": str(to_major(entry.balance, entry.currency)),
        "step_minor": entry.step,
        "step": str(to_major(entry.step, entry.currency)),
        why: entry.why,
    }
