"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27

The tables of SCHEMA_VERSION 1: accounts, balances, the ledger, owner
preferences (thresholds as a JSON list, ``remind`` as text), alert state, the
outbox and balancewatch_meta.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# timestamptz on PostgreSQL, DATETIME (naive UTC text) on SQLite.
TIME = sa.DateTime(timezone=True)
# SQLite autoincrements only an INTEGER PRIMARY KEY (the rowid alias).
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Data-only: the first schema, one create_table per table as it shipped, long by nature.
    op.create_table(
        "account",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner_email", sa.String(320), nullable=False),
        sa.Column("billing", sa.String(16), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("locale", sa.String(32), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["parent_id"], ["account.id"]),
    )
    op.create_index("ix_account_parent_id", "account", ["parent_id"])

    op.create_table(
        "alert_state",
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("reminders_sent", sa.Integer(), nullable=False),
        sa.Column("fired_at", TIME, nullable=True),
        sa.Column("last_sent_at", TIME, nullable=True),
        sa.Column("next_reminder_at", TIME, nullable=True),
        sa.Column("rearmed_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("rule_id", "account_id", "currency", "step"),
    )
    op.create_index("ix_alert_state_reminder", "alert_state", ["next_reminder_at"])

    op.create_table(
        "balancewatch_meta",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(400), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )

    op.create_table(
        "outbox",
        sa.Column("id", ROW_ID, nullable=False),
        sa.Column("idem_key", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=True),
        sa.Column("account_id", sa.String(64), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("sender", sa.String(400), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("lease_until", TIME, nullable=True),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("sent_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idem_key"),
    )
    op.create_index("ix_outbox_account_id", "outbox", ["account_id"])
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])

    op.create_table(
        "balance",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "currency"),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"]),
    )
    op.create_index("ix_balance_currency_amount", "balance", ["currency", "amount"])
    op.create_index("ix_balance_updated_at", "balance", ["updated_at"])

    op.create_table(
        "ledger_entry",
        sa.Column("id", ROW_ID, nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("service", sa.String(32), nullable=True),
        sa.Column("quantity", sa.BigInteger(), nullable=True),
        sa.Column("occurred_at", TIME, nullable=False),
        sa.Column("reference", sa.String(128), nullable=True),
        sa.Column("balance_after", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "reference", name="uq_ledger_reference"),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"]),
    )
    op.create_index("ix_ledger_account_time", "ledger_entry", ["account_id", "currency", "occurred_at"])

    op.create_table(
        "owner_preference",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("remind", sa.String(16), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "currency"),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"]),
    )


def downgrade() -> None:
    raise NotImplementedError("balancewatch migrations go forward only: restore the backup taken before")
