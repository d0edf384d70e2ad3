"""Fair relay (issue 13): an index for the relay's in-flight count.

The relay keeps at most RELAY_MAX_IN_FLIGHT tasks queued and not finished, so it counts,
before each claim, the rows ``queued`` within the last few minutes. Without an index that
count reads the whole table (10 ms at 50,000 rows, growing with every message ever
sent); this partial index holds only the queued rows, a few dozen, and makes it a range
scan (0.05 ms). The fair claim itself needs no new index: it ranks every due row, read
through ``ix_messages_due`` or a sequential scan, whichever the planner finds cheaper.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IN_FLIGHT = sa.text("status = 'queued'")


def upgrade() -> None:
    op.create_index("ix_messages_in_flight", "messages", ["queued_at"], postgresql_where=IN_FLIGHT)


def downgrade() -> None:
    op.drop_index("ix_messages_in_flight", table_name="messages", postgresql_where=IN_FLIGHT)
