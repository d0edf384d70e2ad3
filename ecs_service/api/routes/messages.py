"""/v1/messages: schedule, list, read and cancel a tenant's emails."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any
from uuid import UUID, uuid4

from aws_lambda_powertools.metrics import MetricUnit
from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import ValidationError

from ecs_service import messages
from ecs_service.api import problems
from ecs_service.api.dependencies import MetricsDep, SessionDep, TenantDep, UnitOfWorkRoute
from ecs_service.api.schemas import MessageCreate, MessageOut, MessagePage, MessageSummary
from shared.contracts import EMAIL_SEND, EmailPayload, MessageStatus, TaskEnvelope, utc_now

# UnitOfWorkRoute: each route's work and commit run in one worker thread (the rate-limit
# token was taken by AdmissionMiddleware, before the body was read).
router = APIRouter(prefix="/v1/messages", tags=["messages"], route_class=UnitOfWorkRoute)
REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {
        "model": MessageOut,
        "description": "Replay of an earlier request with this Idempotency-Key",
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
    responses=REPLAYED | problems.responses(400, 401, 413, 422, 429, 503),
)
def create_message(
    body: MessageCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    tenant_id: TenantDep,
    metrics: MetricsDep,
    idempotency_key: IdempotencyKey = None,
) -> MessageOut:
    now = utc_now()
    send_at = body.send_at or now  # its bounds are MessageCreate's (schemas.SendAt)
    email = body.email_payload(request.app.state.sender_email)
    message_id = uuid4()
    try:
        # The task the relay will send must fit in one SQS message: refuse it now, not later.
        TaskEnvelope[EmailPayload](
            task_id=message_id,
            kind=EMAIL_SEND,
            tenant_id=tenant_id,
            created_at=now,
            send_at=send_at,
            payload=email,
        )
    except ValidationError as error:
        raise problems.ProblemError(
            413,
            "payload-too-large",
            "Payload Too Large",
            error.errors()[0]["msg"].removeprefix("Value error, "),
        ) from error
    try:
        created = messages.create_message(
            session,
            tenant_id=tenant_id,
            email=email,
            send_at=send_at,
            idempotency_key=idempotency_key,
            request_hash=hashlib.sha256(body.model_dump_json().encode()).hexdigest()
            if idempotency_key
            else None,
            message_id=message_id,
            # The request's span: the relay continues this trace when it sends the email.
            trace_context=request.app.state.tracing.inject_context(),
        )
    except messages.IdempotencyKeyReusedError as error:
        raise problems.ProblemError(
            422, "idempotency-key-reused", "Idempotency Key Reused", str(error)
        ) from error
    response.headers["Location"] = f"/v1/messages/{created.message.id}"
    if created.created:
        metrics.add_metric(name="MessagesCreated", unit=MetricUnit.Count, value=1)
    else:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return MessageOut.of(created.message)


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
def get_message(message_id: UUID, session: SessionDep, tenant_id: TenantDep) -> MessageOut:
    try:
        return MessageOut.of(
            messages.get_message(session, tenant_id=tenant_id, message_id=message_id)
        )
    except messages.MessageNotFoundError as error:
        raise problems.not_found(str(error)) from error


@router.delete(
    "/{message_id}",
    summary="Cancel a scheduled message",
    responses=problems.responses(401, 404, 409, 422, 429, 503),
)
def cancel_message(message_id: UUID, session: SessionDep, tenant_id: TenantDep) -> MessageOut:
    try:
        return MessageOut.of(
            messages.cancel_message(session, tenant_id=tenant_id, message_id=message_id)
        )
    except messages.MessageNotFoundError as error:
        raise problems.not_found(str(error)) from error
    except messages.MessageNotCancelableError as error:
        raise problems.ProblemError(409, "not-cancelable", "Not Cancelable", str(error)) from error
