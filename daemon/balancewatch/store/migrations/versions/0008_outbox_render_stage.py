"""outbox render stage

Revision ID: 0008
Revises: 0007
Create Date: 2027-02-15

SCHEMA_VERSION 8: an alert's message is rendered after its decision commits,
not inside it. A decided row waits as ``queued`` with the ``template`` to
render and its ``context`` (JSON, render/packed.py); the render stage writes
the message and makes it ``pending``. Rows already there are rendered.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("template", sa.String(255), nullable=True))
    op.add_column("outbox", sa.Column("context", sa.Text(), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("balancewatch migrations go forward only: restore the backup taken before")
