"""``balancewatch schema``: the JSON Schema of rule files, for editors."""

from __future__ import annotations

import argparse
from typing import Any

from balancewatch.cli.common import Ctx
from balancewatch.rules.schema import schema_text

DESCRIPTION = """\
Prints the JSON Schema (draft 2020-12) of a rule file to stdout. Save it,
e.g. `balancewatch schema > rules.schema.json`, and start each rule file with

  # yaml-language-server: $schema=rules.schema.json

(a path relative to the rule file, or a URL): VS Code with the YAML extension,
and other editors running yaml-language-server, then complete and check the
file as it is typed. `balancewatch check` still has the last word: only it
knows which currencies exist, which templates there are and whether ids are
unique across files.
"""


def register(commands: Any) -> None:
    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of rule files, for editors",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    schema.set_defaults(handler=cmd_schema)


def cmd_schema(ctx: Ctx) -> int:
    """Print the schema; it needs no config, database or rules directory."""
    ctx.say(schema_text())
    return 0
