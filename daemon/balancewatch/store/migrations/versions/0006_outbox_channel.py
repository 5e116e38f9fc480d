"""outbox channel

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-10

SCHEMA_VERSION 6: each outbox row names the channel that delivers it; the
rows already there were all email, and say so.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # The server default fills the existing rows, so the column can be NOT NULL at once.
    op.add_column("outbox", sa.Column("channel", sa.String(16), nullable=False, server_default="email"))


def downgrade() -> None:
    raise NotImplementedError("balancewatch migrations go forward only: restore the backup taken before")
