"""SES's feedback events as the worker's feedback consumer reads them (the samples in events/,
about a message of a test's own), and the rows they act on."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service.db.models import Message, MessageEvent, MessageRecipient, Suppression
from tests.conftest import REPO_ROOT
from tests.support.builders import insert_messages

# What the samples name, replaced per test.
SAMPLE_MESSAGE_ID = "5e4d0000-0000-4000-8000-000000000001"
SAMPLE_TENANT_ID = "7d3f1a2e-5b6c-4d8e-9f01-23456789abcd"
SAMPLE_SES_ID = "010201930a7e5b2e-3f1d6c2a-8b4e-4c7d-9a1f-2e6b5c4d3a21-000000"
SAMPLE_READER = "reader1@example.org"
READER = "reader@example.org"
SENT_AT = datetime(2026, 12, 3, 9, 59, 59, tzinfo=UTC)


def sample(
    kind: str,
    message_id: UUID,
    tenant_id: UUID,
    *,
    ses_id: str | None = None,
    recipient: str = READER,
) -> str:
    """The body of events/ses-feedback-<kind>.json, about this message of this tenant."""
    body = (REPO_ROOT / "events" / f"ses-feedback-{kind}.json").read_text()
    return (
        body.replace(SAMPLE_MESSAGE_ID, str(message_id))
        .replace(SAMPLE_TENANT_ID, str(tenant_id))
        .replace(SAMPLE_SES_ID, ses_id or ses_id_of(message_id))
        .replace(SAMPLE_READER, recipient)
    )


def untagged(body: str) -> str:
    """``body`` without Herald's tags (as an event of a send before the tags existed)."""
    event = json.loads(body)
    tags = event["detail"]["mail"]["tags"]
    del tags["herald-message-id"], tags["herald-tenant-id"]
    return json.dumps(event)


def ses_id_of(message_id: UUID) -> str:
    return f"0102019{message_id.hex}-000000"


def message_to(engine: Engine, tenant_id: UUID, *to: str, status: str = "sent") -> UUID:
    """A message to ``to`` that SES accepted (``sent``, its SES id known), or ``queued``."""
    [message_id] = insert_messages(
        engine,
        tenant_id,
        1,
        payload={
            "sender": "herald@example.com",
            "to": list(to or [READER]),
            "subject": "Hello",
            "text": "Hi",
        },
    )
    sent = status != "queued"
    with engine.begin() as connection:
        connection.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(
                status=status,
                queued_at=SENT_AT,
                provider_message_id=ses_id_of(message_id) if sent else None,
                finished_at=SENT_AT if sent else None,
            )
        )
    return message_id


def recipients(engine: Engine, message_id: UUID) -> dict[str, tuple[Any, ...]]:
    with Session(engine) as session:
        rows = session.scalars(
            select(MessageRecipient).where(MessageRecipient.message_id == message_id)
        )
        return {r.address: (r.status, r.bounce_type, r.bounce_subtype, r.diagnostic) for r in rows}


def events(engine: Engine, message_id: UUID) -> list[str]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(MessageEvent.event_type)
                .where(MessageEvent.message_id == message_id)
                .order_by(MessageEvent.occurred_at, MessageEvent.id)
            )
        )


def suppressions(engine: Engine, tenant_id: UUID) -> dict[str, tuple[Any, ...]]:
    with Session(engine) as session:
        rows = session.scalars(select(Suppression).where(Suppression.tenant_id == tenant_id))
        return {s.address: (s.reason, s.message_id, s.detail) for s in rows}
