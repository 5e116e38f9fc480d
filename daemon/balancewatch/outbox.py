"""The outbox: every notification decided, once, and how its delivery went.

A row is inserted in the same transaction as the state change that decided
it, under a unique idempotency key; a second decision of the same thing
fails on that key instead of sending twice. Delivery claims rows with a
lease (compare-and-set; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so any
instance may die at any time: an expired lease makes the row claimable again.

Statuses: ``pending`` (waiting, maybe after failed attempts), ``sending``
(claimed under a lease), ``sent`` (every recipient has it), ``parked`` (done,
and at least one recipient refused for good: the reason is in ``last_error``
and in that recipient's entry of ``deliveries``; never retried, never dropped).

Outcomes are kept per recipient in ``deliveries``, because an SMTP server
answers per recipient: one may be greylisted (tried again later, alone), one
refused for good (parked), the others delivered; a message is done when every
recipient is. A claim is also taken over at once from an instance known to
have died or stopped (``dead``), not only once its lease has run out.

An operator reads the outbox through ``Filters`` and ``newest``, and puts
parked recipients back in line with ``requeue_refs`` and ``requeue_parked``:
only parked rows are touched, so a row a daemon is sending never changes
under it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, desc, func, insert, or_, select, update
from sqlmodel import Session

from balancewatch.config import Settings
from balancewatch.store.tables import Outbox

T = Outbox.__table__  # type: ignore[attr-defined]
C = T.c

PENDING, SENDING, SENT, PARKED = "pending", "sending", "sent", "parked"
# A recipient's own status in ``deliveries``: PENDING (tried, to be tried again), SENT or PARKED.


@dataclass(frozen=True, slots=True)
class Attachment:
    """A text file sent with a message (a report's CSV, say)."""

    filename: str
    content_type: str
    content: str


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A rendered notification ready to be recorded."""

    idem_key: str
    kind: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str | None
    rule_id: str | None = None
    account_id: str | None = None
    currency: str | None = None
    step: int | None = None
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class Claimed:
    """An outbox row claimed for delivery."""

    id: int
    idem_key: str
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str | None
    attempts: int
    created_at: datetime
    attachments: tuple[Attachment, ...] = ()
    deliveries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def due_recipients(self) -> tuple[str, ...]:
        """The recipients still to be sent to: neither delivered nor parked."""
        return tuple(
            r for r in self.recipients if self.deliveries.get(r, {}).get("status") not in (SENT, PARKED)
        )


@dataclass(frozen=True, slots=True)
class RowUpdate:
    """What one delivery attempt leaves in a claimed row (``deliver.outcome.settle`` makes it)."""

    status: str
    deliveries: Mapping[str, Mapping[str, Any]]
    next_attempt_at: datetime | None = None  # for PENDING: when to try the due recipients again
    last_error: str | None = None
    sent_at: datetime | None = None  # set when some recipient got it in this attempt


def unique_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """``addresses`` stripped, without blanks or repeats; ``A@X.example`` repeats ``a@x.example``.

    Mail systems treat addresses without regard to case in practice, so the
    owner's address written in other capitals (in preferences, or a rule)
    would otherwise get the same email twice. The first spelling is kept.
    """
    seen: dict[str, str] = {}
    for address in addresses:
        text = address.strip()
        if text and text.casefold() not in seen:
            seen[text.casefold()] = text
    return tuple(seen.values())


def message_id(idem_key: str, domain: str) -> str:
    """A Message-ID derived from the idempotency key: a duplicate delivery is detectable."""
    digest = hashlib.sha256(idem_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def add(conn: Connection, messages: Sequence[NewMessage], now: datetime, domain: str) -> None:
    """Insert ``messages`` as pending; raises IntegrityError if a key was already decided."""
    if not messages:
        return
    rows = []
    for m in messages:
        row: dict[str, Any] = asdict(m)
        row["recipients"] = list(unique_addresses(m.recipients))
        row["deliveries"] = {}
        row["attachments"] = [asdict(a) for a in m.attachments]
        row.update(
            message_id=message_id(m.idem_key, domain),
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        rows.append(row)
    conn.execute(insert(T), rows)


def _due(now: datetime, dead: Collection[str] = ()) -> Any:
    taken_over = C.lease_until < now
    if dead:
        taken_over = or_(taken_over, C.claimed_by.in_(list(dead)))
    return or_(and_(C.status == PENDING, C.next_attempt_at <= now), and_(C.status == SENDING, taken_over))


def claim(
    conn: Connection,
    worker: str,
    now: datetime,
    limit: int,
    lease: timedelta,
    key: str | None = None,
    dead: Collection[str] = (),
) -> list[Claimed]:
    """Claim up to ``limit`` due rows (or just the row of ``key``) for ``worker`` until ``now + lease``.

    Due: pending rows whose next attempt has come, and rows still claimed by
    another worker whose lease has run out or which is in ``dead`` (known to
    have died or stopped). The ids are picked first (locking them with ``SKIP
    LOCKED`` on PostgreSQL, so concurrent workers take different rows without
    waiting), then updated only where still due: a row claimed meanwhile is
    not handed out twice. Picking in a statement of its own keeps ``limit``
    exact; as a subquery of the UPDATE, PostgreSQL may scan it again and claim
    far more rows.
    """
    ids = select(C.id).where(_due(now, dead)).order_by(C.id).limit(limit)
    if key is not None:
        ids = ids.where(C.idem_key == key)
    if conn.dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    picked = list(conn.execute(ids).scalars())
    if not picked:
        return []
    stmt = (
        update(T)
        .where(C.id.in_(picked), _due(now, dead))
        .values(status=SENDING, claimed_by=worker, lease_until=now + lease, attempts=C.attempts + 1)
        .returning(
            C.id,
            C.idem_key,
            C.message_id,
            C.sender,
            C.recipients,
            C.subject,
            C.text,
            C.html,
            C.attempts,
            C.created_at,
            C.attachments,
            C.deliveries,
        )
    )
    rows = [
        Claimed(
            r.id,
            r.idem_key,
            r.message_id,
            r.sender,
            tuple(r.recipients),
            r.subject,
            r.text,
            r.html,
            r.attempts,
            r.created_at,
            tuple(Attachment(**a) for a in r.attachments or ()),
            dict(r.deliveries or {}),
        )
        for r in conn.execute(stmt)
    ]
    return sorted(rows, key=lambda c: c.id)


def claimers(conn: Connection, worker: str) -> list[str]:
    """The other workers that hold claimed rows now."""
    query = select(C.claimed_by).distinct().where(C.status == SENDING, C.claimed_by != worker)
    return [name for name in conn.execute(query).scalars() if name]


def select_by_key(key: str) -> Any:
    return select(T).where(C.idem_key == key)


def _mine(row_id: int, worker: str) -> Any:
    return and_(C.id == row_id, C.status == SENDING, C.claimed_by == worker)


def renew(conn: Connection, row_ids: Sequence[int], worker: str, until: datetime) -> set[int]:
    """Extend ``worker``'s lease on ``row_ids`` to ``until``; return the ids it still holds."""
    if not row_ids:
        return set()
    result = conn.execute(
        update(T)
        .where(C.id.in_(list(row_ids)), C.status == SENDING, C.claimed_by == worker)
        .values(lease_until=until)
        .returning(C.id)
    )
    return set(result.scalars())


def record(conn: Connection, row_id: int, worker: str, outcome: RowUpdate) -> bool:
    """Write what an attempt left in the row; False if ``worker`` lost its claim meanwhile."""
    values: dict[str, Any] = {
        "status": outcome.status,
        "deliveries": {address: dict(entry) for address, entry in outcome.deliveries.items()},
        "lease_until": None,
        "last_error": outcome.last_error,
    }
    if outcome.next_attempt_at is not None:
        values["next_attempt_at"] = outcome.next_attempt_at
    if outcome.sent_at is not None:
        values["sent_at"] = outcome.sent_at
    return conn.execute(update(T).where(_mine(row_id, worker)).values(**values)).rowcount == 1


def release(conn: Connection, worker: str, row_ids: Sequence[int] | None = None, *, attempted: bool) -> int:
    """Hand ``worker``'s claimed rows (``row_ids``, or all it holds) back as pending, due at once.

    ``attempted`` False: they were never sent, so the claim does not count
    as an attempt. Returns how many rows were released.
    """
    where = and_(C.status == SENDING, C.claimed_by == worker)
    if row_ids is not None:
        if not row_ids:
            return 0
        where = and_(where, C.id.in_(list(row_ids)))
    values: dict[str, Any] = {"status": PENDING, "lease_until": None, "claimed_by": None}
    if not attempted:
        values["attempts"] = C.attempts - 1
    return conn.execute(update(T).where(where).values(**values)).rowcount


def backoff(attempts: int, initial: timedelta, ceiling: timedelta, row_id: int = 0) -> timedelta:
    """The delay before attempt ``attempts + 1``: ``initial`` doubled per attempt, never above ``ceiling``.

    Up to 10% is taken off, derived from the row id, so many rows failing
    together do not all retry in the same second, yet the delay stays
    reproducible. Any number of attempts works (no overflow).
    """
    doublings = min(max(attempts - 1, 0), 64)
    seconds = min(initial.total_seconds() * 2.0**doublings, ceiling.total_seconds())
    spread = (hashlib.sha256(f"{row_id}:{attempts}".encode()).digest()[0] / 255) * 0.1
    return timedelta(seconds=seconds * (1 - spread))


# --- what an operator reads and re-queues ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """Which rows an operator means; an empty field does not filter."""

    statuses: tuple[str, ...] = ()
    account_id: str | None = None
    rule_id: str | None = None
    since: datetime | None = None  # decided at or after

    def where(self) -> list[Any]:
        """The filters as SQL conditions, all to hold."""
        conditions: list[Any] = []
        if self.statuses:
            conditions.append(C.status.in_(list(self.statuses)))
        if self.account_id is not None:
            conditions.append(C.account_id == self.account_id)
        if self.rule_id is not None:
            conditions.append(C.rule_id == self.rule_id)
        if self.since is not None:
            conditions.append(C.created_at >= self.since)
        return conditions


def newest(session: Session, filters: Filters, limit: int) -> tuple[list[Outbox], int]:
    """The ``limit`` newest rows matching ``filters``, and how many more match beyond them.

    The rows come by id, newest first (ids grow as rows are decided). The
    count is asked for only when the page is full, in one COUNT query.
    """
    where = filters.where()
    query = select(Outbox).where(*where).order_by(desc(Outbox.id)).limit(limit)  # type: ignore[arg-type]
    rows: list[Outbox] = list(session.exec(query).scalars())  # type: ignore[call-overload]
    if len(rows) < limit:
        return rows, 0
    total = session.exec(select(func.count()).select_from(T).where(*where)).scalar_one()  # type: ignore[call-overload]
    return rows, max(int(total) - len(rows), 0)


def give_up_from(
    created_at: datetime, deliveries: Mapping[str, Mapping[str, Any]], due: Iterable[str]
) -> datetime:
    """When the give-up window of the ``due`` recipients began: the decision, or for a recipient
    re-queued by hand (``requeued_at`` in its entry) that moment; the earliest of them counts."""
    starts = []
    for address in due:
        requeued = deliveries.get(address, {}).get("requeued_at")
        starts.append(datetime.fromisoformat(requeued) if requeued else created_at)
    return min(starts, default=created_at)


@dataclass(frozen=True, slots=True)
class Requeued:
    """A parked row put back in line: the recipients to send to again, and those who have it."""

    id: int
    idem_key: str
    recipients: tuple[str, ...]
    delivered: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NotRequeued:
    """A row asked for that was left as it was, and why (``is sent; nothing to retry``)."""

    ref: str
    reason: str


_LEFT_AS_IS = {
    SENT: "is sent; nothing to retry",
    PENDING: "is pending: its delivery is still under way; nothing to retry",
    SENDING: "is being sent now; nothing to retry",
}


def requeue_refs(
    conn: Connection, refs: Sequence[str], now: datetime
) -> tuple[list[Requeued], list[NotRequeued]]:
    """Re-queue the parked rows named by ``refs`` (ids or idempotency keys), in the caller's
    transaction. The rows left as they were (not parked, not found) come back with the reason;
    a row named twice is re-queued once."""
    ids = [int(ref) for ref in refs if _is_id(ref)]
    named = select(*_REQUEUE_COLUMNS).where(or_(C.id.in_(ids), C.idem_key.in_(list(refs))))
    rows = conn.execute(_lock(conn, named)).all()
    done: list[Requeued] = []
    left: list[NotRequeued] = []
    seen: set[int] = set()
    for ref in refs:
        row = _named(rows, ref)
        if row is None:
            shown = f"#{ref}" if _is_id(ref) else repr(ref)
            left.append(NotRequeued(shown, "is not in the outbox; `balancewatch outbox list` shows the ids"))
        elif row.id in seen:
            continue
        elif row.status != PARKED:
            left.append(NotRequeued(f"#{row.id}", _LEFT_AS_IS.get(row.status, f"is {row.status}")))
        else:
            _requeue_one(conn, row, now, done, left)
        if row is not None:
            seen.add(row.id)
    return done, left


def requeue_parked(
    conn: Connection, filters: Filters, now: datetime
) -> tuple[list[Requeued], list[NotRequeued]]:
    """Re-queue every parked row matching ``filters`` (whatever statuses it names), oldest first,
    in the caller's transaction; the rows left as they were come back with the reason."""
    parked = replace(filters, statuses=(PARKED,))
    done: list[Requeued] = []
    left: list[NotRequeued] = []
    for row in conn.execute(_lock(conn, select(*_REQUEUE_COLUMNS).where(*parked.where()))).all():
        _requeue_one(conn, row, now, done, left)
    return done, left


_REQUEUE_COLUMNS = (C.id, C.idem_key, C.status, C.recipients, C.deliveries)


def _is_id(ref: str) -> bool:
    return ref.isdigit() and len(ref) < 19  # a row id fits in 64 bits; a longer number is a key


def _named(rows: Sequence[Any], ref: str) -> Any:
    """The row ``ref`` names: by id first, as ``outbox show`` reads it, else by key."""
    if _is_id(ref):
        row = next((row for row in rows if row.id == int(ref)), None)
        if row is not None:
            return row
    return next((row for row in rows if row.idem_key == ref), None)


def _lock(conn: Connection, query: Any) -> Any:
    """``query`` in id order, its rows locked on PostgreSQL: a concurrent retry of the same rows
    waits, then finds them no longer parked. Parked rows are never claimed, so no daemon waits."""
    query = query.order_by(C.id)
    return query.with_for_update() if conn.dialect.name == "postgresql" else query


def _requeue_one(
    conn: Connection, row: Any, now: datetime, done: list[Requeued], left: list[NotRequeued]
) -> None:
    deliveries: dict[str, dict[str, Any]] = {a: dict(e) for a, e in (row.deliveries or {}).items()}
    parked = [a for a in row.recipients if deliveries.get(a, {}).get("status") == PARKED]
    if not parked:
        left.append(NotRequeued(f"#{row.id}", "is parked with no recipient refused; nothing to retry"))
        return
    for address in parked:
        # A fresh start: no tries counted and a new give-up window (see give_up_from); the last
        # attempt's time and error stay, as history.
        deliveries[address].update(status=PENDING, attempts=0, requeued_at=now.isoformat())
    # Compare-and-set on ``parked``: a daemon never holds a parked row, and a concurrent retry of
    # the same row finds it pending and leaves it. ``attempts`` restarts so backoff does too.
    changed = conn.execute(
        update(T)
        .where(C.id == row.id, C.status == PARKED)
        .values(
            status=PENDING,
            deliveries=deliveries,
            attempts=0,
            next_attempt_at=now,
            lease_until=None,
        )
    ).rowcount
    if changed != 1:
        left.append(NotRequeued(f"#{row.id}", "changed while being re-queued; nothing to retry"))
        return
    delivered = tuple(a for a in row.recipients if deliveries.get(a, {}).get("status") == SENT)
    done.append(Requeued(row.id, row.idem_key, tuple(parked), delivered))


def message_domain(settings: Settings) -> str:
    """The right-hand side of Message-IDs: configured, else the sender's domain."""
    if settings.delivery.message_id_domain:
        return settings.delivery.message_id_domain
    sender = settings.delivery.sender
    domain = sender.rsplit("@", 1)[-1].strip(" >") if "@" in sender else ""
    return domain or "balancewatch.invalid"
