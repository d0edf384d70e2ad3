"""A tenant's messages: create (with idempotency keys), list, get and cancel.

Every function takes the tenant's id and touches only that tenant's rows: a tenant
never sees or changes another's messages. Nothing here talks to SQS: the relay does,
from the rows these functions write.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID, uuid4

from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError

from ecs_service import feedback_store
from ecs_service.db.models import Message
from ecs_service.tenant_limits import (
    DailyQuotaExceededError,
    daily_quota_ctes,
    reserve_daily_quota,
)
from shared.contracts import (
    EMAIL_SEND,
    EmailPayload,
    MessageStatus,
    TaskEnvelope,
    suppression_key,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.orm import Session

# The most messages one POST /v1/messages/batch schedules (one request, one transaction).
MAX_BATCH_MESSAGES = 500


class MessageNotFoundError(LookupError):
    """No message with that id for this tenant."""


class MessageNotCancelableError(Exception):
    """Only a scheduled message can be canceled."""

    def __init__(self, status: str) -> None:
        self.status = status
        super().__init__(f"the message is {status}; only a scheduled message can be canceled")


class IdempotencyKeyReusedError(Exception):
    """The Idempotency-Key was used before with a different request body."""


class InvalidCursorError(ValueError):
    """A page cursor that this API did not hand out."""


class RecipientSuppressedError(Exception):
    """Recipients of the message are on the tenant's suppression list: nothing was stored."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        listed = ", ".join(addresses)
        verb = "is" if len(addresses) == 1 else "are"
        super().__init__(
            f"{listed} {verb} on this tenant's suppression list (a permanent bounce or a complaint)"
        )


