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

from balancewatch.config import Settings, load_settings
from balancewatch.problems import ProblemsError
from balancewatch.store.db import make_engine, upgrade


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
    def engine(self) -> Engine:
        engine = make_engine(self.settings.database_url, pool_size=self.settings.database.pool_size)
        upgrade(engine)
        return engine

    def close(self) -> None:
        """Release the database connections this invocation opened, if any."""
        engine = self.__dict__.pop("engine", None)
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
