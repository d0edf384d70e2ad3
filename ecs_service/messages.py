"""The one home of the ``messages`` table: every query and status transition.

The api's side: create (with idempotency keys), list, get and cancel a tenant's
messages. Each of these takes the tenant's id and touches only that tenant's rows: a
tenant never sees or changes another's messages.

The worker's side: the relay claims due messages (``claim_due``) and moves them
``scheduled -> queued`` (``mark_queued``) or ``scheduled -> failed``
(``fail_unsendable``); the results consumer locks them (``lock_for_results``) and moves
them ``queued -> sent | failed`` (``record_result``). Nothing here talks to SQS: the
workers do, around these calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID, uuid4

from sqlalchemy import (
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.exc import IntegrityError

from ecs_service.db.models import Message, Suppression, Tenant
from ecs_service.tenant_limits import (
    DailyQuotaExceededError,
    daily_quota_ctes,
    reserve_daily_quota,
)
from shared.contracts import (
    EMAIL_SEND,
    EmailPayload,
    EmailTask,
    MessageStatus,
    suppression_key,
    task_body,
    utc_now,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from pydantic import BaseModel
    from sqlalchemy import ColumnElement
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import InstrumentedAttribute, Session

    from shared.contracts import TaskResult

# The most messages one POST /v1/messages/batch schedules (one request, one transaction).
MAX_BATCH_MESSAGES = 500
# How far send_at may be from now. The past allows for clock skew between a client and
# Herald; the database holds wider bounds (migration 0004) around each row's created_at.
SEND_AT_GRACE = timedelta(minutes=5)
MAX_SCHEDULE_AHEAD = timedelta(days=365)


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


def driver_sql(statement: str) -> str:
    """``statement`` (``:name`` parameters, as ``text()`` takes them) as psycopg takes it
    (``%(name)s``), compiled once, for ``Connection.exec_driver_sql``: the hot paths'
    statements skip SQLAlchemy's compile-cache lookup on every execution (a GET's statement
    259 -> 236 us of CPU, measured alone)."""
    dialect = psycopg.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's dialects are untyped
    return str(text(statement).compile(dialect=dialect))


def within_schedule_window(send_at: datetime) -> datetime:
    """``send_at`` in UTC, if a message may be scheduled for it: from ``SEND_AT_GRACE`` in
    the past (clock skew) to ``MAX_SCHEDULE_AHEAD`` (a year) from now.

    Raises
    ------
    ValueError
        ``send_at`` is outside that window; the message says which bound.
    """
    now = utc_now()
    if send_at < now - SEND_AT_GRACE:
        minutes = SEND_AT_GRACE // timedelta(minutes=1)
        raise ValueError(f"must be at most {minutes} minutes in the past (omit it to send now)")
    if send_at > now + MAX_SCHEDULE_AHEAD:
        raise ValueError("must be at most one year ahead")
    # In UTC from here on: the POST answers send_at as every GET does, whatever the offset.
    return send_at.astimezone(UTC)


def request_hash(request: BaseModel, idempotency_key: str | None) -> str | None:
    """What an Idempotency-Key's replay must match: a hash of the request's body (None
    without a key, so an unkeyed request serializes nothing for it)."""
    if idempotency_key is None:
        return None
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


def batch_request_hash(items: Sequence[Any], idempotency_key: str | None) -> str | None:
    """``request_hash`` of a batch: its items as received, in a canonical JSON."""
    if idempotency_key is None:
        return None
    canonical = json.dumps(items, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def email_task(
    *,
    message_id: UUID,
    tenant_id: UUID,
    created_at: datetime,
    send_at: datetime,
    email: EmailPayload,
) -> EmailTask:
    """The ``email.send`` task that sends a message (its id is the task id): the one place
    one is built, for the api's size check and for the relay.

    Building one serializes nothing; ``shared.contracts.task_body`` checks its size.
    """
    return EmailTask(
        task_id=message_id,
        kind=EMAIL_SEND,
        tenant_id=tenant_id,
        created_at=created_at,
        send_at=send_at,
        payload=email,
    )


def new_message(
    *,
    tenant_id: UUID,
    email: EmailPayload,
    send_at: datetime | None,
    idempotency_key: str | None = None,
) -> NewMessage:
    """A message to store, its id chosen and its email serialized once: the stored payload,
    which the size check reuses (``send_at`` None: now).

    Raises
    ------
    shared.contracts.TaskTooLargeError
        The task the relay will send would not fit in one SQS message: refused now, not
        when it is due.
    """
    now = utc_now()
    message_id = uuid4()
    send_at = send_at or now
    payload_json = email.model_dump_json()
    task = email_task(
        message_id=message_id, tenant_id=tenant_id, created_at=now, send_at=send_at, email=email
    )
    task_body(task, payload_json=payload_json)
    return NewMessage(message_id, email, send_at, idempotency_key, payload_json)


def create_message(
    session: Session,
    *,
    tenant_id: UUID,
    email: EmailPayload,
    send_at: datetime | None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    trace_context: dict[str, str] | None = None,
) -> Created:
    """Store a scheduled message (``send_at`` None: now), or return the one an earlier
    request with the same key made.

    ``trace_context`` is the creating request's trace context, kept for the relay. A new
    message counts against the tenant's daily quota in the caller's transaction (a
    rollback gives it back); a replay does not. A new message to an address on the
    tenant's suppression list is refused whole, before anything is counted; a replay is
    answered as before, whatever the list holds now.

    Raises
    ------
    shared.contracts.TaskTooLargeError
        The email's task would not fit in one SQS message; nothing was read or stored.
    IdempotencyKeyReusedError
        The key was used before with a different request (``request_hash`` differs).
    RecipientSuppressedError
        To, cc or bcc holds an address on the tenant's suppression list; nothing was
        stored or counted.
    ecs_service.tenant_limits.DailyQuotaExceededError
        The tenant's daily quota is used up; nothing was stored or counted.
    """
    if idempotency_key is None:
        return create_unkeyed_message(
            session.connection(),
            tenant_id=tenant_id,
            email=email,
            send_at=send_at,
            trace_context=trace_context,
        )
    new = new_message(tenant_id=tenant_id, email=email, send_at=send_at)
    earlier = _by_idempotency_key(session, tenant_id, idempotency_key)
    if earlier is not None:
        return _replay(earlier, request_hash)
    _refuse_suppressed(session, tenant_id, email)
    message = Message(
        id=new.id,
        tenant_id=tenant_id,
        status=MessageStatus.SCHEDULED.value,
        payload=email.model_dump(mode="json"),
        send_at=new.send_at,
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
CREATE_UNKEYED = driver_sql(f"""
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


