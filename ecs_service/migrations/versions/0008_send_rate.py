"""Send-rate pacing (issue 19): the token bucket every relay takes SES's send rate from.

``send_rate_buckets``: one row (``ses``) holding the tokens (recipients) left and when
they were last refilled; ``ecs_service.worker.send_rate`` refills and takes them in one
statement. UNLOGGED, like the api's request-rate buckets: its updates (several a second
while a backlog drains) write no WAL and their commits wait for no fsync; after a crash
PostgreSQL empties it, which only refills the bucket (at most one burst, a tenth of a
second's rate).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_rate_buckets",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_send_rate_buckets")),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("send_rate_buckets")
