"""Delivery feedback (issue 14): recipients' states, SES events, per-tenant suppressions.

- ``message_recipients``: what SES last said of each recipient of a message.
- ``message_events``: each SES event applied, once (``digest`` is unique).
- ``suppressions``: the addresses each tenant may no longer send to.
- ``messages.status`` may also be ``delivered``, ``bounced`` or ``complained``. The
  CHECK is only widened, so every existing row stays valid; it is added NOT VALID and
  then validated, which reads the table without blocking its writers (when run in a
  transaction of its own).
- ``ix_messages_provider_message_id``: an event without Herald's tags finds its message
  by SES's message id.

Downgrade: the summarised statuses go back to ``sent`` (what they were before any event),
then the old CHECK comes back and the three tables go.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS_CONSTRAINT = "ck_messages_status"
# Literal, not MessageStatus: a revision describes the schema as it was then.
OLD_STATUSES = ("scheduled", "queued", "sent", "failed", "canceled")
NEW_STATUSES = (*OLD_STATUSES, "delivered", "bounced", "complained")
RECIPIENT_STATES = ("complained", "bounced", "rejected", "delivered", "delayed")
SUPPRESSION_REASONS = ("bounce", "complaint")
HAS_PROVIDER_ID = sa.text("provider_message_id IS NOT NULL")


def _one_of(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _status_check(statuses: Sequence[str]) -> None:
    op.execute(f"ALTER TABLE messages DROP CONSTRAINT {STATUS_CONSTRAINT}")
    op.execute(
        f"ALTER TABLE messages ADD CONSTRAINT {STATUS_CONSTRAINT} "
        f"CHECK ({_one_of('status', statuses)}) NOT VALID"
    )
    op.execute(f"ALTER TABLE messages VALIDATE CONSTRAINT {STATUS_CONSTRAINT}")


def upgrade() -> None:
    _status_check(NEW_STATUSES)
    op.create_index(
        "ix_messages_provider_message_id",
        "messages",
        ["provider_message_id"],
        postgresql_where=HAS_PROVIDER_ID,
    )
    op.create_table(
        "message_recipients",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("bounce_type", sa.Text(), nullable=True),
        sa.Column("bounce_subtype", sa.Text(), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            _one_of("status", RECIPIENT_STATES), name="ck_message_recipients_status"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_message_recipients_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "address", name="pk_message_recipients"),
    )
    op.create_table(
        "message_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("digest", sa.CHAR(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_message_events_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_message_events"),
        sa.UniqueConstraint("digest", name="uq_message_events_digest"),
    )
    op.create_index(
        "ix_message_events_message", "message_events", ["message_id", "occurred_at", "id"]
    )
    op.create_table(
        "suppressions",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(_one_of("reason", SUPPRESSION_REASONS), name="ck_suppressions_reason"),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_suppressions_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "address", name="pk_suppressions"),
    )
    op.create_index(
        "ix_suppressions_tenant_created", "suppressions", ["tenant_id", "created_at", "address"]
    )


def downgrade() -> None:
    op.drop_index("ix_suppressions_tenant_created", table_name="suppressions")
    op.drop_table("suppressions")
    op.drop_index("ix_message_events_message", table_name="message_events")
    op.drop_table("message_events")
    op.drop_table("message_recipients")
    op.drop_index(
        "ix_messages_provider_message_id", table_name="messages", postgresql_where=HAS_PROVIDER_ID
    )
    # What a summary made of a sent message is sent again: the old CHECK knows no more.
    op.execute(
        "UPDATE messages SET status = 'sent', updated_at = now() "
        "WHERE status IN ('delivered', 'bounced', 'complained')"
    )
    _status_check(OLD_STATUSES)
