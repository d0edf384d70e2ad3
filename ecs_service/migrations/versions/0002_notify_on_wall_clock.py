"""Wake the relay by the wall clock, not the transaction's start time.

The trigger compared send_at with now(), the time the transaction began. The api
computes "now" for send_at a moment after its transaction began, so a message due at
once never woke the relay, which found it only at its next poll (seconds later). The
trigger now compares with clock_timestamp() plus a small margin for clock skew between
the api and the database; a message a few seconds ahead also wakes the relay, which then
sleeps until it is due.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def trigger(condition: str) -> str:
    return f"""
CREATE TRIGGER messages_due_notify
AFTER INSERT OR UPDATE OF status, send_at ON messages
FOR EACH ROW WHEN (NEW.status = 'scheduled' AND {condition})
EXECUTE FUNCTION herald_notify_messages_due()
"""


def upgrade() -> None:
    op.execute("DROP TRIGGER messages_due_notify ON messages")
    op.execute(trigger("NEW.send_at <= clock_timestamp() + interval '5 seconds'"))


def downgrade() -> None:
    op.execute("DROP TRIGGER messages_due_notify ON messages")
    op.execute(trigger("NEW.send_at <= now()"))
