"""instance version and last poll

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

SCHEMA_VERSION 5: each instance records the balancewatch version it runs and
when its last poll of balances ended.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("instance_status", sa.Column("version", sa.String(40), nullable=True))
    op.add_column("instance_status", sa.Column("last_poll_at", TIME, nullable=True))


def downgrade() -> None:
    raise NotImplementedError("balancewatch migrations go forward only: restore the backup taken before")
