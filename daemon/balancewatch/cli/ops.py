"""Operating commands: run, check, send-test, demo, config show."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path
from typing import Any

from balancewatch.cli.common import CommandError, Ctx, report_problems
from balancewatch.config import Settings, load_settings, safe_url
from balancewatch.core.problems import ProblemsError
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.smtp import probe as probe_smtp
from balancewatch.runtime.preflight import Ready, SettingsProblemsError, preflight
from balancewatch.runtime.service import (
    Daemon,
    build_pipeline,
    describe_transport,
    stop_on_signals,
)
from balancewatch.store.probe import DatabaseCheckError, probe_database

log = logging.getLogger("balancewatch")


def register(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run the daemon (what systemd starts)",
        description="Poll balances, decide notifications and deliver them until "
        "SIGTERM. Rules and templates reload when their files change and on SIGHUP; "
        "config.yaml changes need a restart.",
    )
    run.add_argument(
        "--once",
        action="store_true",
        help="one full sweep, the reports due, one round of delivery, then exit (for cron or a test)",
    )
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser(
        "check",
        help="validate config, rules and templates (exit 1 on any error)",
        description="Runs exactly the validation a reload runs, and every check `run` makes "
        "before it starts. Every problem is listed as path:line: field: message.",
    )
    check.add_argument(
        "--connect",
        action="store_true",
        help="then also reach the database (creating nothing) and the SMTP server (sending nothing)",
    )
    check.set_defaults(handler=cmd_check)

    _register_demo(commands)

    config = commands.add_parser("config", help="show the effective configuration")
    config_cmds = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_cmds.add_parser("show", help="print the settings in effect, secrets masked")
    show.set_defaults(handler=cmd_config_show)


def _register_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="a complete local run on SQLite with simulated usage",
        description="Creates (or resets) DIR with a SQLite database of about 50 "
        "accounts, simulates several days of usage on an accelerated "
        "clock through the real pipeline (alerts and every report), "
        "and writes the emails to DIR/mail/*.eml with DIR/mail/index.html listing them. "
        "The rules, templates and settings are those `run` would use (--config, "
        "$BALANCEWATCH_CONFIG, ./config.yaml or /etc/balancewatch/config.yaml, and "
        "BALANCEWATCH_* variables; with none, the shipped rules and templates), except that "
        "the database is always DIR's own and mail is always written to files: the configured "
        "database, SMTP server and top-up hook are never used. Rules or templates with "
        "problems are listed as `check` lists them, and the demo exits 1.",
    )
    demo.add_argument("--dir", type=Path, default=Path("balancewatch-demo"), help="(default: %(default)s)")
    demo.add_argument(
        "--days",
        type=_positive,
        default=10,
        help="simulated days (default: %(default)s); --days 1 runs in a few seconds, "
        "enough to see an edited alert template",
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed (default: %(default)s)")
    demo.set_defaults(handler=cmd_demo)


def cmd_check(ctx: Ctx) -> int:
    try:
        settings, ready = _ready(ctx)
    except SettingsProblemsError as exc:
        return report_problems(ctx, exc, "config")
    except ProblemsError as exc:
        return report_problems(ctx, exc, "check failed")
    for warning in ready.warnings:
        ctx.warn(f"warning: {warning}")
    live = ready.live
    files = len({r.source for r in live.rules} | {r.source for r in live.reports})
    reports = f" and {len(live.reports)} reports" if live.reports else ""
    ctx.say(
        f"ok: config {settings.source or '(defaults)'}; {len(live.rules)} rules{reports} "
        f"in {files} file{'s' if files != 1 else ''} in {settings.rules_dir}; "
        f"{len(live.templates.names)} templates in {settings.templates_dir}; set {live.digest[:12]}"
    )
    return connect(ctx, settings) if ctx.args.connect else 0


def _ready(ctx: Ctx) -> tuple[Settings, Ready]:
    """The settings and the set both ``check`` and ``run`` start from.

    Raises SettingsProblemsError for the config (its file, variables and what they name),
    ProblemsError for the rules and templates.
    """
    try:
        settings = ctx.settings
    except ProblemsError as exc:
        raise SettingsProblemsError(exc.problems) from None
    return settings, preflight(settings)


def connect(ctx: Ctx, settings: Settings) -> int:
    """``check --connect``: reach the database and the SMTP server; 1 if either fails."""
    failed = False
    try:
        ctx.say(probe_database(settings.database_url))
    except DatabaseCheckError as exc:
        ctx.warn(str(exc))
        failed = True
    if settings.transport == "smtp":
        try:
            ctx.say(probe_smtp(settings.smtp, settings.smtp_password(ctx.environ)))
        except TransportError as exc:
            ctx.warn(str(exc))
            failed = True
    return 1 if failed else 0


def cmd_run(ctx: Ctx) -> int:
    stopping = threading.Event()
    stop_on_signals(stopping)
    # Everything check refuses is refused here, before a database is opened or a thread started.
    try:
        settings, ready = _ready(ctx)
    except SettingsProblemsError as exc:
        report_problems(ctx, exc, "cannot start: the config has problems")
        return EX_CONFIG
    except ProblemsError as exc:
        report_problems(ctx, exc, "cannot start: the rules or templates have problems")
        return EX_CONFIG
    for warning in ready.warnings:
        log.warning("%s", warning)
    try:
        engine = ctx.engine
    except CommandError as exc:  # a schema older or newer than this version's: a person must act
        ctx.warn(f"balancewatch run: {exc}")
        return EX_CONFIG
    pipeline = build_pipeline(engine, settings, ready.live, stopping)
    if stopping.is_set():
        return 0
    log.info(
        "balancewatch starting: database %s; delivery: %s",
        _safe_url(settings.database_url),
        describe_transport(settings),
    )
    if settings.transport == "files":
        log.warning("no SMTP server configured: emails are written as .eml files to %s", settings.mail_dir)
    if args_once(ctx):
        now = ctx.now()
        stats = pipeline.evaluate(now)
        pipeline.topups(ctx.now(), ctx.now)
        pipeline.reports(ctx.now())
        delivered = pipeline.deliver(ctx.now(), ctx.now)
        ctx.say(
            f"looked at {stats.candidates} balances, decided {stats.notifications} notifications; "
            f"delivery: {dict(delivered.outcomes) or 'nothing due'}"
        )
        return 0
    # SIGHUP reads the config again only to report what would need a restart.
    return Daemon(pipeline, load_config=lambda: load_settings(ctx.args.config, ctx.environ)).run()


# sysexits' EX_CONFIG: `run` refused what it was given (config, rules, templates, the schema).
# The unit's RestartPreventExitStatus= names it, so systemd stops instead of restarting in a
# loop; any other failure (the database down at boot, say) is restarted.
EX_CONFIG = 78


def args_once(ctx: Ctx) -> bool:
    return bool(getattr(ctx.args, "once", False))


def _safe_url(url: str) -> str:
    return safe_url(url)


def cmd_config_show(ctx: Ctx) -> int:
    data = ctx.settings.redacted()
    data["source"] = str(ctx.settings.source or "(defaults)")
    data["database_url_effective"] = _safe_url(ctx.settings.database_url)
    data["transport_effective"] = describe_transport(ctx.settings)
    ctx.emit_json(data)
    return 0


def cmd_demo(ctx: Ctx) -> int:
    """The demo on the settings `run` would use; their problems as `check` lists them, exit 1."""
    from balancewatch.tools.demo import run_demo

    args: argparse.Namespace = ctx.args
    try:
        settings = ctx.settings
    except ProblemsError as exc:
        return report_problems(ctx, exc, "demo not run: the config has problems")
    if not args.log_level:
        # One line per email would bury the summary; the outbox and index.html have them all.
        logging.getLogger().setLevel(logging.WARNING)
    try:
        summary = run_demo(args.dir, days=args.days, seed=args.seed, settings=settings)
    except ProblemsError as exc:
        return report_problems(ctx, exc, "demo not run: the rules or templates have problems")
    ctx.say(summary.text())
    return 0


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value
