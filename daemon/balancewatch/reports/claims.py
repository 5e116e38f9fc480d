"""``report_run``: a report is claimed for (report, account, period) before anything is built.

The claim is an insert under a unique key that does nothing when the key is
taken, committed on its own: whichever instance (or restart) inserts the row
builds that report, nobody else does. The claim carries a lease; a claim
still ``claimed`` when its lease has passed belongs to an instance that died
while building it, and another takes it over with a compare-and-set on the
lease. The outcome (``sent`` with its outbox key, ``skipped``, ``failed``) is
written in the transaction that writes the outbox row, and only while the
claim is still this instance's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from balancewatch.reports.base import Period
from balancewatch.store.tables import REPORT_RUN_TABLE

CLAIMED, SENT, SKIPPED, FAILED = "claimed", "sent", "skipped", "failed"
FINAL = (SENT, SKIPPED, FAILED)
OPERATORS = "*"  # the account of an operators' report


def idem_key(report_id: str, account_id: str, period_key: str) -> str:
    """The outbox key of one report: ``report/<report>/<account>/<period>``."""
    return f"report/{report_id}/{account_id}/{period_key}"


def claim(
    conn: Connection,
    report_id: str,
    account_ids: Sequence[str],
    period: Period,
    fire: datetime,
    worker: str,
    now: datetime,
    lease: timedelta,
    *,
    retry_failed: bool = False,
) -> set[str]:
    """Claim (report, account, period) for each of ``account_ids``; return the ids now ``worker``'s.

    New keys are inserted; a claim whose lease has passed (and, with
    ``retry_failed``, a failed one) is taken over. Commit right after, before
    building anything: the row is what tells other instances to keep off.
    """
    runs = REPORT_RUN_TABLE.c
    if not account_ids:
        return set()
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    rows = [
        {
            "report_id": report_id,
            "account_id": account_id,
            "period_key": period.key,
            "timezone": period.timezone,
            "fire_at": fire,
            "status": CLAIMED,
            "claimed_by": worker,
            "lease_until": now + lease,
            "attempts": 1,
            "claimed_at": now,
        }
        for account_id in account_ids
    ]
    insert = (
        dialect.insert(REPORT_RUN_TABLE)
        .on_conflict_do_nothing(index_elements=[runs.report_id, runs.account_id, runs.period_key])
        .returning(runs.account_id)
    )
    ours = {r.account_id for r in conn.execute(insert, rows)}
    rest = [a for a in account_ids if a not in ours]
    if rest:
        ours |= take_over(conn, report_id, rest, period.key, worker, now, lease, retry_failed=retry_failed)
    return ours


def take_over(
    conn: Connection,
    report_id: str,
    account_ids: Sequence[str],
    period_key: str,
    worker: str,
    now: datetime,
    lease: timedelta,
    *,
    retry_failed: bool = False,
) -> set[str]:
    """Take over the claims among ``account_ids`` whose lease has passed (and failed ones, with
    ``retry_failed``): compare-and-set, so two instances never both get one. Returns the ids taken."""
    runs = REPORT_RUN_TABLE.c
    takeable = and_(runs.status == CLAIMED, runs.lease_until < now)
    if retry_failed:
        takeable = or_(takeable, runs.status == FAILED)
    result = conn.execute(
        update(REPORT_RUN_TABLE)
        .where(
            runs.report_id == report_id, runs.period_key == period_key, runs.account_id.in_(list(account_ids))
        )
        .where(takeable)
        .values(
            status=CLAIMED,
            claimed_by=worker,
            lease_until=now + lease,
            attempts=runs.attempts + 1,
            claimed_at=now,
            note=None,
        )
        .returning(runs.account_id)
    )
    return set(result.scalars())


@dataclass(frozen=True)
class ClaimOutcome:
    """How one claimed report ended: ``sent`` (with its outbox key), ``skipped`` or ``failed``."""

    account_id: str
    status: str
    idem_key: str | None = None
    note: str | None = None


def finish(
    conn: Connection,
    report_id: str,
    period_key: str,
    worker: str,
    outcomes: Iterable[ClaimOutcome],
    now: datetime,
) -> set[str]:
    """Record ``outcomes`` for the claims ``worker`` still holds; return the account ids recorded.

    Run it in the transaction that writes the outbox rows, and write rows only
    for the ids returned: a claim taken over meanwhile is left to its new holder.
    The claims are locked first (PostgreSQL), so a takeover waits for this commit.
    """
    runs = REPORT_RUN_TABLE.c
    outcomes = list(outcomes)
    if not outcomes:
        return set()
    held = (
        select(runs.id, runs.account_id)
        .where(runs.report_id == report_id, runs.period_key == period_key)
        .where(runs.account_id.in_([o.account_id for o in outcomes]))
        .where(runs.status == CLAIMED, runs.claimed_by == worker)
    )
    if conn.dialect.name == "postgresql":
        held = held.with_for_update()
    ids = {r.account_id: r.id for r in conn.execute(held)}
    values = [
        {"row_id": ids[o.account_id], "new_status": o.status, "new_key": o.idem_key, "new_note": o.note}
        for o in outcomes
        if o.account_id in ids
    ]
    if values:
        conn.execute(
            update(REPORT_RUN_TABLE)
            .where(runs.id == bindparam("row_id"))
            .values(
                status=bindparam("new_status"),
                idem_key=bindparam("new_key"),
                note=bindparam("new_note"),
                lease_until=None,
                finished_at=now,
            ),
            values,
        )
    return set(ids)


def release(
    conn: Connection,
    report_id: str,
    period_key: str,
    account_ids: Sequence[str],
    worker: str,
    note: str,
    now: datetime,
) -> None:
    """Mark ``worker``'s claims on ``account_ids`` failed with ``note`` (building them went wrong)."""
    finish(
        conn, report_id, period_key, worker, [ClaimOutcome(a, FAILED, None, note) for a in account_ids], now
    )


