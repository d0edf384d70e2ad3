"""/v1/messages: schedule, list, read and cancel a tenant's emails."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID, uuid4

from aws_lambda_powertools.metrics import MetricUnit
from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import ValidationError

from ecs_service import feedback_store, messages
from ecs_service.api import problems
from ecs_service.api.dependencies import MetricsDep, SessionDep, TenantDep, UnitOfWorkRoute
from ecs_service.api.schemas import MessageCreate, MessageOut, MessagePage, MessageSummary
from shared.contracts import EMAIL_SEND, EmailPayload, MessageStatus, TaskEnvelope, utc_now

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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
    except messages.RecipientSuppressedError as error:
        raise RecipientSuppressedProblem(error) from error
    response.headers["Location"] = f"/v1/messages/{created.message.id}"
    if created.created:
        metrics.add_metric(name="MessagesCreated", unit=MetricUnit.Count, value=1)
        # A new message: SES has said nothing of it yet.
        return MessageOut.of(created.message)
    response.status_code = status.HTTP_200_OK
    response.headers["Idempotent-Replayed"] = "true"
    return _detail(session, created.message)


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
        message = messages.get_message(session, tenant_id=tenant_id, message_id=message_id)
    except messages.MessageNotFoundError as error:
        raise problems.not_found(str(error)) from error
    return _detail(session, message)


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


def _detail(session: Session, message: Message) -> MessageOut:
    """``message`` with what SES reported of each recipient, and its events."""
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
