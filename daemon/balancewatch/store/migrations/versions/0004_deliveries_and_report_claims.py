"""per-recipient deliveries, instance stop and process, report claims index

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

SCHEMA_VERSION 4: the outbox records how each recipient fared; an instance
records when it stopped and which process it is, so another can take over at
once; the claims being built are found from a partial index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("outbox", sa.Column("deliveries", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("instance_status", sa.Column("stopped_at", TIME, nullable=True))
    op.add_column("instance_status", sa.Column("process", sa.String(200), nullable=True))
    op.create_index(
        "ix_report_run_claimed",
        "report_run",
        ["claimed_by"],
        postgresql_where=sa.text("status = 'claimed'"),
        sqlite_where=sa.text("status = 'claimed'"),
    )


def downgrade() -> None:
    raise NotImplementedError("balancewatch migrations go forward only: restore the backup taken before")
