"""The `db` commands: the database schema."""

from __future__ import annotations

from typing import Any

from balancewatch.cli.common import Ctx
from balancewatch.config import safe_url
from balancewatch.store.db import upgrade


def register(commands: Any) -> None:
    """Add this module's commands to the parser."""
    db = commands.add_parser("db", help="database schema")
    db_cmds = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = db_cmds.add_parser("upgrade", help="create missing tables and indexes")
    up.set_defaults(handler=cmd_db_upgrade)


def cmd_db_upgrade(ctx: Ctx) -> int:
    version = upgrade(ctx.engine)
    ctx.say(f"schema at version {version} ({safe_url(ctx.settings.database_url)})")
    return 0
