"""When a report is due: fire times in a timezone, misfires, coalescing, and how far each
(report, timezone) has been followed.

**Fire times.** A report's cron expression (Debian cron fields, as
``rules.reports.to_cron`` writes it) is read on the local wall clock of a
zone: ``cronsim`` lists the matching wall times on a naive clock, and zoneinfo
places each in the zone. A wall time that does not exist (clocks spring
forward over it) moves forward by the gap: 02:30 on 2026-03-29 in
Europe/Berlin is sent at 03:30 CEST. A wall time that happens twice (clocks
fall back) is sent at its first occurrence only. So every local day has its
fire time exactly once.

cronsim is not given the zone itself because its DST handling is Debian
cron's, not ours: a skipped 02:30 fires at 03:00 (the first minute after the
gap), and a schedule with a wildcard minute or hour fires the repeated hour
twice.

**Misfires and coalescing.** Of the fire times since a (report, zone) was
last followed, those more than ``reports.misfire_grace`` before now are
missed (logged, never sent); of the rest only the latest is sent.

**Cursors.** ``report_cursor`` keeps, per (report, zone), the time up to which
fire times have been dealt with, and a fire time begun but not finished
(``pending_fire``), which is finished whatever its age. A (report, zone)
seen for the first time starts at now for a report never seen before (what
was due before the daemon first ran it is not sent), and at ``now - grace``
(never before the report was first seen) for a zone new to a known report,
such as the timezone of a new account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim
from sqlalchemy import Connection, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from balancewatch.store.tables import REPORT_CURSOR_TABLE

CURSOR = REPORT_CURSOR_TABLE.c  # the columns of report_cursor

# Wider than any DST shift (2 h at most, at Troll station): wall times this far outside a
# window are listed too, since placing them in the zone may bring them inside it.
SLACK = timedelta(hours=3)
MISSED_LIMIT = 1000
TICK = timedelta(microseconds=1)


def place(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of local wall time ``wall`` (tz ignored) in ``zone``: first occurrence of a
    repeated time, and a time in a gap moved forward by the gap."""
    # fold=0 picks the offset in force before a change, which gives both rules above.
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def fire_times(
    cron: str, zone: str, after: datetime, until: datetime, limit: int | None = None
) -> list[datetime]:
    """The fire instants (UTC) of ``cron`` in ``zone`` with ``after < t <= until``, ascending.

    With ``limit``, listing stops once that many are found: the first ``limit``
    (give or take one when a gap reorders two of them). ``cron`` must be valid
    (``to_cron``'s output); cronsim raises CronSimError otherwise.
    """
    if until <= after:
        return []
    tz = ZoneInfo(zone)
    start = after.astimezone(tz).replace(tzinfo=None) - SLACK
    end = until.astimezone(tz).replace(tzinfo=None) + SLACK
    found: set[datetime] = set()
    for wall in CronSim(cron, start):  # naive wall times after start; stops after 50 years
        if wall > end:
            break
        instant = place(wall, tz)
        if after < instant <= until:
            found.add(instant)  # a set: two wall times around a gap can place on one instant
            if limit is not None and len(found) > limit:
                break
    return sorted(found)[:limit]


def next_fire_time(cron: str, zone: str, after: datetime) -> datetime | None:
    """The first fire instant of ``cron`` in ``zone`` after ``after``; None if there is none for years."""
    for span in (timedelta(hours=6), timedelta(days=2), timedelta(days=40), timedelta(days=400)):
        found = fire_times(cron, zone, after, after + span)
        if found:
            return found[0]
    found = fire_times(cron, zone, after, after + timedelta(days=9 * 366), limit=1)
    return found[0] if found else None


@dataclass(frozen=True)
class Due:
    """What to do about the fire times of one (report, zone) in ``(after, now]``.

    ``fire`` is the one to send (the latest within the grace), ``coalesced``
    the earlier ones within the grace folded into it, ``missed`` the first
    fire times beyond the grace (at most MISSED_LIMIT; ``more_missed`` when
    there were more).
    """

    fire: datetime | None
    coalesced: tuple[datetime, ...] = ()
    missed: tuple[datetime, ...] = ()
    more_missed: bool = False


