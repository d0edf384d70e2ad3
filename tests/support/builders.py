"""Rows tests start from: tenants with their keys, and messages in any state.

The one place tests insert rows: a test says what it needs (``insert_messages(engine,
tenant, 30)``: thirty due emails) and the column values every test would otherwise copy
(the stored payload, "due a second ago", the status) live here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service import api_keys
from ecs_service.db.models import Message, Suppression

# What insert_raw_message stores: text, as any revision of the schema takes it.
RAW_PAYLOAD = '{"to": ["reader@example.org"], "subject": "Hello", "text": "Hi"}'
RAW_CREATED_AT = "2026-06-01 12:00:00+00"
# An email as the api stores it in messages.payload (every field, defaults included).
PAYLOAD: dict[str, Any] = {
    "sender": "herald@example.com",
    "to": ["reader@example.org"],
    "cc": [],
    "bcc": [],
    "reply_to": [],
    "subject": "Hi",
    "text": "Hello",
    "html": None,
}


@dataclass(frozen=True)
class Caller:
    """A tenant and the headers that authenticate as it."""

    tenant_id: UUID
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_caller(engine: Engine, name: str | None = None) -> Caller:
    """A new tenant (``name``, or a unique one) and an api key for it."""
    with Session(engine) as session, session.begin():
        tenant = api_keys.create_tenant(session, name or f"tenant-{uuid4()}")
        issued = api_keys.issue_key(session, tenant, "tests")
    return Caller(tenant_id=issued.tenant_id, key=issued.plaintext, key_id=issued.key_id)


def key_of(
    engine: Engine, tenant_id: UUID, *, name: str = "tests", expires_at: datetime | None = None
) -> str:
    """A new api key of the tenant ``tenant_id`` (that expires at ``expires_at``): its text."""
    with Session(engine) as session, session.begin():
        tenant = api_keys.find_tenant(session, str(tenant_id))
        return api_keys.issue_key(session, tenant, name, expires_at=expires_at).plaintext


def insert_messages(
    engine: Engine,
    tenant_id: UUID,
    count: int = 1,
    *,
    send_at: datetime | None = None,
    payload: Mapping[str, Any] | Callable[[UUID], Mapping[str, Any]] | None = None,
    **columns: Any,
) -> list[UUID]:
    """``count`` messages of ``tenant_id``, scheduled and due a second ago; their ids.

    ``payload`` is the stored email (``PAYLOAD`` when None), or a function of each row's id
    (its id in the subject, say). ``columns`` sets any other column of ``messages``
    (``status``, ``created_at``, ``queued_at``, ``finished_at`` ...) on every row.
    """
    ids = [uuid4() for _ in range(count)]
    when = send_at or datetime.now(UTC) - timedelta(seconds=1)

    def payload_of(message_id: UUID) -> Mapping[str, Any]:
        if callable(payload):
            return payload(message_id)
        return PAYLOAD if payload is None else payload

    with engine.begin() as connection:
        connection.execute(
            insert(Message),
            [
                {
                    "id": message_id,
                    "tenant_id": tenant_id,
                    "status": "scheduled",
                    "payload": dict(payload_of(message_id)),
                    "send_at": when,
                    **columns,
                }
                for message_id in ids
            ],
        )
    return ids


def insert_suppressions(
    engine: Engine,
    tenant_id: UUID,
    *addresses: str,
    created_at: datetime | None = None,
    **columns: Any,
) -> None:
    """``addresses`` on the tenant's suppression list, for a bounce unless ``columns`` say
    otherwise (``reason``, ``message_id`` ...); from ``created_at`` (now when None) on, the
    first the oldest, a minute apart."""
    first = created_at or datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(Suppression),
            [
                {
                    "tenant_id": tenant_id,
                    "address": address,
                    "reason": "bounce",
                    "created_at": first + timedelta(minutes=number),
                    **columns,
                }
                for number, address in enumerate(addresses)
            ],
        )


def status_of(engine: Engine, message_id: UUID) -> tuple[str, str | None]:
    """A message's status and error (only those: its times may be ones Python cannot hold)."""
    with Session(engine) as session:
        row = session.execute(
            select(Message.status, Message.error).where(Message.id == message_id)
        ).one()
    return row.status, row.error


def statuses(engine: Engine) -> dict[str, int]:
    """How many messages are in each status, every tenant's."""
    with Session(engine) as session:
        return dict(
            session.execute(select(Message.status, func.count()).group_by(Message.status)).all()
        )


def insert_raw_message(engine: Engine, *, status: str, send_at: str) -> UUID:
    """A message of a new tenant as any writer could store it, ``send_at`` given as
    PostgreSQL text, in SQL any revision of the schema takes (for the migrations' tests)."""
    message_id = uuid4()
    with engine.begin() as connection:
        tenant_id = connection.execute(
            text("INSERT INTO tenants (id, name) VALUES (:id, :name) RETURNING id"),
            {"id": uuid4(), "name": f"tenant-{uuid4()}"},
        ).scalar_one()
        connection.execute(
            text(
                "INSERT INTO messages (id, tenant_id, status, payload, send_at, created_at, "
                "updated_at) VALUES (:id, :tenant_id, :status, CAST(:payload AS jsonb), "
                "CAST(:send_at AS timestamptz), CAST(:created_at AS timestamptz), "
                "CAST(:created_at AS timestamptz))"
            ),
            {
                "id": message_id,
                "tenant_id": tenant_id,
                "status": status,
                "payload": RAW_PAYLOAD,
                "send_at": send_at,
                "created_at": RAW_CREATED_AT,
            },
        )
    return message_id
