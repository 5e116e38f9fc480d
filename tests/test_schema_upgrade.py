"""`db upgrade` brings a database written by an older version up to date, keeping its rows."""

from __future__ import annotations

import json

from sqlalchemy import Engine, inspect, text

from balancewatch.store.db import upgrade


def test_upgrade_adds_a_column_an_older_version_did_not_have_and_keeps_the_rows(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE outbox DROP COLUMN attachments"))
        conn.execute(
            text(
                "INSERT INTO outbox (idem_key, message_id, kind, sender, recipients, subject, text, status, "
                "attempts, next_attempt_at, created_at) "
                "VALUES ('k', '<m@x>', 'alert', 's', '[]', 'old', 't', 'sent', 1, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    assert "attachments" not in {c["name"] for c in inspect(engine).get_columns("outbox")}

    upgrade(engine)

    assert "attachments" in {c["name"] for c in inspect(engine).get_columns("outbox")}
    with engine.connect() as conn:
        subject, attachments = conn.execute(text("SELECT subject, attachments FROM outbox")).one()
    # SQLite hands JSON back as text to a raw query, PostgreSQL as a list.
    assert (subject, json.loads(attachments) if isinstance(attachments, str) else attachments) == ("old", [])


def test_upgrade_adds_an_index_an_older_version_did_not_have_to_an_existing_table(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_report_run_claimed"))
    assert "ix_report_run_claimed" not in {i["name"] for i in inspect(engine).get_indexes("report_run")}
    upgrade(engine)
    assert "ix_report_run_claimed" in {i["name"] for i in inspect(engine).get_indexes("report_run")}
