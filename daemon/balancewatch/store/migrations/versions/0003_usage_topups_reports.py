"""usage summaries, top-ups, reports, outbox attachments, owner thresholds in columns

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

SCHEMA_VERSION 3. New tables: usage_summary, topup_request, report_run,
report_cursor. The outbox carries attachments. owner_preference keeps up to
three thresholds in threshold_1..3 instead of a JSON list, and ``remind``
becomes a boolean: the rows already there are carried over (the first three
thresholds; ``remind`` true where it held any text).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

TIME = sa.DateTime(timezone=True)
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    _usage_summary()
    _topup_request()
    _reports()
    op.add_column("outbox", sa.Column("attachments", sa.JSON(), nullable=False, server_default="[]"))
    _owner_thresholds_in_columns()


def _usage_summary() -> None:
    op.create_table(
        "usage_summary",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("usage_total", sa.BigInteger(), nullable=False),
        sa.Column("first_at", TIME, nullable=True),
        sa.Column("days_counted", sa.Float(), nullable=False),
        sa.Column("adu", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("computed_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "currency", "window_days"),
    )


def _topup_request() -> None:
    op.create_table(
        "topup_request",
        sa.Column("id", ROW_ID, nullable=False),
        sa.Column("idem_key", sa.String(255), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("hook_response", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idem_key"),
    )
    op.create_index("ix_topup_open", "topup_request", ["account_id", "currency", "status"])


def _reports() -> None:
    op.create_table(
        "report_run",
        sa.Column("id", ROW_ID, nullable=False),
        sa.Column("report_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("period_key", sa.String(32), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("fire_at", TIME, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=False),
        sa.Column("lease_until", TIME, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("idem_key", sa.String(255), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("claimed_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("report_id", "account_id", "period_key", name="uq_report_run"),
    )
    op.create_index("ix_report_run_open", "report_run", ["report_id", "period_key", "status"])
    op.create_table(
        "report_cursor",
        sa.Column("report_id", sa.String(64), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("processed_until", TIME, nullable=False),
        sa.Column("pending_fire", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("report_id", "timezone"),
    )


def _owner_thresholds_in_columns() -> None:
    """thresholds (JSON list) -> threshold_1..3; remind (text) -> a boolean, keeping each row's meaning."""
    # SQLite cannot drop a column or change its type in place: batch mode copies the table there.
    with op.batch_alter_table("owner_preference") as batch:
        batch.add_column(sa.Column("threshold_1", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("threshold_2", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("threshold_3", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("remind_on", sa.Boolean(), nullable=True))
    _carry_over_owner_settings()
    with op.batch_alter_table("owner_preference") as batch:
        batch.drop_column("thresholds")
        batch.drop_column("remind")
        batch.alter_column("remind_on", new_column_name="remind", existing_type=sa.Boolean(), nullable=False)


def _carry_over_owner_settings() -> None:
    prefs = sa.table(
        "owner_preference",
        sa.column("account_id", sa.String),
        sa.column("currency", sa.String),
        sa.column("thresholds", sa.JSON),
        sa.column("remind", sa.String),
        sa.column("threshold_1", sa.BigInteger),
        sa.column("threshold_2", sa.BigInteger),
        sa.column("threshold_3", sa.BigInteger),
        sa.column("remind_on", sa.Boolean),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(prefs.c.account_id, prefs.c.currency, prefs.c.thresholds, prefs.c.remind))
    for account_id, currency, thresholds, remind in rows.all():
        bind.execute(
            prefs.update()
            .where(prefs.c.account_id == account_id, prefs.c.currency == currency)
            .values(**_columns_for(thresholds), remind_on=bool(remind and remind.strip()))
        )


def _columns_for(thresholds: Any) -> dict[str, int | None]:
    """threshold_1..3 from a JSON list of minor-unit amounts: the first three, in their order."""
    values = [int(v) for v in thresholds or [] if isinstance(v, int | float) and not isinstance(v, bool)]
    values += [None] * 3  # type: ignore[list-item]
    return {f"threshold_{n}": values[n - 1] for n in (1, 2, 3)}


def downgrade() -> None:
    raise NotImplementedError("balancewatch migrations go forward only: restore the backup taken before")