@dataclass(frozen=True)
class Created:
    """The message, and whether this request created it (False: an idempotent replay)."""

    message: Message | StoredMessage
    created: bool


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the last message's (created_at, id), newest first."""

    created_at: datetime
    id: UUID

    def encode(self) -> str:
        raw = json.dumps({"c": self.created_at.isoformat(), "i": str(self.id)}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            fields = json.loads(raw)
            return cls(created_at=datetime.fromisoformat(fields["c"]), id=UUID(fields["i"]))
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidCursorError("the cursor is not one this API returned") from error


def create_message(
    session: Session,
    *,
    tenant_id: UUID,
    email: EmailPayload,
    send_at: datetime,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    message_id: UUID | None = None,
    trace_context: dict[str, str] | None = None,
) -> Created:
    """Store a scheduled message, or return the one an earlier request with the same key made.

    ``trace_context`` is the creating request's trace context, kept for the relay. A new
    message counts against the tenant's daily quota in the caller's transaction (a
    rollback gives it back); a replay does not. A new message to an address on the
    tenant's suppression list is refused whole, before anything is counted; a replay is
    answered as before, whatever the list holds now.

    Raises
    ------
    IdempotencyKeyReusedError
        The key was used before with a different request (``request_hash`` differs).
    RecipientSuppressedError
        To, cc or bcc holds an address on the tenant's suppression list; nothing was
        stored or counted.
    ecs_service.tenant_limits.DailyQuotaExceededError
        The tenant's daily quota is used up; nothing was stored or counted.
    """
    if idempotency_key is not None:
        earlier = _by_idempotency_key(session, tenant_id, idempotency_key)
        if earlier is not None:
            return _replay(earlier, request_hash)
    if idempotency_key is None:
        return _create_unkeyed(session, tenant_id, email, send_at, message_id, trace_context)
    _refuse_suppressed(session, tenant_id, email)
    message = Message(
        id=message_id or uuid4(),
        tenant_id=tenant_id,
        status=MessageStatus.SCHEDULED.value,
        payload=email.model_dump(mode="json"),
        send_at=send_at,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        trace_context=trace_context,
    )
    # The INSERT's RETURNING fills in the server defaults (the mapper's eager_defaults):
    # no SELECT follows it.
    try:
        # A SAVEPOINT only with a key: losing the race for it must not undo the transaction.
        with session.begin_nested():
            session.add(message)
            session.flush()
            # After the INSERT: a request that loses the race for the key is a replay, and
            # the SAVEPOINT's rollback takes back what it counted.
            reserve_daily_quota(session, tenant_id)
    except IntegrityError:
        # Another request with the same key won the race: answer as it did.
        earlier = _by_idempotency_key(session, tenant_id, idempotency_key)
        if earlier is None:
            raise
        return _replay(earlier, request_hash)
    return Created(message, created=True)


# A message without an Idempotency-Key in one round trip: the suppression check, the
# daily quota (counted only when no recipient is suppressed) and the INSERT (only when
# the quota was counted). A refusal leaves nothing in the transaction and, for a
# suppressed recipient, takes no lock on the tenant's usage row. No row: no such tenant.
CREATE_UNKEYED = text(f"""
WITH listed AS (
    SELECT coalesce(array_agg(s.address), '{{}}') AS addresses FROM suppressions AS s
    WHERE s.tenant_id = :tenant_id AND s.address = ANY(CAST(:recipients AS text[]))
), {daily_quota_ctes(also_when="(SELECT cardinality(addresses) FROM listed) = 0")},
stored AS (
    INSERT INTO messages (id, tenant_id, status, payload, send_at, trace_context)
    SELECT :id, :tenant_id, 'scheduled', CAST(:payload AS jsonb), :send_at,
           CAST(:trace_context AS jsonb)
    WHERE EXISTS (SELECT FROM reserved)
    RETURNING id, status, payload, send_at, created_at, updated_at, queued_at, finished_at,
              provider_message_id, error, idempotency_key
)
SELECT listed.addresses AS suppressed, state.quota, state.used, state.seconds_left,
       stored.id, stored.status, stored.payload, stored.send_at, stored.created_at,
       stored.updated_at, stored.queued_at, stored.finished_at, stored.provider_message_id,
       stored.error, stored.idempotency_key
FROM state CROSS JOIN listed LEFT JOIN stored ON true
""")


def _create_unkeyed(
    session: Session,
    tenant_id: UUID,
    email: EmailPayload,
    send_at: datetime,
    message_id: UUID | None,
    trace_context: dict[str, str] | None,
) -> Created:
    # Core, one statement (CREATE_UNKEYED): no ORM unit of work for a row nothing else
    # touches, and one round trip where suppression check, quota and INSERT took three.
    keys: dict[str, str] = {}
    for address in [*email.to, *email.cc, *email.bcc]:
        keys.setdefault(suppression_key(address), address)
    row = session.execute(
        CREATE_UNKEYED,
        {
            "tenant_id": tenant_id,
            "recipients": list(keys),
            "count": 1,
            "id": message_id or uuid4(),
            "payload": email.model_dump_json(),
            "send_at": send_at,
            "trace_context": None if trace_context is None else json.dumps(trace_context),
        },
    ).first()
    if row is None:
        raise LookupError(f"no tenant {tenant_id}")
    if row.suppressed:
        listed = set(row.suppressed)
        raise RecipientSuppressedError([address for key, address in keys.items() if key in listed])
    if row.id is None:
        raise DailyQuotaExceededError(int(row.quota), int(row.used), max(1, row.seconds_left))
    return Created(row, created=True)


@dataclass(frozen=True)
class NewMessage:
    """One message of a batch to store: already validated, its id chosen."""

    id: UUID
    email: EmailPayload
    send_at: datetime
    # The batch's key and the item's place in it (``batch_item_key``), or None.
    idempotency_key: str | None = None


def batch_item_key(batch_key: str, index: int) -> str:
    """The idempotency key stored for item ``index`` of the batch sent with ``batch_key``.

    A space never appears in an ``Idempotency-Key`` header (the api accepts printable ASCII
    without it), so a batch's items never share a key with a single message."""
    return f"batch {batch_key} {index}"


def earlier_batch_items(
    session: Session, tenant_id: UUID, keys: Sequence[str]
) -> dict[str, Message]:
    """The tenant's messages stored under ``keys`` (items of an earlier batch), by key."""
    if not keys:
        return {}
    found = session.scalars(
        select(Message).where(
            Message.tenant_id == tenant_id, Message.idempotency_key.in_(list(keys))
        )
    )
    return {message.idempotency_key: message for message in found if message.idempotency_key}


def suppressed_recipients(
    session: Session, tenant_id: UUID, emails: Sequence[EmailPayload]
) -> list[list[str]]:
    """For each of ``emails``, its recipients on the tenant's suppression list (one query)."""
    recipients = [list(dict.fromkeys([*e.to, *e.cc, *e.bcc])) for e in emails]
    listed = feedback_store.suppressed(
        session, tenant_id, [address for each in recipients for address in each]
    )
    if not listed:
        return [[] for _ in emails]
    keys = {suppression_key(address) for address in listed}
    return [[a for a in each if suppression_key(a) in keys] for each in recipients]


class StoredMessage(Protocol):
    """What an answer reads of a stored message: a ``Message``, or a row ``INSERT_BATCH``
    returned."""

    id: UUID
    status: str
    payload: dict[str, Any]
    send_at: datetime
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None
    finished_at: datetime | None
    provider_message_id: str | None
    error: str | None


# A concurrent batch with the same key may have stored some items: theirs stand (ON
# CONFLICT DO NOTHING on the partial unique index of idempotency keys).
INSERT_BATCH = text("""
INSERT INTO messages (id, tenant_id, status, payload, send_at, idempotency_key, request_hash,
                      trace_context)
SELECT item.id, :tenant_id, 'scheduled', item.payload::jsonb, item.send_at, item.key,
       CASE WHEN item.key IS NULL THEN NULL ELSE CAST(:request_hash AS text) END,
       CAST(:trace_context AS jsonb)
FROM unnest(CAST(:ids AS uuid[]), CAST(:payloads AS text[]), CAST(:send_ats AS timestamptz[]),
            CAST(:keys AS text[])) AS item (id, payload, send_at, key)
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, status, payload, send_at, created_at, updated_at, queued_at, finished_at,
          provider_message_id, error, idempotency_key
""")


def store_batch(
    session: Session,
    *,
    tenant_id: UUID,
    new: Sequence[NewMessage],
    request_hash: str | None,
    trace_context: dict[str, str] | None = None,
) -> tuple[list[StoredMessage], list[Message]]:
    """Store ``new`` as scheduled messages with one multi-row INSERT and count them against
    the tenant's daily quota, in the caller's transaction; the stored messages, and those a
    concurrent request with the same batch key stored first (replays).

    Nothing is counted for the replays. The caller has refused suppressed recipients and
    answered earlier items (``earlier_batch_items``).

    Raises
    ------
    ecs_service.tenant_limits.DailyQuotaExceededError
        The new messages do not fit in today's quota: the caller's transaction must roll
        back (the rows are inserted before they are counted).
    """
    if not new:
        return [], []
    # One short statement whatever the batch's size: the rows travel as arrays (unnest),
    # so neither SQLAlchemy nor psycopg compiles or parses a 500-row VALUES list.
    parameters = {
        "tenant_id": tenant_id,
        "ids": [item.id for item in new],
        "payloads": [item.email.model_dump_json() for item in new],
        "send_ats": [item.send_at for item in new],
        "keys": [item.idempotency_key for item in new],
        "request_hash": request_hash,
        # None: the column's NULL, as a single POST stores it.
        "trace_context": None if trace_context is None else json.dumps(trace_context),
    }
    stored: list[StoredMessage] = list(session.execute(INSERT_BATCH, parameters))
    if stored:
        reserve_daily_quota(session, tenant_id, len(stored))
    if len(stored) == len(new):
        return stored, []
    won = {message.id for message in stored}
    keys = [item.idempotency_key for item in new if item.id not in won and item.idempotency_key]
    return stored, list(earlier_batch_items(session, tenant_id, keys).values())


def _refuse_suppressed(session: Session, tenant_id: UUID, email: EmailPayload) -> None:
    # In the transaction that stores the message, before the quota is counted: a refusal
    # costs the tenant nothing and takes no lock on its usage row. An address the worker
    # suppresses while this runs can still slip through, as it could a moment earlier.
    recipients = list(dict.fromkeys([*email.to, *email.cc, *email.bcc]))
    listed = feedback_store.suppressed(session, tenant_id, recipients)
    if listed:
        raise RecipientSuppressedError(listed)


def _by_idempotency_key(session: Session, tenant_id: UUID, key: str) -> Message | None:
    return session.scalar(
        select(Message).where(Message.tenant_id == tenant_id, Message.idempotency_key == key)
    )


def _replay(earlier: Message, request_hash: str | None) -> Created:
    if earlier.request_hash != request_hash:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was already used with a different request body"
        )
    return Created(earlier, created=False)


