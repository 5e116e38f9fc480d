"""incremental usage

Revision ID: 0007
Revises: 0006
Create Date: 2027-02-01

SCHEMA_VERSION 7: average daily usage is kept up to date from the ledger
entries written since the last refresh. ``usage_member`` holds each account's
own usage in each window, ``usage_mark`` how far the ledger was read; an index
on ``ledger_entry.occurred_at`` finds the entries that leave the window as it
moves.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_member",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "currency", "window_days"),
    )
    op.create_table(
        "usage_mark",
        sa.Column("name", sa.String(16), nullable=False),
        sa.Column("marked_at", TIME, nullable=False),
        sa.Column("full_at", TIME, nullable=False),
        sa.Column("last_entry_id", sa.BigInteger(), nullable=False),
        sa.Column("shape", sa.String(200), nullable=False),
        sa.Column("gaps", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_ledger_occurred_at", "ledger_entry", ["occurred_at"])


def downgrade() -> None:
    raise NotImplementedError("balancewatch migrations go forward only: restore the backup taken before")
