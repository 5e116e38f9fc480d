"""Instance status in the database: what each daemon runs, and how its last reload went.

A daemon publishes a row at start, after every reload attempt and on a
heartbeat (every ``HEARTBEAT``); ``balancewatch status`` and ``balancewatch
plan`` read them from any machine that reaches the database.

The rows also say which instances are alive, so work one of them claimed is
taken over at once when it is not (``dead``): it shut down (``stopped_at``),
its process is gone from this machine, or its heartbeat is older than
``STALE_AFTER``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, desc, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from balancewatch.core import procinfo
from balancewatch.store.tables import (
    INSTANCE_STATUS_TABLE,
    OUTBOX_TABLE,
    REPORT_RUN_TABLE,
)

HEARTBEAT = timedelta(seconds=5)
# Six missed heartbeats: an instance busy with a long sweep still beats in time (its
# heartbeat has a thread of its own), one that is gone is noticed within half a minute.
STALE_AFTER = timedelta(seconds=30)
# An instance silent this long is forgotten: `status` lists what runs, not every host that ever did.
PRUNE_AFTER = timedelta(days=7)


def publish(conn: Connection, instance: str, values: Mapping[str, Any]) -> None:
    """Set ``values`` (columns of InstanceStatus) in the row of ``instance``; other columns keep theirs.

    Without a row yet, one is inserted: ``values`` must then hold ``started_at``
    and ``heartbeat_at``, or IntegrityError is raised.
    """
    # An update first: an upsert checks NOT NULL columns on the row it would insert,
    # so a heartbeat (one column) could never take the ON CONFLICT path.
    if conn.execute(
        update(INSTANCE_STATUS_TABLE).where(INSTANCE_STATUS_TABLE.c.instance == instance).values(**values)
    ).rowcount:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # rule_files' default is the model's, not the column's: a Core insert must give it.
    stmt = dialect.insert(INSTANCE_STATUS_TABLE).values(instance=instance, **{"rule_files": {}, **values})
    stmt = stmt.on_conflict_do_update(
        index_elements=[INSTANCE_STATUS_TABLE.c.instance], set_={k: stmt.excluded[k] for k in values}
    )
    conn.execute(stmt)


def get(conn: Connection, instance: str) -> Any | None:
    """The row of ``instance``, or None."""
    return conn.execute(
        select(INSTANCE_STATUS_TABLE).where(INSTANCE_STATUS_TABLE.c.instance == instance)
    ).first()


def read_all(conn: Connection) -> list[Any]:
    """Every instance's row, most recent heartbeat first."""
    return list(
        conn.execute(select(INSTANCE_STATUS_TABLE).order_by(desc(INSTANCE_STATUS_TABLE.c.heartbeat_at)))
    )


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
        select(INSTANCE_STATUS_TABLE)
        .where(INSTANCE_STATUS_TABLE.c.heartbeat_at >= now - fresh, INSTANCE_STATUS_TABLE.c.live_digest != "")
        .order_by(desc(INSTANCE_STATUS_TABLE.c.live_loaded_at))
    ).all()
    if not rows:
        return None
    row = rows[0]
    return RulesInEffect(row.instance, row.live_digest, dict(row.rule_files or {}), row.live_loaded_at)


def dead(conn: Connection, names: Sequence[str], now: datetime, stale_after: timedelta | None) -> set[str]:
    """The instances among ``names`` known not to be running: stopped, gone from this machine,
    or (with ``stale_after``) silent longer than that before ``now``.

    An instance with no row is not judged (its claims run out with their lease).
    """
    if not names:
        return set()
    rows = conn.execute(
        select(
            INSTANCE_STATUS_TABLE.c.instance,
            INSTANCE_STATUS_TABLE.c.heartbeat_at,
            INSTANCE_STATUS_TABLE.c.stopped_at,
            INSTANCE_STATUS_TABLE.c.process,
        ).where(INSTANCE_STATUS_TABLE.c.instance.in_(list(names)))
    )
    return {
        row.instance
        for row in rows
        if row.stopped_at is not None
        or procinfo.gone(row.process)
        or (stale_after is not None and row.heartbeat_at < now - stale_after)
    }


def report_claim_holders(conn: Connection, worker: str) -> list[str]:
    """The other instances that hold report claims now."""
    query = (
        select(REPORT_RUN_TABLE.c.claimed_by)
        .distinct()
        .where(REPORT_RUN_TABLE.c.status == "claimed", REPORT_RUN_TABLE.c.claimed_by != worker)
    )
    return [name for name in conn.execute(query).scalars() if name]


def expire_report_claims(conn: Connection, names: Sequence[str], now: datetime) -> int:
    """End the leases of the report claims ``names`` hold, so any instance takes them over at its
    next report run; returns how many."""
    if not names:
        return 0
    return conn.execute(
        update(REPORT_RUN_TABLE)
        .where(
            REPORT_RUN_TABLE.c.status == "claimed",
            REPORT_RUN_TABLE.c.claimed_by.in_(list(names)),
            REPORT_RUN_TABLE.c.lease_until > now,
        )
        .values(lease_until=now)
    ).rowcount


def prune(conn: Connection, now: datetime, older_than: timedelta = PRUNE_AFTER) -> list[str]:
    """Delete the rows of instances whose last heartbeat is older than ``older_than``; return their names.

    Anything such an instance still claims has long outlived its lease: nothing needs its row.
    """
    gone = [
        name
        for name in conn.execute(
            select(INSTANCE_STATUS_TABLE.c.instance).where(
                INSTANCE_STATUS_TABLE.c.heartbeat_at < now - older_than
            )
        ).scalars()
    ]
    if gone:
        conn.execute(delete(INSTANCE_STATUS_TABLE).where(INSTANCE_STATUS_TABLE.c.instance.in_(gone)))
    return gone


@dataclass(frozen=True)
class MailCounts:
    """The outbox as an operator sees it: mail not yet out, mail that needs a person."""

    pending: int  # waiting to be rendered or sent, or being sent
    parked: int  # refused for good or given up on: `balancewatch outbox list --status parked`
    oldest_pending: datetime | None  # when the oldest mail still waiting was decided


def mail_counts(conn: Connection) -> MailCounts:
    """Count the outbox's waiting (queued, pending, sending) and parked rows (one grouped query on
    ``ix_outbox_due``)."""
    rows = conn.execute(
        select(OUTBOX_TABLE.c.status, func.count(), func.min(OUTBOX_TABLE.c.created_at))
        .where(OUTBOX_TABLE.c.status.in_(("queued", "pending", "sending", "parked")))
        .group_by(OUTBOX_TABLE.c.status)
    ).all()
    waiting = [row for row in rows if row[0] != "parked"]
    oldest = min((row[2] for row in waiting if row[2] is not None), default=None)
    return MailCounts(
        pending=sum(row[1] for row in waiting),
        parked=sum(row[1] for row in rows if row[0] == "parked"),
        oldest_pending=oldest,
    )
