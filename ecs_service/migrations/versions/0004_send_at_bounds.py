"""Bound messages.send_at around created_at, so no row can halt the relay or the api.

One request with ``send_at`` in year 1 stored a BC timestamp: every relay pass then
failed to load it (``timestamp too small``), delivery stopped for every tenant, and its
owner's list answered 500. The api now takes ``send_at`` from 5 minutes in the past to
365 days ahead; this CHECK holds wider bounds (a day of slack either way for clock skew
and for rows written by hand) around each row's own created_at.

Rows written before this revision that break the bounds are repaired first: a
``scheduled`` one becomes ``failed`` with a reason its owner can read (it was never
sent), and every such row gets ``send_at = created_at``, a time every reader can load
and the time it was effectively due. Other statuses keep their status: a ``queued``
row still takes its result.

The constraint is added NOT VALID first (new writes are checked from then on), the
rows are repaired, then VALIDATE checks the table. Run by ``herald migrate`` in one
transaction with the other revisions, the table stays locked until commit; run in a
transaction of its own per step, VALIDATE would let reads and writes go on.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "ck_messages_send_at_bounds"
WITHIN_BOUNDS = "send_at BETWEEN created_at - interval '1 day' AND created_at + interval '366 days'"
# What the owner of a repaired row reads as its error (GET /v1/messages/{id}).
OUT_OF_BOUNDS_ERROR = (
    "not sent: send_at was outside the accepted range (from 1 day before to 366 days "
    "after the message was created); schedule it again with a valid send_at"
)


def upgrade() -> None:
    op.execute(
        f"ALTER TABLE messages ADD CONSTRAINT {CONSTRAINT} CHECK ({WITHIN_BOUNDS}) NOT VALID"
    )
    # A scheduled row out of bounds was never sent: it fails, with the reason.
    op.execute(
        f"""
        UPDATE messages
        SET status = 'failed', error = '{OUT_OF_BOUNDS_ERROR}', send_at = created_at,
            finished_at = now(), updated_at = now()
        WHERE status = 'scheduled' AND NOT ({WITHIN_BOUNDS})
        """
    )
    # Any other row out of bounds keeps its status and gets a time every reader can load.
    op.execute(
        f"UPDATE messages SET send_at = created_at, updated_at = now() WHERE NOT ({WITHIN_BOUNDS})"
    )
    op.execute(f"ALTER TABLE messages VALIDATE CONSTRAINT {CONSTRAINT}")


def downgrade() -> None:
    # The repaired rows stay as they are: their old send_at was what the bounds refuse.
    op.execute(f"ALTER TABLE messages DROP CONSTRAINT {CONSTRAINT}")
