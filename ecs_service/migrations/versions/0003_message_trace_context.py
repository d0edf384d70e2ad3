"""Keep the trace context of the request that created a message.

The api stores its request span's context (Datadog propagation headers) with the
message; the relay sends it beside the task, so the email's send joins the request's
trace. Nullable: Datadog may be off, and rows written before this revision have none.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a default: no table rewrite, no long lock on messages.
    op.add_column("messages", sa.Column("trace_context", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "trace_context")