def expire(
    conn: Connection, report_id: str, period_key: str, account_ids: Sequence[str], worker: str, now: datetime
) -> None:
    """End ``worker``'s leases on ``account_ids``: any instance takes them over at its next run."""
    runs = REPORT_RUN_TABLE.c
    conn.execute(
        update(REPORT_RUN_TABLE)
        .where(
            runs.report_id == report_id, runs.period_key == period_key, runs.account_id.in_(list(account_ids))
        )
        .where(runs.status == CLAIMED, runs.claimed_by == worker)
        .values(lease_until=now)
    )


def unfinished(conn: Connection, report_id: str, period_key: str, zone: str) -> int:
    """How many claims of (report, period) in ``zone`` are still being built (by anyone)."""
    runs = REPORT_RUN_TABLE.c
    return int(
        conn.execute(
            select(func.count())
            .select_from(REPORT_RUN_TABLE)
            .where(runs.report_id == report_id, runs.period_key == period_key, runs.status == CLAIMED)
            .where(runs.timezone == zone)
        ).scalar_one()
    )


def finished(conn: Connection, report_id: str, period_key: str, account_ids: Sequence[str]) -> dict[str, Any]:
    """The claims among ``account_ids`` that are final (sent, skipped or failed): account id -> row."""
    runs = REPORT_RUN_TABLE.c
    if not account_ids:
        return {}
    rows = conn.execute(
        select(runs.account_id, runs.status, runs.idem_key, runs.note, runs.finished_at)
        .where(runs.report_id == report_id, runs.period_key == period_key)
        .where(runs.account_id.in_(list(account_ids)), runs.status.in_(FINAL))
    )
    return {r.account_id: r for r in rows}


@dataclass(frozen=True)
class LastSent:
    """The latest period of a report sent in one zone, and when."""

    zone: str
    period_key: str
    at: datetime
    count: int


def last_sent(conn: Connection, report_id: str) -> list[LastSent]:
    """Per zone, the latest period of ``report_id`` with a report sent: its key, when, and how many."""
    runs = REPORT_RUN_TABLE.c
    latest = (
        select(runs.timezone, func.max(runs.period_key).label("period_key"))
        .where(runs.report_id == report_id, runs.status == SENT)
        .group_by(runs.timezone)
        .subquery()
    )
    rows = conn.execute(
        select(runs.timezone, runs.period_key, func.max(runs.finished_at), func.count())
        .join(latest, and_(latest.c.timezone == runs.timezone, latest.c.period_key == runs.period_key))
        .where(runs.report_id == report_id, runs.status == SENT)
        .group_by(runs.timezone, runs.period_key)
        .order_by(runs.timezone)
    )
    return [LastSent(r[0], r[1], r[2], r[3]) for r in rows]