def create_unkeyed_message(
    connection: Connection,
    *,
    tenant_id: UUID,
    email: EmailPayload,
    send_at: datetime | None,
    trace_context: dict[str, str] | None = None,
) -> Created:
    """``create_message`` without an Idempotency-Key: one statement (``CREATE_UNKEYED``),
    its own transaction on an autocommit ``connection`` (the api's), or part of a
    session's. Raises as ``create_message`` does."""
    # Core, one statement: no ORM unit of work for a row nothing else touches, and one
    # round trip where suppression check, quota and INSERT took three.
    new = new_message(tenant_id=tenant_id, email=email, send_at=send_at)
    keys: dict[str, str] = {}
    for address in [*email.to, *email.cc, *email.bcc]:
        keys.setdefault(suppression_key(address), address)
    row = connection.exec_driver_sql(
        CREATE_UNKEYED,
        {
            "tenant_id": tenant_id,
            "recipients": list(keys),
            "count": 1,
            "id": new.id,
            "payload": new.payload_json,
            "send_at": new.send_at,
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
    """A message to store (``new_message``): validated, its id chosen, its size checked."""

    id: UUID
    email: EmailPayload
    send_at: datetime
    # A batch's item: the batch's key and the item's place in it (``batch_item_key``).
    idempotency_key: str | None
    # The email as stored (JSON): serialized once, for the size check and the INSERT.
    payload_json: str


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
    listed = listed_recipients(
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
# CONFLICT DO NOTHING on the partial unique index of idempotency keys). The rows travel as
# one JSON array (``batch_rows``), not as arrays of each column: psycopg dumps an array
# element by element in Python (a 500-email batch's payloads, ids and send_ats took 9 ms),
# a single string at once.
INSERT_BATCH = text("""
INSERT INTO messages (id, tenant_id, status, payload, send_at, idempotency_key, request_hash,
                      trace_context)
SELECT item.id, :tenant_id, 'scheduled', item.payload, item.send_at, item.key,
       CASE WHEN item.key IS NULL THEN NULL ELSE CAST(:request_hash AS text) END,
       CAST(:trace_context AS jsonb)
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS item (id uuid, send_at timestamptz, key text, payload jsonb)
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, status, payload, send_at, created_at, updated_at, queued_at, finished_at,
          provider_message_id, error, idempotency_key
""")


def batch_rows(new: Sequence[NewMessage]) -> str:
    """``new`` as ``INSERT_BATCH`` reads them: a JSON array of objects, each payload the
    JSON already serialized (``NewMessage.payload_json``)."""
    return (
        "["
        + ",".join(
            f'{{"id":"{item.id}","send_at":"{item.send_at.isoformat()}",'
            f'"key":{"null" if item.idempotency_key is None else json.dumps(item.idempotency_key)},'
            f'"payload":{item.payload_json}}}'
            for item in new
        )
        + "]"
    )


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
    # One short statement whatever the batch's size: the rows travel as one JSON array, so
    # neither SQLAlchemy nor psycopg compiles or parses a 500-row VALUES list.
    parameters = {
        "tenant_id": tenant_id,
        "rows": batch_rows(new),
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


def listed_recipients(session: Session, tenant_id: UUID, addresses: Iterable[str]) -> list[str]:
    """Those of ``addresses`` on the tenant's suppression list, in their order, once each:
    the recipients a new message may not have.

    Raises
    ------
    ValueError
        One of ``addresses`` is not an email address (the api has validated them).
    """
    keys: dict[str, str] = {}
    for address in addresses:
        keys.setdefault(suppression_key(address), address)
    if not keys:
        return []
    listed = set(
        session.scalars(
            select(Suppression.address).where(
                Suppression.tenant_id == tenant_id, Suppression.address.in_(list(keys))
            )
        )
    )
    return [address for key, address in keys.items() if key in listed]


def _refuse_suppressed(session: Session, tenant_id: UUID, email: EmailPayload) -> None:
    # In the transaction that stores the message, before the quota is counted: a refusal
    # costs the tenant nothing and takes no lock on its usage row. An address the worker
    # suppresses while this runs can still slip through, as it could a moment earlier.
    recipients = list(dict.fromkeys([*email.to, *email.cc, *email.bcc]))
    listed = listed_recipients(session, tenant_id, recipients)
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
READ_MESSAGE = driver_sql("""
SELECT id, status, payload, send_at, created_at, updated_at, queued_at, finished_at,
       provider_message_id, error
FROM messages WHERE id = :message_id AND tenant_id = :tenant_id
""")


def read_message(connection: Connection, *, tenant_id: UUID, message_id: UUID) -> StoredMessage:
    """The tenant's message with this id, as ``GET /v1/messages/{id}`` shows it: one
    statement, a row rather than an ORM object (nothing here changes it)."""
    row: StoredMessage | None = connection.exec_driver_sql(
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


def task_of(message: Message) -> EmailTask:
    """The ``email.send`` task that sends a stored message (``email_task``).

    Its size is not checked: ``shared.contracts.task_body`` does that.

    Raises
    ------
    pydantic.ValidationError
        The stored payload is not a valid email.
    """
    return email_task(
        message_id=message.id,
        tenant_id=message.tenant_id,
        created_at=message.created_at,
        send_at=message.send_at,
        email=EmailPayload.model_validate(message.payload),
    )


def queued_messages(session: Session) -> Sequence[Message]:
    """Every tenant's messages in ``queued`` (the local system resends their tasks at start)."""
    return session.scalars(
        select(Message).where(Message.status == MessageStatus.QUEUED.value)
    ).all()


# --- The worker's side -----------------------------------------------------------------

# Rows the claim considers per row it may lock: the rest may be locked by other relays.
CANDIDATES_PER_CLAIMED_ROW = 4
# What Python's datetime holds, a day inside each end so no time zone takes a value out.
# PostgreSQL holds more (4713 BC to 294276 AD, and infinity); such a row is failed, not read.
READABLE_TIMES = (datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC))


@dataclass(frozen=True)
class DueMessage:
    """A message the relay claimed, as read: a time Python cannot hold is None."""

    id: UUID
    tenant_id: UUID
    payload: dict[str, Any]
    trace_context: dict[str, str] | None
    send_at: datetime | None
    created_at: datetime | None


def _due() -> tuple[ColumnElement[bool], ...]:
    # Matches ix_messages_due's predicate: a range of that index, not the table.
    return (Message.status == MessageStatus.SCHEDULED.value, Message.send_at <= func.now())


def _in_flight(expiry: timedelta) -> tuple[ColumnElement[bool], ...]:
    # Matches ix_messages_in_flight's predicate.
    return (
        Message.status == MessageStatus.QUEUED.value,
        Message.queued_at > func.now() - expiry,
    )


def count_due(session: Session) -> int:
    """Messages due but not queued (the relay's backlog): scheduled, send_at now or earlier."""
    return session.scalar(select(func.count()).select_from(Message).where(*_due())) or 0


def count_in_flight(session: Session, expiry: timedelta) -> int:
    """Messages queued within ``expiry`` and not finished: a range of ix_messages_in_flight."""
    return session.scalar(select(func.count()).select_from(Message).where(*_in_flight(expiry))) or 0


def next_send_at(session: Session) -> datetime | None:
    """The earliest send_at of a scheduled message (None: nothing is scheduled)."""
    return session.scalar(
        select(func.min(Message.send_at)).where(Message.status == MessageStatus.SCHEDULED.value)
    )


def claim_due(session: Session, limit: int, *, in_flight_expiry: timedelta) -> list[DueMessage]:
    """Lock up to ``limit`` due messages (``FOR UPDATE SKIP LOCKED``), in turns across tenants.

    Each tenant's first due rows are numbered (its turns) by a range scan of
    ``ix_messages_tenant_due``, so the cost grows with the tenants and ``limit``, not
    with the backlog (a 30,000-row backlog is read 200 rows deep). A tenant's turns start
    after its messages in flight (queued within ``in_flight_expiry``). FOR UPDATE may not
    sit on the query that numbers them (a window function), so the lock is on ``messages``
    joined to them; the outer WHERE rechecks a locked row is still due.
    """
    # The first turns, with room for rows another relay has locked (SKIP LOCKED passes
    # over them, so a second relay takes the next rows of even a single tenant's
    # backlog); materialized, so the planner knows it is small and locks by primary key.
    considered = limit * CANDIDATES_PER_CLAIMED_ROW
    turns = (
        select(
            Message.id,
            func.row_number().over(order_by=(Message.send_at, Message.id)).label("turn"),
            func.greatest(Message.send_at, Message.created_at).label("due_since"),
        )
        .where(Message.tenant_id == Tenant.id, *_due())
        .order_by(Message.send_at, Message.id)
        .limit(considered)
        .lateral("turns")
    )
    # A tenant's turns start after its tasks in flight: across passes, a tenant whose
    # backlog already holds the queue waits behind one with nothing queued, so a
    # newcomer is not queued behind every older backlog's next row.
    in_flight = (
        select(Message.tenant_id, func.count().label("queued"))
        .where(*_in_flight(in_flight_expiry))
        .group_by(Message.tenant_id)
        .subquery("in_flight")
    )
    position = (turns.c.turn + func.coalesce(in_flight.c.queued, 0)).label("position")
    candidates = (
        select(turns.c.id, position, turns.c.due_since)
        .select_from(Tenant)
        .join(turns, true())
        .outerjoin(in_flight, in_flight.c.tenant_id == Tenant.id)
        .order_by(position, turns.c.due_since, turns.c.id)
        .limit(considered)
        .cte("candidates")
        .prefix_with("MATERIALIZED")
    )
    rows = session.execute(
        select(
            Message.id,
            Message.tenant_id,
            Message.payload,
            Message.trace_context,
            _readable(Message.send_at).label("send_at"),
            _readable(Message.created_at).label("created_at"),
        )
        .join(candidates, candidates.c.id == Message.id)
        .where(*_due())
        .order_by(candidates.c.position, candidates.c.due_since, Message.id)
        .limit(limit)
        .with_for_update(of=Message, skip_locked=True)
    ).all()
    return [DueMessage(*row) for row in rows]


def _readable(column: InstrumentedAttribute[datetime]) -> ColumnElement[datetime | None]:
    """``column`` where Python can hold it, else NULL: one bad time cannot fail the claim."""
    low, high = READABLE_TIMES
    return case((column.between(literal(low), literal(high)), column), else_=None)


def mark_queued(session: Session, message_ids: Sequence[UUID]) -> None:
    """``scheduled -> queued``: SQS has the tasks of ``message_ids`` (claimed by the caller)."""
    if not message_ids:
        return
    session.execute(
        update(Message)
        .where(Message.id.in_(message_ids), Message.status == MessageStatus.SCHEDULED.value)
        .values(status=MessageStatus.QUEUED.value, queued_at=func.now(), updated_at=func.now())
    )


# One statement for a pass's failures, whatever their number.
FAIL_UNSENDABLE = text("""
UPDATE messages SET status = 'failed', error = failure.error, finished_at = now(),
                    updated_at = now()
FROM unnest(CAST(:ids AS uuid[]), CAST(:errors AS text[])) AS failure (id, error)
WHERE messages.id = failure.id AND messages.status = 'scheduled'
""")


def fail_unsendable(session: Session, errors: Mapping[UUID, str]) -> None:
    """``scheduled -> failed``: the relay will never send these claimed messages; each
    keeps the error a tenant reads (Herald's text for the reason, never a raw detail)."""
    if not errors:
        return
    session.execute(FAIL_UNSENDABLE, {"ids": list(errors), "errors": list(errors.values())})


@dataclass(frozen=True)
class Locked:
    """A message the results consumer locked: its status and SES message id."""

    status: str
    provider_message_id: str | None


def lock_for_results(session: Session, message_ids: Sequence[UUID]) -> dict[UUID, Locked]:
    """Lock the messages of ``message_ids`` (waiting for a relay's commit); their status and
    SES message id.

    Locked in id order, so two consumers locking overlapping batches cannot deadlock. An
    unknown id is absent from the answer.
    """
    rows = session.execute(
        select(Message.id, Message.status, Message.provider_message_id)
        .where(Message.id.in_(sorted(set(message_ids))))
        .order_by(Message.id)
        .with_for_update()
    )
    return {row.id: Locked(row.status, row.provider_message_id) for row in rows}


def record_result(session: Session, result: TaskResult, *, error: str | None) -> bool:
    """``queued -> sent | failed`` as ``result`` says; False if the message is not queued.

    ``error`` is what a tenant reads of a failure (Herald's text for its code). The
    ``finished_at`` stored is kept between the message's ``queued_at`` and now.
    """
    changed = session.execute(
        update(Message)
        .where(Message.id == result.task_id, Message.status == MessageStatus.QUEUED.value)
        .values(
            status=result.status.value,
            provider_message_id=result.provider_message_id,
            error=error,
            finished_at=func.least(
                func.greatest(result.finished_at, Message.queued_at), func.now()
            ),
            updated_at=func.now(),
        )
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FeedbackTarget:
    """A message an SES event may change: its id, tenant and SES message id."""

    id: UUID
    tenant_id: UUID
    provider_message_id: str | None


def lock_for_feedback(
    session: Session, message_ids: Sequence[UUID], provider_message_ids: Sequence[str]
) -> list[FeedbackTarget]:
    """Lock the messages with one of ``message_ids`` or ``provider_message_ids`` (the
    feedback consumer's candidates), in id order."""
    rows = session.execute(
        select(Message.id, Message.tenant_id, Message.provider_message_id)
        .where(
            or_(
                Message.id.in_(message_ids),
                Message.provider_message_id.in_(provider_message_ids),
            )
        )
        .order_by(Message.id)
        .with_for_update()
    )
    return [FeedbackTarget(row.id, row.tenant_id, row.provider_message_id) for row in rows]


# --- Delivery feedback's transitions (feedback_store decides, these write) -------------


@dataclass(frozen=True)
class FeedbackLocked:
    """A message locked for its delivery feedback: its status and stored email."""

    status: str
    payload: dict[str, Any]


def lock_for_events(session: Session, message_id: UUID) -> FeedbackLocked | None:
    """Lock the message (``FOR UPDATE``), so its events and its result apply one after the
    other; its status and email (None: no such message)."""
    row = session.execute(
        select(Message.status, Message.payload).where(Message.id == message_id).with_for_update()
    ).one_or_none()
    return None if row is None else FeedbackLocked(row.status, row.payload)


def record_delivery(session: Session, message_id: UUID, status: MessageStatus) -> None:
    """``sent | delivered | bounced | complained -> status``: what SES's events add up to
    (``feedback_store.summarise``)."""
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(status=status.value, updated_at=func.now())
    )


def fail_after_acceptance(session: Session, message_id: UUID, error: str) -> None:
    """``sent | ... -> failed``: SES rejected (or could not render) an email it had
    accepted; ``error`` is what the tenant reads."""
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(status=MessageStatus.FAILED.value, error=error, updated_at=func.now())
    )


# Final states: a message in one of these is expired by retention once it is old enough.
FINAL_STATUSES = (
    MessageStatus.SENT.value,
    MessageStatus.DELIVERED.value,
    MessageStatus.BOUNCED.value,
    MessageStatus.COMPLAINED.value,
    MessageStatus.FAILED.value,
    MessageStatus.CANCELED.value,
)
# The inner SELECT takes the oldest finished rows by the partial index on finished_at and
# locks them, skipping rows someone else holds; the DELETE cascades to recipients and events.
DELETE_EXPIRED = text(
    """
    DELETE FROM messages
    WHERE id IN (
        SELECT id FROM messages
        WHERE finished_at IS NOT NULL
          AND finished_at < now() - make_interval(days => :days)
          AND status IN :final
        ORDER BY finished_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    """
).bindparams(bindparam("final", expanding=True))


def delete_expired(connection: Connection, *, days: int, limit: int) -> int:
    """Delete at most ``limit`` messages that finished more than ``days`` days ago, oldest first.

    Rows another transaction holds are skipped; recipients and events go with them (their
    foreign keys cascade). Returns how many messages were deleted.
    """
    result = connection.execute(
        DELETE_EXPIRED, {"days": days, "final": list(FINAL_STATUSES), "limit": limit}
    )
    return result.rowcount
