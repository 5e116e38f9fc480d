"""Argument parsing and dispatch. Exit status: 0 fine, 1 a reported failure, 2 bad usage."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from sqlalchemy.exc import OperationalError

from balancewatch import __version__
from balancewatch.cli import (
    data,
    db,
    init,
    ops,
    outbox,
    plan,
    prefs,
    preview,
    recommend,
    render,
    report,
    ruletest,
    schema,
    sendtest,
    status,
    topup,
    unit,
)
from balancewatch.cli.common import CommandError, Ctx, report_problems
from balancewatch.config import safe_url
from balancewatch.core import logs
from balancewatch.core.problems import ProblemsError

DESCRIPTION = """\
Watches prepaid account balances and emails the right people at the right time.

Start with `balancewatch demo` to see it work on a local SQLite database,
`balancewatch check` after editing rules or templates, and `balancewatch run`
to serve (usually under systemd).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="balancewatch", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $BALANCEWATCH_CONFIG, ./config.yaml, /etc/balancewatch/config.yaml)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="override log.level from the config",
    )
    parser.add_argument("--version", action="version", version=f"balancewatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    init.register(commands)
    ops.register(commands)
    sendtest.register(commands)
    db.register(commands)
    status.register(commands)
    plan.register(commands)
    ruletest.register(commands)
    schema.register(commands)
    data.register(commands)
    outbox.register(commands)
    topup.register(commands)
    prefs.register(commands)
    report.register(commands)
    recommend.register(commands)
    render.register(commands)
    preview.register(commands)
    unit.register(commands)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or bad usage (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    ctx = Ctx(args, dict(os.environ if environ is None else environ))
    try:
        level, log_format = _configured_logging(ctx)
        logs.setup(args.log_level or level, dict(ctx.environ), log_format)
        return int(args.handler(ctx))
    except ProblemsError as exc:
        return report_problems(ctx, exc)
    except CommandError as exc:
        ctx.warn(f"balancewatch {command_name(args)}: {exc}")
        return 1
    except OperationalError as exc:
        # The database is unreachable or refused us: one line, no traceback, no password.
        reason = str(exc.orig or exc).strip().splitlines()[0]
        ctx.warn(
            f"balancewatch {command_name(args)}: database {safe_url(ctx.settings.database_url)}: {reason}"
        )
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`balancewatch render ... | head`): nothing more to say to it, and
        # Python's own flush of stdout at exit must not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        ctx.close()


def command_name(args: argparse.Namespace) -> str:
    """The command as typed, e.g. ``ledger post``."""
    action = getattr(args, f"{args.command.replace('-', '_')}_command", None)
    return f"{args.command} {action}" if action else args.command


def _configured_logging(ctx: Ctx) -> tuple[str, logs.LogFormat]:
    """log.level and log.format from the settings; info and text when the config cannot be read."""
    try:
        return ctx.settings.log.level, ctx.settings.log.format
    except ProblemsError:
        return "info", "text"  # the command reports the config problems itself
