"""The API's request and response bodies."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from ecs_service.api.problems import Problem
from ecs_service.feedback_store import MAX_EVENTS, RecipientState, SuppressionReason
from ecs_service.messages import (
    MAX_BATCH_MESSAGES,
    within_schedule_window,
)
from shared.contracts import EmailContent, EmailPayload, MessageStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ecs_service.db.models import Message, MessageEvent, MessageRecipient, Suppression
    from ecs_service.messages import StoredMessage

# A date and a time come first: a number, or a string of digits that pydantic would read
# as seconds or milliseconds since 1970, is not a send_at.
_LOOKS_LIKE_A_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")

# An address read back from the database: validated (as an EmailAddress) when it was
# stored, so answering with it does not validate it again. Documented as the email it is.
StoredEmail = Annotated[str, WithJsonSchema({"type": "string", "format": "email"})]


def _date_time_string(value: Any) -> Any:
    if isinstance(value, datetime) or (
        isinstance(value, str) and _LOOKS_LIKE_A_DATE_TIME.match(value)
    ):
        return value
    raise ValueError(
        "must be a date-time string with a UTC offset (RFC 3339), such as 2030-01-01T09:00:00+01:00"
    )


# The window is the messages module's rule; a send_at outside it is a 422 on the field.
SendAt = Annotated[
    AwareDatetime,
    BeforeValidator(_date_time_string),
    AfterValidator(within_schedule_window),
]


class MessageCreate(EmailContent):
    """An email to send now (no ``send_at``) or at ``send_at``, with its time zone."""

    send_at: SendAt | None = Field(
        default=None,
        description="When to send: a date-time string with a UTC offset (RFC 3339); now "
        "when omitted; from 5 minutes in the past (clock skew) to one year (365 days) ahead",
    )

    def email_payload(self, sender: str) -> EmailPayload:
        """The task contract's email: this body's content from ``sender``.

        Built without validating again: this body passed the same rules (``EmailContent``)
        on the way in, and ``sender`` is ``ApiSettings.sender_email``, validated at start-up.
        """
        content = {name: getattr(self, name) for name in EmailContent.model_fields}
        return EmailPayload.model_construct(sender=sender, **content)


class MessageSummary(BaseModel):
    """A message and where it is in its life, without its bodies (``text``, ``html``):
    an item of a list page, so a page stays small however large the emails are."""

    # The stored payload's bodies are ignored, not refused: a summary leaves them out.
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: UUID
    status: MessageStatus
    sender: StoredEmail
    to: list[StoredEmail]
    cc: list[StoredEmail]
    bcc: list[StoredEmail]
    reply_to: list[StoredEmail]
    subject: str
    send_at: datetime
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None
    finished_at: datetime | None
    provider_message_id: str | None
    error: str | None

    @classmethod
    def of(cls, message: Message | StoredMessage, **more: Any) -> Self:
        """``message`` as this model; ``more`` gives the fields a subclass adds."""
        return cls(
            id=message.id,
            status=MessageStatus(message.status),
            send_at=message.send_at,
            created_at=message.created_at,
            updated_at=message.updated_at,
            queued_at=message.queued_at,
            finished_at=message.finished_at,
            provider_message_id=message.provider_message_id,
            error=message.error,
            **message.payload,
            **more,
        )


class RecipientOut(BaseModel):
    """What SES said of one recipient: the strongest of its events so far (complained,
    then bounced, then rejected, then delivered, then delayed)."""

    address: StoredEmail
    status: RecipientState
    bounce_type: str | None = Field(
        description="SES's bounce type when bounced: Permanent, Transient or Undetermined"
    )
    bounce_subtype: str | None = Field(
        description="SES's bounce subtype, such as General, NoEmail or OnAccountSuppressionList"
    )
    diagnostic: str | None = Field(
        description="The receiving server's answer (SMTP), at most 1,000 characters"
    )
    updated_at: datetime = Field(description="When SES saw the event that set the status")

    @classmethod
    def of(cls, recipient: MessageRecipient) -> Self:
        return cls(
            address=recipient.address,
            status=RecipientState(recipient.status),
            bounce_type=recipient.bounce_type,
            bounce_subtype=recipient.bounce_subtype,
            diagnostic=recipient.diagnostic,
            updated_at=recipient.updated_at,
        )


class EventOut(BaseModel):
    """One delivery event SES published for the message."""

    type: str = Field(
        description="SES's eventType: Send, Delivery, Bounce, Complaint, Reject, "
        "DeliveryDelay or Rendering Failure"
    )
    recipient: StoredEmail | None = Field(
        description="The one recipient it is about; null for a Send, or an event about several"
    )
    occurred_at: datetime = Field(description="When it happened, by SES's clock")
    detail: dict[str, Any] = Field(
        description="The event's own fields, such as bounceType and diagnosticCode"
    )

    @classmethod
    def of(cls, event: MessageEvent) -> Self:
        return cls(
            type=event.event_type,
            recipient=event.recipient,
            occurred_at=event.occurred_at,
            detail=event.detail,
        )


class MessageOut(MessageSummary):
    """A message, its bodies included, where it is in its life, and what SES said of each
    recipient once it was sent."""

    text: str | None
    html: str | None
    recipients: list[RecipientOut] = Field(
        description="Each recipient SES has reported on, by address; one without an event "
        "yet is absent"
    )
    events: list[EventOut] = Field(
        description=f"The message's latest {MAX_EVENTS} delivery events, oldest first"
    )

    @classmethod
    def of(
        cls,
        message: Message | StoredMessage,
        recipients: Sequence[MessageRecipient] = (),
        events: Sequence[MessageEvent] = (),
        **more: Any,
    ) -> Self:
        """``message`` with its recipients' states and events (none: a new message)."""
        return super().of(
            message,
            recipients=[RecipientOut.of(r) for r in recipients],
            events=[EventOut.of(e) for e in events],
            **more,
        )


