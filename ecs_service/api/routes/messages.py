"""/v1/messages: schedule, list, read and cancel a tenant's emails."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from aws_lambda_powertools.metrics import MetricUnit
from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import TypeAdapter, ValidationError

from ecs_service import feedback_store, messages
from ecs_service.api import problems
from ecs_service.api.dependencies import (
    MetricsDep,
    SessionDep,
    TenantDep,
    UnitDep,
    UnitOfWorkRoute,
    one_statement_unless,
)
from ecs_service.api.schemas import (
    BatchItemOut,
    MessageBatchCreate,
    MessageBatchOut,
    MessageCreate,
    MessageOut,
    MessagePage,
    MessageSummary,
)
from shared.contracts import MessageStatus, TaskTooLargeError

if TYPE_CHECKING:
    from ecs_service.api.dependencies import UnitOfWork
    from ecs_service.db.models import Message
# UnitOfWorkRoute: each route's work and commit run in one worker thread (the rate-limit
# token was taken by AdmissionMiddleware, before the body was read).
router = APIRouter(prefix="/v1/messages", tags=["messages"], route_class=UnitOfWorkRoute)
REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {
        "model": MessageOut,
        "description": "Replay of an earlier request with this Idempotency-Key",
    }
}
# A 422 of POST may be a refusal for suppressed recipients, which names them in `suppressed`.
CREATE_REFUSED: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Problem details (RFC 9457): validation-error, idempotency-key-reused, "
        "or recipient-suppressed, whose `suppressed` lists the recipients on the tenant's "
        "suppression list",
        "content": {
            problems.PROBLEM_JSON: {
                "schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Problem"},
                        {
                            "type": "object",
                            "properties": {
                                "suppressed": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "email"},
                                    "description": "recipient-suppressed only",
                                }
                            },
                        },
                    ]
                }
            }
        },
    }
}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Retry-safe creation: the same key and body return the original message",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Schedule an email",
    responses=REPLAYED | problems.responses(400, 401, 413, 429, 503) | CREATE_REFUSED,
)
# Without a key, messages.create_message is one statement (CREATE_UNKEYED).
@one_statement_unless("Idempotency-Key")
def create_message(
    body: MessageCreate,
    request: Request,
    response: Response,
    unit: UnitDep,
    tenant_id: TenantDep,
    metrics: MetricsDep,
    idempotency_key: IdempotencyKey = None,
) -> MessageOut:
    email = body.email_payload(request.app.state.sender_email)
    # The request's span: the relay continues this trace when it sends the email.
    trace_context = request.app.state.tracing.inject_context()
    try:
        if idempotency_key is None:
            # One statement on the unit's autocommit connection: no ORM session.
            created = messages.create_unkeyed_message(
                unit.connection,
                tenant_id=tenant_id,
                email=email,
                send_at=body.send_at,
                trace_context=trace_context,
            )
        else:
            created = messages.create_message(
                unit.session,
                tenant_id=tenant_id,
                email=email,
                send_at=body.send_at,
                idempotency_key=idempotency_key,
                request_hash=messages.request_hash(body, idempotency_key),
                trace_context=trace_context,
            )
    except TaskTooLargeError as error:
        raise TooLargeForOneTask(error) from error
    except messages.IdempotencyKeyReusedError as error:
        raise problems.ProblemError(
            422, "idempotency-key-reused", "Idempotency Key Reused", str(error)
        ) from error
    except messages.RecipientSuppressedError as error:
        raise RecipientSuppressedProblem(error) from error
    response.headers["Location"] = f"/v1/messages/{created.message.id}"
    if created.created:
        metrics.add_metric(name="MessagesCreated", unit=MetricUnit.Count, value=1)
        # A new message: SES has said nothing of it yet.
        return MessageOut.of(created.message)
    response.status_code = status.HTTP_200_OK
    response.headers["Idempotent-Replayed"] = "true"
    return _detail(unit, created.message)


# A batch's items validated in one call (create_messages).
MESSAGE_LIST = TypeAdapter(list[MessageCreate])
# A batch's items are stored under "batch <key> <index>" (messages.batch_item_key), which
# must fit the 255 characters of the column.
MAX_BATCH_KEY_LENGTH = 240
BatchIdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_BATCH_KEY_LENGTH,
        pattern=r"^[\x21-\x7e]+$",
        description="Retry-safe batch: the same key and body answer the same messages, each "
        "item created by the first request as replayed; refused items are decided again",
    ),
]


@router.post(
    "/batch",
    summary=f"Schedule up to {messages.MAX_BATCH_MESSAGES} emails in one request",
    description=(
        f"One request and one transaction for 1 to {messages.MAX_BATCH_MESSAGES} emails, each "
        "as POST /v1/messages takes it. Each item is validated and answered on its own, in "
        "order: created (201), replayed (200: an earlier request with this Idempotency-Key "
        "stored it) or refused with its problem (validation-error, payload-too-large, "
        "recipient-suppressed). The batch is one request of the key's rate limit and counts "
        "its new messages against the daily quota: if they do not all fit, none is stored "
        "(429 quota-exceeded). The body may be up to 2,000,000 bytes."
    ),
    responses=problems.responses(400, 401, 413, 429, 503)
    | {422: {"description": "Problem details (RFC 9457): validation-error of the batch "
             "itself (no messages, too many) or idempotency-key-reused"}},
)  # fmt: skip
def create_messages(
    body: MessageBatchCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    tenant_id: TenantDep,
    metrics: MetricsDep,
    idempotency_key: BatchIdempotencyKey = None,
) -> MessageBatchOut:
    sender: str = request.app.state.sender_email
    request_id = getattr(request.state, "request_id", None)
    instance = request.url.path
    answers: dict[int, BatchItemOut] = {}

    def refuse(index: int, error: problems.ProblemError) -> None:
        problem = error.to_problem(instance=instance, request_id=request_id)
        answers[index] = BatchItemOut(
            index=index, outcome="refused", status=error.status, problem=problem
        )

    # Each item on its own, in this worker thread: one bad item refuses only itself. All
    # of them are validated in one call first; only a batch with an invalid item is
    # validated again item by item, for each item's own answer.
    try:
        drafts: list[Any] = MESSAGE_LIST.validate_python(body.messages)
    except ValidationError:
        drafts = body.messages
    valid: dict[int, messages.NewMessage] = {}
    for index, item in enumerate(drafts):
        try:
            valid[index] = _new_message(item, index, idempotency_key, sender, tenant_id)
        except problems.ProblemError as error:
            refuse(index, error)
    request_hash = messages.batch_request_hash(body.messages, idempotency_key)
    keys = [new.idempotency_key for new in valid.values() if new.idempotency_key]
    earlier = messages.earlier_batch_items(session, tenant_id, keys)
    if any(message.request_hash != request_hash for message in earlier.values()):
        raise problems.ProblemError(
            422,
            "idempotency-key-reused",
            "Idempotency Key Reused",
            "this Idempotency-Key was already used with a different batch",
        )
    replayed = {
        index: earlier[new.idempotency_key]
        for index, new in valid.items()
        if new.idempotency_key in earlier
    }
    pending = {index: new for index, new in valid.items() if index not in replayed}
    listed = messages.suppressed_recipients(
        session, tenant_id, [new.email for new in pending.values()]
    )
    for (index, _), suppressed in zip(list(pending.items()), listed, strict=True):
        if suppressed:
            refusal = messages.RecipientSuppressedError(suppressed)
            refuse(index, RecipientSuppressedProblem(refusal))
            del pending[index]
    stored, raced = messages.store_batch(
        session,
        tenant_id=tenant_id,
        new=list(pending.values()),
        request_hash=request_hash,
        # The request's span: the relay continues this trace when it sends the emails.
        trace_context=request.app.state.tracing.inject_context(),
    )
    by_id = {message.id: message for message in stored}
    by_key = {message.idempotency_key: message for message in raced}  # raced: Messages
    for index, new in pending.items():
        if new.id in by_id:
            answers[index] = BatchItemOut(
                index=index, outcome="created", status=201,
                message=MessageSummary.of(by_id[new.id]),
            )  # fmt: skip
        else:  # a concurrent request with the same key stored it first
            replayed[index] = by_key[new.idempotency_key]
    for index, message in replayed.items():
        answers[index] = BatchItemOut(
            index=index, outcome="replayed", status=200, message=MessageSummary.of(message)
        )
    if stored:
        metrics.add_metric(name="MessagesCreated", unit=MetricUnit.Count, value=len(stored))
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    items = [answers[index] for index in range(len(body.messages))]
    return MessageBatchOut(
        created=len(stored),
        replayed=len(replayed),
        refused=len(items) - len(stored) - len(replayed),
        items=items,
    )


@router.api_route("/batch", methods=["GET", "DELETE"], include_in_schema=False)
async def batch_other_methods() -> None:
    """GET or DELETE /v1/messages/batch is a 405, not a malformed message id (a 422)."""
    raise problems.ProblemError(
        405,
        "method-not-allowed",
        "Method Not Allowed",
        "Method Not Allowed",
        headers={"Allow": "POST"},
    )


def _new_message(
    item: Any, index: int, batch_key: str | None, sender: str, tenant_id: UUID
) -> messages.NewMessage:
    """Item ``index`` of a batch (a ``MessageCreate`` already, or as received) as a message
    to store, or the problem that refuses it."""
    try:
        draft = item if isinstance(item, MessageCreate) else MessageCreate.model_validate(item)
    except ValidationError as error:
        raise problems.validation_error(
            [
                problems.FieldError(
                    location=".".join(
                        str(part) for part in ("body", "messages", index, *detail["loc"])
                    ),
                    message=str(detail["msg"]).removeprefix("Value error, "),
                )
                for detail in error.errors()
            ]
        ) from error
    key = None if batch_key is None else messages.batch_item_key(batch_key, index)
    try:
        return messages.new_message(
            tenant_id=tenant_id,
            email=draft.email_payload(sender),
            send_at=draft.send_at,
            idempotency_key=key,
        )
    except TaskTooLargeError as error:
        raise TooLargeForOneTask(error) from error


class TooLargeForOneTask(problems.ProblemError):
    """413 payload-too-large: the task the relay would send does not fit in one SQS message."""

    def __init__(self, error: TaskTooLargeError) -> None:
        super().__init__(413, "payload-too-large", "Payload Too Large", str(error))


@router.get(
    "", summary="List messages, newest first", responses=problems.responses(401, 422, 429, 503)
)
def list_messages(
    session: SessionDep,
    tenant_id: TenantDep,
    status_filter: Annotated[MessageStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> MessagePage:
    try:
        after = messages.Cursor.decode(cursor) if cursor else None
    except messages.InvalidCursorError as error:
        raise problems.validation_error(
            [problems.FieldError(location="query.cursor", message=str(error))]
        ) from error
    page, next_cursor = messages.list_messages(
        session, tenant_id=tenant_id, status=status_filter, limit=limit, after=after
    )
    return MessagePage(
        items=[MessageSummary.of(m) for m in page],
        next_cursor=next_cursor.encode() if next_cursor else None,
    )


@router.get(
    "/{message_id}",
    summary="Read one message",
    responses=problems.responses(401, 404, 422, 429, 503),
)
def get_message(message_id: UUID, unit: UnitDep, tenant_id: TenantDep) -> MessageOut:
    try:
        message = messages.read_message(unit.connection, tenant_id=tenant_id, message_id=message_id)
    except messages.MessageNotFoundError as error:
        raise problems.not_found(str(error)) from error
    return _detail(unit, message)


@router.delete(
    "/{message_id}",
    summary="Cancel a scheduled message",
    responses=problems.responses(401, 404, 409, 422, 429, 503),
)
def cancel_message(message_id: UUID, session: SessionDep, tenant_id: TenantDep) -> MessageOut:
    try:
        # Only a scheduled message is canceled: it never reached SES, so has no events.
        return MessageOut.of(
            messages.cancel_message(session, tenant_id=tenant_id, message_id=message_id)
        )
    except messages.MessageNotFoundError as error:
        raise problems.not_found(str(error)) from error
    except messages.MessageNotCancelableError as error:
        raise problems.ProblemError(409, "not-cancelable", "Not Cancelable", str(error)) from error


# Statuses of messages SES cannot have reported on: never handed to it (scheduled), or
# canceled before. (A queued one may hear of its events before its own result.)
NO_FEEDBACK = frozenset({MessageStatus.SCHEDULED.value, MessageStatus.CANCELED.value})


def _detail(unit: UnitOfWork, message: Message | messages.StoredMessage) -> MessageOut:
    """``message`` with what SES reported of each recipient, and its events; no query (and
    no ORM session) for a message that cannot have any."""
    if message.status in NO_FEEDBACK:
        return MessageOut.of(message)
    session = unit.session
    return MessageOut.of(
        message,
        recipients=feedback_store.recipients_of(session, message.id),
        events=feedback_store.events_of(session, message.id, limit=feedback_store.MAX_EVENTS),
    )


class RecipientSuppressedProblem(problems.ProblemError):
    """422 recipient-suppressed, naming the listed recipients in ``suppressed`` too."""

    def __init__(self, error: messages.RecipientSuppressedError) -> None:
        detail = f"{error}; DELETE /v1/suppressions/{{address}} takes an address off it"
        super().__init__(422, "recipient-suppressed", "Recipient Suppressed", detail)
        self.suppressed = error.addresses

    def to_problem(self, instance: str, request_id: str | None) -> problems.Problem:
        problem = super().to_problem(instance, request_id)
        return problems.Problem.model_validate(
            {**problem.model_dump(), "suppressed": self.suppressed}
        )
