"""Retention (issue 18): the index the worker's retention pass finds expired messages by.

``ix_messages_finished``: finished messages (``finished_at`` set: sent, failed, canceled and
what delivery feedback makes of sent) in ``finished_at`` order, so a pass reads the oldest
few hundred rows instead of scanning the table (``ecs_service.worker.retention``).
Scheduled and queued messages (no ``finished_at``) are not in it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED = sa.text("finished_at IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_messages_finished", "messages", ["finished_at"], postgresql_where=FINISHED)


def downgrade() -> None:
    op.drop_index("ix_messages_finished", table_name="messages", postgresql_where=FINISHED)