def get_message(session: Session, *, tenant_id: UUID, message_id: UUID) -> Message:
    """The tenant's message with this id."""
    message = session.scalar(
        select(Message).where(Message.id == message_id, Message.tenant_id == tenant_id)
    )
    if message is None:
        raise MessageNotFoundError(f"no message {message_id}")
    return message


# A GET's one statement: what the answer shows, on the primary key, without the ORM.
READ_MESSAGE = text("""
SELECT id, status, payload, send_at, created_at, updated_at, queued_at, finished_at,
       provider_message_id, error
FROM messages WHERE id = :message_id AND tenant_id = :tenant_id
""")


def read_message(session: Session, *, tenant_id: UUID, message_id: UUID) -> StoredMessage:
    """The tenant's message with this id, as ``GET /v1/messages/{id}`` shows it: one
    statement, a row rather than an ORM object (nothing here changes it)."""
    row: StoredMessage | None = session.execute(
        READ_MESSAGE, {"message_id": message_id, "tenant_id": tenant_id}
    ).first()
    if row is None:
        raise MessageNotFoundError(f"no message {message_id}")
    return row


def list_messages(
    session: Session,
    *,
    tenant_id: UUID,
    status: MessageStatus | None = None,
    limit: int = 20,
    after: Cursor | None = None,
) -> tuple[list[Message], Cursor | None]:
    """One page of the tenant's messages, newest first, and the cursor of the next page."""
    query = select(Message).where(Message.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Message.status == status.value)
    if after is not None:
        query = query.where(tuple_(Message.created_at, Message.id) < (after.created_at, after.id))
    query = query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    next_cursor = Cursor(page[-1].created_at, page[-1].id) if more and page else None
    return page, next_cursor


