"""Delivery feedback for the api's and CLI's tests: a message SES accepted, and what SES
then said of it, recorded through ``ecs_service.feedback_store`` as the worker does."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from ecs_service import feedback_store
from ecs_service.db.models import Message
from ecs_service.feedback_store import FeedbackEvent, RecipientOutcome, RecipientState
from ecs_service.worker.results import apply_result
from shared.contracts import TaskResult, suppression_key

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tests.support.builders import Caller

SENT_AT = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def sent_message(client: TestClient, engine: Engine, caller: Caller, *to: str) -> UUID:
    """A message to ``to`` that SES accepted (status ``sent``), scheduled through the api."""
    response = client.post(
        "/v1/messages",
        json={"to": list(to), "subject": "Hello", "text": "Hi from Herald."},
        headers=caller.headers,
    )
    assert response.status_code == 201, response.text
    message_id = UUID(response.json()["id"])
    with Session(engine) as session, session.begin():
        session.execute(update(Message).where(Message.id == message_id).values(status="queued"))
        assert apply_result(session, TaskResult.sent(message_id, f"ses-{message_id}", SENT_AT))
    return message_id


def event(
    message_id: UUID,
    tenant_id: UUID,
    event_type: str,
    *outcomes: RecipientOutcome,
    seconds: float = 1,
    detail: dict[str, Any] | None = None,
    suppression_detail: str | None = None,
) -> FeedbackEvent:
    """An SES event of ``event_type``, ``seconds`` after the message was sent."""
    return FeedbackEvent(
        message_id=message_id,
        tenant_id=tenant_id,
        event_type=event_type,
        occurred_at=SENT_AT + timedelta(seconds=seconds),
        digest=hashlib.sha256(uuid4().bytes).hexdigest(),
        detail=detail or {},
        outcomes=outcomes,
        suppression_detail=suppression_detail,
    )


def delivered(address: str) -> RecipientOutcome:
    return RecipientOutcome(
        address, RecipientState.DELIVERED, diagnostic="250 2.6.0 Message received"
    )


def bounced(address: str, bounce_type: str = "Permanent") -> RecipientOutcome:
    return RecipientOutcome(
        address,
        RecipientState.BOUNCED,
        bounce_type=bounce_type,
        bounce_subtype="General",
        diagnostic="smtp; 550 5.1.1 user unknown",
    )


def complained(address: str) -> RecipientOutcome:
    return RecipientOutcome(address, RecipientState.COMPLAINED)


def record(engine: Engine, *events: FeedbackEvent) -> None:
    """Apply ``events`` as the worker's feedback consumer does: each, then the summary."""
    with Session(engine) as session, session.begin():
        for each in events:
            feedback_store.record_event(session, each)
            feedback_store.summarise(session, each.message_id)


def suppress(
    client: TestClient, engine: Engine, caller: Caller, address: str, *, reason: str = "bounce"
) -> UUID:
    """Put ``address`` on the caller's suppression list as SES's feedback does: a message
    to it that bounced permanently (or drew a complaint). Returns that message's id."""
    message_id = sent_message(client, engine, caller, address)
    key = suppression_key(address)
    if reason == "bounce":
        outcome, detail = bounced(key), "Permanent bounce (General)"
        kind = "Bounce"
    else:
        outcome, detail = complained(key), "complaint (abuse)"
        kind = "Complaint"
    record(
        engine,
        event(message_id, caller.tenant_id, kind, outcome, suppression_detail=detail),
    )
    return message_id
