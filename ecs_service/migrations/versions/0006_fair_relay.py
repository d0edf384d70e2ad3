"""Fair relay (issue 13): the indexes of the relay's fair claim and in-flight count.

``ix_messages_tenant_due``: the claim numbers each tenant's first due rows (its turns)
with a range scan per tenant, in send_at order, created_at carried along for the
due-since order across tenants. A backlog of 30,000 rows is read 200 rows deep instead
of sorted whole: 9 ms instead of 89 ms for a claim at 40,000 due rows.

``ix_messages_in_flight``: before each claim the relay counts the rows ``queued``
within the last few minutes (RELAY_MAX_IN_FLIGHT). Without an index that count reads the
whole table (10 ms at 50,000 rows, growing with every message ever sent); this partial
index holds only the queued rows, a few dozen: 0.05 ms.

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

SCHEDULED = sa.text("status = 'scheduled'")
IN_FLIGHT = sa.text("status = 'queued'")


def upgrade() -> None:
    op.create_index(
        "ix_messages_tenant_due",
        "messages",
        ["tenant_id", "send_at", "id"],
        postgresql_include=["created_at"],
        postgresql_where=SCHEDULED,
    )
    op.create_index("ix_messages_in_flight", "messages", ["queued_at"], postgresql_where=IN_FLIGHT)


def downgrade() -> None:
    op.drop_index("ix_messages_in_flight", table_name="messages", postgresql_where=IN_FLIGHT)
    op.drop_index("ix_messages_tenant_due", table_name="messages", postgresql_where=SCHEDULED)