class MessagePage(BaseModel):
    """One page of messages, newest first. Items leave out the bodies: read them with
    ``GET /v1/messages/{id}``."""

    items: list[MessageSummary]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last"
    )


class MessageBatchCreate(BaseModel):
    """Up to ``MAX_BATCH_MESSAGES`` emails to schedule in one request and one transaction.
    Each is validated on its own: one invalid item is refused, the others are scheduled."""

    # Items are read one by one by the route (MessageCreate each), so one bad item never
    # refuses the whole batch; documented as the MessageCreate they must be.
    messages: Annotated[
        list[Any],
        Field(min_length=1, max_length=MAX_BATCH_MESSAGES),
        WithJsonSchema(
            {
                "type": "array",
                "items": {"$ref": "#/components/schemas/MessageCreate"},
                "minItems": 1,
                "maxItems": MAX_BATCH_MESSAGES,
                "description": f"1 to {MAX_BATCH_MESSAGES} emails, each as POST /v1/messages "
                "takes it",
            }
        ),
    ]


class BatchItemOut(BaseModel):
    """What became of one item of a batch, at its index."""

    index: int = Field(description="The item's place in the request's `messages`, from 0")
    outcome: Literal["created", "replayed", "refused"]
    status: int = Field(
        description="The status POST /v1/messages would have answered for it: 201 created, "
        "200 replayed, else the problem's"
    )
    message: MessageSummary | None = Field(
        default=None,
        description="The scheduled message (created or replayed); its bodies "
        "and feedback are read with GET /v1/messages/{id}",
    )
    problem: Problem | None = Field(
        default=None, description="Why it was refused (refused only), as problem details"
    )


class MessageBatchOut(BaseModel):
    """Each item's outcome, in the request's order, and how many of each."""

    created: int
    replayed: int
    refused: int
    items: list[BatchItemOut]


class SuppressionOut(BaseModel):
    """An address the tenant's emails may not go to, and why."""

    address: StoredEmail = Field(description="Lower case, its domain in ASCII (punycode)")
    reason: SuppressionReason = Field(
        description="bounce: it bounced permanently; complaint: its reader marked an email as spam"
    )
    message_id: UUID | None = Field(description="The message whose event suppressed it")
    detail: str | None = Field(
        description="What SES said: the bounce's diagnostic, or the complaint's type"
    )
    created_at: datetime

    @classmethod
    def of(cls, suppression: Suppression) -> Self:
        return cls(
            address=suppression.address,
            reason=SuppressionReason(suppression.reason),
            message_id=suppression.message_id,
            detail=suppression.detail,
            created_at=suppression.created_at,
        )


class SuppressionPage(BaseModel):
    """One page of the tenant's suppression list."""

    items: list[SuppressionOut]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last"
    )


class Health(BaseModel):
    status: str
