"""What the report tests share: accounts in zones, usage on a day, a daemon instance driven by ``now``,
and the report_run and outbox rows as the tests read them.

The reports are built by the real contents and rendered with the small
templates of ``tests/report_templates`` (they name only keys every report has).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import Session

from balancewatch.config import Settings
from balancewatch.deliver.registry import make_transport
from balancewatch.liveset import LiveSet
from balancewatch.reports.runner import ReportStats
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.service import Pipeline
from balancewatch.store import ledger
from balancewatch.store.accounts import add_account
from balancewatch.store.db import make_engine
from balancewatch.store.tables import Outbox, ReportCursor, ReportRun

REPORT_TEMPLATES = Path(__file__).parent / "report_templates"
RUN = ReportRun.__table__  # type: ignore[attr-defined]
OUTBOX = Outbox.__table__  # type: ignore[attr-defined]
CURSOR = ReportCursor.__table__  # type: ignore[attr-defined]


def write_reports(rules_dir: Path, body: str, templates: Path = REPORT_TEMPLATES) -> LiveSet:
    """Write ``body`` as the only rule file and load the live set with the test templates."""
    (rules_dir / "reports.yaml").write_text(body)
    return load_set(rules_dir, templates)


def account(
    engine: Engine,
    account_id: str,
    timezone: str | None = None,
    *,
    parent_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    billing: str = "prepaid",
) -> None:
    """Add an account owned by ``<id>@owner.example`` in ``timezone`` (None: the default zone)."""
    with Session(engine) as s:
        add_account(
            s,
            account_id,
            account_id.capitalize(),
            f"{account_id}@owner.example",
            timezone=timezone,
            parent_id=parent_id,
            labels=labels,
            billing=billing,
        )
        s.commit()


def usage(engine: Engine, account_id: str, at: datetime, amount: int = 150, currency: str = "USD") -> None:
    """Post ``amount`` minor units of SMS usage at ``at`` (and a top-up before it, the first time)."""
    with Session(engine) as s:
        ledger.post(
            s, account_id, currency, -amount, "usage", occurred_at=at, now=at, service="sms", quantity=10
        )
        s.commit()


@dataclass
class Instance:
    """One daemon instance: its own engine and name, the live set, and the pipeline it drives.

    A restart is a new Instance over the same database; nothing in memory survives it.
    """

    url: str
    settings: Settings
    live: LiveSet
    worker: str = "instance-1"
    pipeline: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        engine = make_engine(self.url)
        self.pipeline = Pipeline(engine, self.settings, self.live, make_transport(self.settings), self.worker)

    @property
    def engine(self) -> Engine:
        return self.pipeline.engine

    def run(self, now: datetime) -> ReportStats:
        return self.pipeline.reports(now)

    def close(self) -> None:
        self.pipeline.engine.dispose()


@dataclass(frozen=True)
class Run:
    """One report_run row."""

    report_id: str
    account_id: str
    period_key: str
    timezone: str
    status: str
    fire_at: datetime
    idem_key: str | None
    note: str | None
    claimed_by: str


def runs(engine: Engine, report_id: str | None = None) -> list[Run]:
    """The report_run rows, by report, period and account."""
    c = RUN.c
    query = select(RUN).order_by(c.report_id, c.period_key, c.account_id)
    if report_id is not None:
        query = query.where(c.report_id == report_id)
    with engine.connect() as conn:
        return [
            Run(
                r.report_id,
                r.account_id,
                r.period_key,
                r.timezone,
                r.status,
                r.fire_at,
                r.idem_key,
                r.note,
                r.claimed_by,
            )
            for r in conn.execute(query)
        ]


def messages(engine: Engine) -> list[Any]:
    """The outbox rows of reports, in the order they were written."""
    with engine.connect() as conn:
        return list(conn.execute(select(OUTBOX).where(OUTBOX.c.kind == "report").order_by(OUTBOX.c.id)))


def cursor(engine: Engine, report_id: str, zone: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(CURSOR).where(CURSOR.c.report_id == report_id, CURSOR.c.timezone == zone)
        ).first()
