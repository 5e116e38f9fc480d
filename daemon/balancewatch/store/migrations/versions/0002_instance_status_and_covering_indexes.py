"""instance status, covering indexes for the sweep

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

SCHEMA_VERSION 2: the instance_status table (what each daemon runs, for
``balancewatch status`` and ``plan``); the sweep's fire query and the "is this
step fired?" probe answered from indexes alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "instance_status",
        sa.Column("instance", sa.String(128), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("heartbeat_at", TIME, nullable=False),
        sa.Column("live_digest", sa.String(64), nullable=False),
        sa.Column("live_rules", sa.Integer(), nullable=False),
        sa.Column("live_loaded_at", TIME, nullable=True),
        sa.Column("rule_files", sa.JSON(), nullable=False),
        sa.Column("reload_attempted_at", TIME, nullable=True),
        sa.Column("reload_ok", sa.Boolean(), nullable=True),
        sa.Column("reload_reason", sa.String(400), nullable=False),
        sa.Column("reload_error", sa.Text(), nullable=True),
        sa.Column("reloads", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("instance"),
    )
    # The covering index replaces the two-column one it extends.
    op.drop_index("ix_balance_currency_amount", table_name="balance")
    op.create_index("ix_balance_currency_amount_account", "balance", ["currency", "amount", "account_id"])
    op.create_index(
        "ix_alert_state_probe", "alert_state", ["rule_id", "account_id", "currency", "step", "status"]
    )


def downgrade() -> None:
    raise NotImplementedError("balancewatch migrations go forward only: restore the backup taken before")