def cancel_message(session: Session, *, tenant_id: UUID, message_id: UUID) -> Message:
    """Cancel the tenant's message while it is still scheduled.

    The update waits for a relay that holds the row (FOR UPDATE), so a message the relay
    is queueing right now is reported as queued, never canceled after the fact.
    """
    canceled = session.scalar(
        update(Message)
        .where(
            Message.id == message_id,
            Message.tenant_id == tenant_id,
            Message.status == MessageStatus.SCHEDULED.value,
        )
        .values(status=MessageStatus.CANCELED.value, finished_at=func.now(), updated_at=func.now())
        .returning(Message)
        .execution_options(synchronize_session=False)
    )
    if canceled is not None:
        return canceled
    current = get_message(session, tenant_id=tenant_id, message_id=message_id)
    raise MessageNotCancelableError(current.status)


def task_of(message: Message) -> TaskEnvelope[EmailPayload]:
    """The ``email.send`` task that sends ``message``: its id is the task id.

    Raises
    ------
    pydantic.ValidationError
        The stored payload is not a valid email (or the task would not fit in SQS).
    """
    return TaskEnvelope[EmailPayload](
        task_id=message.id,
        kind=EMAIL_SEND,
        tenant_id=message.tenant_id,
        created_at=message.created_at,
        send_at=message.send_at,
        payload=EmailPayload.model_validate(message.payload),
    )
