"""What an operator reads of the outbox: the rows ``Filters`` name, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, desc, func, select
from sqlmodel import Session

from balancewatch.store.tables import OUTBOX_TABLE, Outbox

outbox = OUTBOX_TABLE.c


@dataclass(frozen=True, slots=True)
class Filters:
    """Which rows an operator means; an empty field does not filter."""

    statuses: tuple[str, ...] = ()
    account_id: str | None = None
    rule_id: str | None = None
    since: datetime | None = None  # decided at or after
    channel: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        """The filters as SQL conditions, all to hold."""
        conditions: list[ColumnElement[bool]] = []
        if self.statuses:
            conditions.append(outbox.status.in_(list(self.statuses)))
        if self.account_id is not None:
            conditions.append(outbox.account_id == self.account_id)
        if self.rule_id is not None:
            conditions.append(outbox.rule_id == self.rule_id)
        if self.since is not None:
            conditions.append(outbox.created_at >= self.since)
        if self.channel is not None:
            conditions.append(outbox.channel == self.channel)
        return conditions


def newest(session: Session, filters: Filters, limit: int) -> tuple[list[Outbox], int]:
    """The ``limit`` newest rows matching ``filters``, and how many more match beyond them.

    The rows come by id, newest first (ids grow as rows are decided). The
    count is asked for only when the page is full, in one COUNT query.
    """
    where = filters.where()
    query = select(Outbox).where(*where).order_by(desc(outbox.id)).limit(limit)
    rows = list(session.scalars(query))
    if len(rows) < limit:
        return rows, 0
    total = session.scalar(select(func.count()).select_from(OUTBOX_TABLE).where(*where)) or 0
    return rows, max(total - len(rows), 0)
