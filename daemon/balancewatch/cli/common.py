"""What every command needs: settings, an engine, the clock, and consistent output."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Engine

from balancewatch.config import Settings, load_settings, safe_url
from balancewatch.core.problems import ProblemsError
from balancewatch.store.db import SchemaError, SchemaStatus, make_engine, schema_status, sqlite_file, upgrade


class CommandError(Exception):
    """A failure to report in one line (or several) and exit 1; no traceback."""


@dataclass
class Ctx:
    """Per-invocation context, built lazily so ``--help`` and ``check`` work without a database."""

    args: argparse.Namespace
    environ: Mapping[str, str]
    out: Any = field(default_factory=lambda: sys.stdout)
    err: Any = field(default_factory=lambda: sys.stderr)

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.args.config, self.environ)

    @cached_property
    def bare_engine(self) -> Engine:
        """The configured database, its schema unchecked: for the `db` commands alone."""
        return make_engine(self.settings.database_url, pool_size=self.settings.database.pool_size)

    @cached_property
    def engine(self) -> Engine:
        """The database for a command that writes: an empty one gets the schema (a first start just works).

        Raises CommandError, naming the fix, when the schema is older or newer than this version's.
        """
        engine = self.bare_engine
        status = schema_status(engine)
        if status.state == "missing":
            try:
                upgrade(engine)
            except SchemaError as exc:
                raise CommandError(str(exc)) from exc
            return engine
        _require_current(status)
        return engine

    @cached_property
    def read_engine(self) -> Engine:
        """The database for a command that only reads: never creates a file, a table or anything else.

        Raises CommandError when there is no database or schema yet, or when it is older or newer.
        """
        url = self.settings.database_url
        missing = CommandError(
            f"no database at {safe_url(url)}: start `balancewatch run` or run `balancewatch db upgrade` "
            "to create it"
        )
        file = sqlite_file(url)
        # Checked before any engine exists: opening a SQLite file that is not there creates it.
        if file is not None and not file.is_file():
            raise missing
        status = schema_status(self.bare_engine)
        if status.state == "missing":
            raise missing
        _require_current(status)
        return self.bare_engine

    def close(self) -> None:
        """Release the database connections this invocation opened, if any."""
        for name in ("engine", "read_engine"):
            self.__dict__.pop(name, None)
        engine = self.__dict__.pop("bare_engine", None)
        if engine is not None:
            engine.dispose()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def say(self, text: str = "") -> None:
        print(text, file=self.out)

    def warn(self, text: str) -> None:
        print(text, file=self.err)

    def emit_json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False), file=self.out)


Handler = Callable[[Ctx], int]


def _require_current(status: SchemaStatus) -> None:
    """Refuse, in one line naming the fix, a schema this version cannot work on as it is."""
    if status.state == "behind":
        raise CommandError(
            f"the database schema is at {status.current}, this balancewatch needs {status.head}: "
            "run `balancewatch db upgrade`"
        )
    if status.state == "ahead":
        raise CommandError(
            f"the database schema is at {status.current}, newer than this balancewatch knows "
            f"({status.head}): run the balancewatch version that upgraded it, or a newer one"
        )


def report_problems(ctx: Ctx, exc: ProblemsError, what: str = "") -> int:
    for problem in exc.problems:
        ctx.warn(str(problem))
    if what:
        ctx.warn(f"{what}: {len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}")
    return 1


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain aligned text table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)
