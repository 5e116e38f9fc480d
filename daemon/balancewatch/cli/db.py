"""The `db` commands: the database schema and its migrations."""

from __future__ import annotations

from typing import Any

from balancewatch.cli.common import CommandError, Ctx
from balancewatch.config import safe_url
from balancewatch.store.db import SchemaError, missing_status, schema_status, sqlite_file, upgrade


def register(commands: Any) -> None:
    """Add this module's commands to the parser."""
    db = commands.add_parser("db", help="database schema")
    db_cmds = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = db_cmds.add_parser(
        "upgrade", help="create the schema, or apply the migrations it lacks (one line per revision)"
    )
    up.set_defaults(handler=cmd_db_upgrade)
    current = db_cmds.add_parser(
        "current", help="the schema revision in place; exit 1 unless it is this version's (head)"
    )
    current.set_defaults(handler=cmd_db_current)


def cmd_db_upgrade(ctx: Ctx) -> int:
    # Neither ctx.engine nor ctx.read_engine: both refuse the very schemas this command upgrades.
    engine = ctx.bare_engine
    try:
        database = ctx.settings.database
        channel = database.notify_channel if database.listen == "trigger" else None
        upgrade(engine, announce=ctx.say, notify_channel=channel)
    except SchemaError as exc:
        raise CommandError(str(exc)) from exc
    status = schema_status(engine)
    ctx.say(f"schema at {status.describe()} in {safe_url(ctx.settings.database_url)}")
    return 0


def cmd_db_current(ctx: Ctx) -> int:
    file = sqlite_file(ctx.settings.database_url)
    # Asking never creates anything: not the file, nor (as making an engine would) its directory.
    status = missing_status() if file is not None and not file.is_file() else schema_status(ctx.bare_engine)
    ctx.say(status.describe())
    return 0 if status.state == "current" else 1