def due(cron: str, zone: str, after: datetime, now: datetime, grace: timedelta) -> Due:
    """The fire times of ``cron`` in ``zone`` after ``after`` up to ``now``: sent, coalesced or missed."""
    cut = now - grace  # a fire time at cut is still sent; one before it is missed
    recent = fire_times(cron, zone, max(after, cut - TICK), now)
    missed = fire_times(cron, zone, after, cut - TICK, limit=MISSED_LIMIT) if after < cut - TICK else []
    return Due(
        fire=recent[-1] if recent else None,
        coalesced=tuple(recent[:-1]),
        missed=tuple(missed),
        more_missed=len(missed) >= MISSED_LIMIT,
    )


# --- cursors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """How far one (report, zone) has been followed."""

    report_id: str
    zone: str
    processed_until: datetime
    pending_fire: datetime | None


def _insert(conn: Connection) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(REPORT_CURSOR_TABLE)


def read_cursor(conn: Connection, report_id: str, zone: str) -> Cursor | None:
    """The cursor of (report, zone); None before it is started."""
    row = conn.execute(
        select(CURSOR.processed_until, CURSOR.pending_fire).where(
            CURSOR.report_id == report_id, CURSOR.timezone == zone
        )
    ).first()
    return None if row is None else Cursor(report_id, zone, row.processed_until, row.pending_fire)


def start_cursor(conn: Connection, report_id: str, zone: str, now: datetime, grace: timedelta) -> Cursor:
    """The cursor of (report, zone), created if missing (see the module's docstring for where it starts).

    An upsert that keeps a row another instance created meanwhile.
    """
    first_seen = conn.execute(
        select(func.min(CURSOR.created_at)).where(CURSOR.report_id == report_id)
    ).scalar()
    start = now if first_seen is None else max(first_seen, now - grace)
    conn.execute(
        _insert(conn)
        .values(report_id=report_id, timezone=zone, processed_until=start, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=[CURSOR.report_id, CURSOR.timezone])
    )
    cursor = read_cursor(conn, report_id, zone)
    assert cursor is not None
    return cursor


def begin(conn: Connection, seen: Cursor, now: datetime, fire: datetime | None) -> bool:
    """Mark every fire time up to ``now`` dealt with, and ``fire`` (if any) begun; compare-and-set
    on what ``seen`` read, so of instances looking at the same fire times one begins them.

    False when another instance moved the cursor first.
    """
    pending = seen.pending_fire
    same_pending = CURSOR.pending_fire.is_(None) if pending is None else CURSOR.pending_fire == pending
    result = conn.execute(
        update(REPORT_CURSOR_TABLE)
        .where(
            CURSOR.report_id == seen.report_id,
            CURSOR.timezone == seen.zone,
            CURSOR.processed_until == seen.processed_until,
            same_pending,
        )
        .values(processed_until=now, pending_fire=fire, updated_at=now)
    )
    return result.rowcount == 1


def finish(conn: Connection, report_id: str, zone: str, fire: datetime, now: datetime) -> None:
    """Mark ``fire`` finished (if it is still the one begun)."""
    conn.execute(
        update(REPORT_CURSOR_TABLE)
        .where(CURSOR.report_id == report_id, CURSOR.timezone == zone, CURSOR.pending_fire == fire)
        .values(pending_fire=None, updated_at=now)
    )


def idle(conn: Connection, report_id: str, now: datetime) -> None:
    """A disabled report: its fire times up to ``now`` pass unsent, and nothing stays begun."""
    conn.execute(
        update(REPORT_CURSOR_TABLE)
        .where(
            CURSOR.report_id == report_id, or_(CURSOR.processed_until < now, CURSOR.pending_fire.isnot(None))
        )
        .values(processed_until=now, pending_fire=None, updated_at=now)
    )


def cursors(conn: Connection, report_id: str) -> list[Cursor]:
    """Every cursor of ``report_id``, by zone."""
    rows = conn.execute(
        select(CURSOR.timezone, CURSOR.processed_until, CURSOR.pending_fire)
        .where(CURSOR.report_id == report_id)
        .order_by(CURSOR.timezone)
    )
    return [Cursor(report_id, r.timezone, r.processed_until, r.pending_fire) for r in rows]
