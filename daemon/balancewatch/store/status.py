"""Instance status in the database: what each daemon runs, and how its last reload went.

A daemon publishes a row at start, after every reload attempt and on a
heartbeat; ``balancewatch status`` and ``balancewatch plan`` read them from
any machine that reaches the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, desc, select, update
from sqlalchemy.dialects import postgresql, sqlite

from balancewatch.store.tables import InstanceStatus

T = InstanceStatus.__table__  # type: ignore[attr-defined]
C = T.c


def publish(conn: Connection, instance: str, values: Mapping[str, Any]) -> None:
    """Set ``values`` (columns of InstanceStatus) in the row of ``instance``; other columns keep theirs.

    Without a row yet, one is inserted: ``values`` must then hold ``started_at``
    and ``heartbeat_at``, or IntegrityError is raised.
    """
    # An update first: an upsert checks NOT NULL columns on the row it would insert,
    # so a heartbeat (one column) could never take the ON CONFLICT path.
    if conn.execute(update(T).where(C.instance == instance).values(**values)).rowcount:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # rule_files' default is the model's, not the column's: a Core insert must give it.
    stmt = dialect.insert(T).values(instance=instance, **{"rule_files": {}, **values})
    stmt = stmt.on_conflict_do_update(index_elements=[C.instance], set_={k: stmt.excluded[k] for k in values})
    conn.execute(stmt)


def read_all(conn: Connection) -> list[Any]:
    """Every instance's row, most recent heartbeat first."""
    return list(conn.execute(select(T).order_by(desc(C.heartbeat_at))))


@dataclass(frozen=True)
class RulesInEffect:
    """The rule files a running instance loaded last."""

    instance: str
    digest: str
    files: Mapping[str, str]
    loaded_at: datetime | None


def rules_in_effect(
    conn: Connection, now: datetime, fresh: timedelta = timedelta(minutes=10)
) -> RulesInEffect | None:
    """The set most recently loaded by an instance whose heartbeat is within ``fresh`` of ``now``.

    None when no instance has reported lately (nothing is running, or it never started).
    """
    rows: Sequence[Any] = conn.execute(
        select(T).where(C.heartbeat_at >= now - fresh, C.live_digest != "").order_by(desc(C.live_loaded_at))
    ).all()
    if not rows:
        return None
    row = rows[0]
    return RulesInEffect(row.instance, row.live_digest, dict(row.rule_files or {}), row.live_loaded_at)
