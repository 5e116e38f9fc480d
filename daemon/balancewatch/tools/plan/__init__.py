"""What an edit of the rules would do, read from the live database without writing to it.

Each rule id in the old set or the new one is *added*, *removed*, *changed* or
*unchanged*. For a rule whose edit can move alerts (enabled, accounts,
thresholds, re-arm band, reminders) two questions are answered against the
database as it is now:

- *start*: balances for which the new rule, with the stored alert state,
  decides a notification now. Those the old rule would send now as well are
  left out and only counted (``due_anyway``): they are due whatever the edit,
  the daemon simply has not polled since.
- *stop*: fired alert state that applies under the old rule and no longer
  under the new one: the rule is removed or disabled, the account no longer
  selected, its currency no longer covered, the step no longer in the ladder,
  or the balance is above the new re-arm point.

Alert state is keyed on rule id and step amount, so a new step or a new rule
starts with none: that is exactly what makes a balance start alerting.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
)

from balancewatch.config.sections import UsageSettings
from balancewatch.rules.compiled import CompiledRule
from balancewatch.tools.plan.changes import differences, moves_alerts
from balancewatch.tools.plan.model import DEFAULT_LIMIT, Change, Plan, RulePlan, Status
from balancewatch.tools.plan.starts import starts
from balancewatch.tools.plan.stops import stops

_DEFAULT_MIN_HISTORY = UsageSettings().min_history


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction that cannot write, rolled back at the end.

    PostgreSQL runs it READ ONLY at REPEATABLE READ, so every query sees the
    same snapshot; SQLite begins a plain (deferred) BEGIN and sets
    ``query_only`` on this connection while it is lent out.
    """
    options: dict[str, Any] = {"readonly": True}
    is_sqlite = engine.dialect.name == "sqlite"
    if engine.dialect.name == "postgresql":
        options |= {"postgresql_readonly": True, "isolation_level": "REPEATABLE READ"}
    with engine.connect().execution_options(**options) as conn:
        if is_sqlite:
            _sqlite_query_only(conn, on=True)
        try:
            yield conn
        finally:
            conn.rollback()
            if is_sqlite:
                _sqlite_query_only(conn, on=False)


def _sqlite_query_only(conn: Connection, *, on: bool) -> None:
    # On the driver connection, outside any transaction: the pooled connection
    # must be writable again once it goes back to the pool.
    conn.connection.driver_connection.execute(f"PRAGMA query_only = {int(on)}")  # type: ignore[union-attr]


def compare(
    conn: Connection,
    old: Sequence[CompiledRule],
    new: Sequence[CompiledRule],
    now: datetime,
    limit: int = DEFAULT_LIMIT,
    *,
    min_history: timedelta = _DEFAULT_MIN_HISTORY,
) -> Plan:
    """The plan for replacing ``old`` with ``new``, read through ``conn`` (which it never writes).

    ``min_history`` is the configured ``usage.min_history``: with it, a balance new since the last
    usage refresh is planned with the figures the daemon computes for it."""
    old_by_id = {r.id: r for r in old}
    new_by_id = {r.id: r for r in new}
    ids = sorted(old_by_id.keys() | new_by_id.keys())
    return Plan(
        tuple(rule_plan(conn, old_by_id.get(i), new_by_id.get(i), now, limit, min_history) for i in ids), now
    )


def rule_plan(
    conn: Connection,
    old: CompiledRule | None,
    new: CompiledRule | None,
    now: datetime,
    limit: int,
    min_history: timedelta,
) -> RulePlan:
    """The plan for one rule id; ``old`` or ``new`` is None where the id is absent."""
    rule = new or old
    assert rule is not None, "a rule id comes from one of the two sets"
    changes = differences(old, new)
    status = _status(old, new, changes)
    if status is Status.unchanged or not moves_alerts(old, new):
        return RulePlan(rule.id, status, changes, None, None)
    return RulePlan(
        rule.id,
        status,
        changes,
        starts(conn, old, new, now, limit, min_history),
        stops(conn, old, new, limit),
    )


def _status(old: CompiledRule | None, new: CompiledRule | None, changes: tuple[Change, ...]) -> Status:
    if old is None:
        return Status.added
    if new is None:
        return Status.removed
    return Status.changed if changes else Status.unchanged
