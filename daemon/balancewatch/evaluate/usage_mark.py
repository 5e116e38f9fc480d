"""How far the usage figures have read the ledger (``usage_mark``), and the ids still missing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from balancewatch.store.tables import LEDGER_TABLE, USAGE_MARK_TABLE

NAME = "ledger"
# An id missing below the mark is read again at every refresh this long: an entry whose
# transaction stays open longer than that counts from the next full refresh.
GAP_PATIENCE = timedelta(hours=1)
MAX_GAPS = 10_000  # beyond: the oldest are dropped (the next full refresh counts them)


@dataclass(frozen=True, slots=True)
class Mark:
    """The last refresh: when, the last full one, the last id read, the ids missing below it."""

    marked_at: datetime
    full_at: datetime
    last_entry_id: int
    shape: str
    gaps: Mapping[int, datetime] = field(default_factory=dict)


def shape_of(windows: set[int], min_history: timedelta) -> str:
    """What the figures were computed for; a refresh for another shape starts over."""
    return json.dumps({"windows": sorted(windows), "min_history_s": min_history.total_seconds()})


def read_mark(conn: Connection) -> Mark | None:
    """The mark, or None before the first refresh of this schema."""
    row = conn.execute(select(USAGE_MARK_TABLE).where(USAGE_MARK_TABLE.c.name == NAME)).first()
    if row is None:
        return None
    gaps = {int(gap): datetime.fromisoformat(str(noticed)) for gap, noticed in row.gaps}
    return Mark(row.marked_at, row.full_at, int(row.last_entry_id), row.shape, gaps)


def write_mark(conn: Connection, mark: Mark) -> None:
    """Insert or replace the mark."""
    values = {
        "name": NAME,
        "marked_at": mark.marked_at,
        "full_at": mark.full_at,
        "last_entry_id": mark.last_entry_id,
        "shape": mark.shape,
        "gaps": [[gap, noticed.isoformat()] for gap, noticed in sorted(mark.gaps.items())],
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(USAGE_MARK_TABLE).values(values)
    update = {key: stmt.excluded[key] for key in values if key != "name"}
    conn.execute(stmt.on_conflict_do_update(index_elements=[USAGE_MARK_TABLE.c.name], set_=update))


def still_missing(conn: Connection, gaps: Mapping[int, datetime]) -> dict[int, datetime]:
    """The ``gaps`` that have no entry yet in this snapshot."""
    if not gaps:
        return {}
    query = select(LEDGER_TABLE.c.id).where(LEDGER_TABLE.c.id.in_(sorted(gaps)))
    present = set(conn.execute(query).scalars())
    return {gap: noticed for gap, noticed in gaps.items() if gap not in present}


def gaps_after(
    conn: Connection, low: int, high: int, kept: Mapping[int, datetime], now: datetime
) -> dict[int, datetime]:
    """``kept`` and every id in (low, high] with no entry in this snapshot (noticed ``now``),
    less those missing for longer than ``GAP_PATIENCE``; the ``MAX_GAPS`` newest at most.

    Only the ids that follow a hole are read (a window function finds them in the database):
    an hour's tens of thousands of ids cost Python nothing."""
    gaps = dict(kept)
    ids = select(
        LEDGER_TABLE.c.id, func.lag(LEDGER_TABLE.c.id).over(order_by=LEDGER_TABLE.c.id).label("before")
    ).where(LEDGER_TABLE.c.id > low, LEDGER_TABLE.c.id <= high)
    listed = ids.subquery("listed")
    before = func.coalesce(listed.c.before, low)
    after_holes = select(listed.c.id, before).where(listed.c.id - before > 1).order_by(listed.c.id)
    for entry_id, previous in conn.execute(after_holes).all():
        # A hole wider than MAX_GAPS (a large insert rolled back): only its top is waited for.
        gaps.update((missing, now) for missing in range(max(previous + 1, entry_id - MAX_GAPS), entry_id))
    fresh = sorted(gap for gap, noticed in gaps.items() if now - noticed < GAP_PATIENCE)
    return {gap: gaps[gap] for gap in fresh[-MAX_GAPS:]}
