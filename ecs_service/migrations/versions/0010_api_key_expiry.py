"""API keys get an optional expiry and a last-used time (issue 18).

``expires_at``: set by ``herald keys create --expires-in-days N`` (NULL: never expires);
from that instant the key is refused like an unknown or revoked one.
``last_used_at``: stamped by the api when it reads the key's row to authenticate a
request (the same statement that fills its key cache), so it is accurate to the cache's
age bound (60 s), at no extra round trip a request (``ecs_service.api_keys``).

Both are nullable without a default: adding them rewrites no row and takes no lock
longer than the catalogue update. That lock (ACCESS EXCLUSIVE) must wait for every open
transaction that touched api_keys, and while it waits every api read of a key queues
behind it: the upgrade waits at most LOCK_TIMEOUT for it, then fails, to be run again,
rather than stall the api's authentication behind a long transaction.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


LOCK_TIMEOUT = "5s"


def upgrade() -> None:
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("SET LOCAL lock_timeout = DEFAULT")  # not the later migrations' business


def downgrade() -> None:
    op.drop_column("api_keys", "last_used_at")
    op.drop_column("api_keys", "expires_at")
