"""PostgreSQL's ``NOTIFY`` when balances change: the trigger ``db upgrade`` installs.

A statement-level trigger on ``balance`` (after INSERT or UPDATE) calls
``pg_notify(channel, '')``. PostgreSQL delivers a notification only once the
transaction commits, and folds identical ones of one transaction into one, so a
platform that writes ten thousand balances in a transaction costs one
notification, and the daemon's poll that follows finds every change committed.
The payload is empty: the daemon evaluates what changed since its watermark
(``alerts.cycle.poll``), the same query the timed poll runs.

A platform that prefers to announce changes itself runs ``NOTIFY <channel>``
after its commits (``database.listen: platform``) and needs no trigger.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, text

FUNCTION = "balancewatch_balance_changed"
TRIGGER = "balancewatch_balance_changed"
CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # as config's database.notify_channel checks it


def installed_channel(conn: Connection) -> str | None:
    """The channel the installed trigger notifies, or None when there is no trigger."""
    found = conn.execute(
        text(
            "SELECT pg_proc.prosrc FROM pg_trigger "
            "JOIN pg_proc ON pg_proc.oid = pg_trigger.tgfoid "
            "JOIN pg_class ON pg_class.oid = pg_trigger.tgrelid "
            "WHERE pg_trigger.tgname = :trigger AND pg_class.relname = 'balance' "
            "AND pg_class.relnamespace = to_regnamespace(current_schema())"
        ),
        {"trigger": TRIGGER},
    ).scalar()
    if found is None:
        return None
    match = re.search(r"pg_notify\('([a-z0-9_]+)'", str(found))
    return match.group(1) if match else None


def install(conn: Connection, channel: str) -> bool:
    """Make the trigger notify ``channel``; returns False when it already did (nothing written).

    Idempotent and safe inside ``db upgrade``'s transaction and lock."""
    if not CHANNEL.fullmatch(channel):  # it is written into SQL: never anything but a name
        raise ValueError(f"{channel!r} is not a notification channel name")
    if installed_channel(conn) == channel:
        return False
    conn.execute(
        text(
            f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$"
        )
    )
    conn.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER} ON balance"))
    conn.execute(
        text(
            f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE ON balance "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        )
    )
    return True


def remove(conn: Connection) -> bool:
    """Drop the trigger and its function; returns False when there was none."""
    had = installed_channel(conn) is not None
    conn.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER} ON balance"))
    conn.execute(text(f"DROP FUNCTION IF EXISTS {FUNCTION}()"))
    return had
