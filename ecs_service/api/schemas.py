"""The API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema

from shared.contracts import EmailContent, EmailPayload, MessageStatus

if TYPE_CHECKING:
    from ecs_service.db.models import Message

# An address read back from the database: validated (as EmailStr) when it was stored, so
# answering with it does not validate it again. Documented as the email it is.
StoredEmail = Annotated[str, WithJsonSchema({"type": "string", "format": "email"})]


class MessageCreate(EmailContent):
    """An email to send now (no ``send_at``) or at ``send_at``, with its time zone."""

    send_at: AwareDatetime | None = Field(
        default=None,
        description="When to send, with a UTC offset (RFC 3339); now when omitted; "
        "at most one year ahead",
    )

    def email_payload(self, sender: str) -> EmailPayload:
        """The task contract's email: this body's content from ``sender``.

        Built without validating again: this body passed the same rules (``EmailContent``)
        on the way in, and ``sender`` is ``ApiSettings.sender_email``, validated at start-up.
        """
        content = {name: getattr(self, name) for name in EmailContent.model_fields}
        return EmailPayload.model_construct(sender=sender, **content)


class MessageOut(BaseModel):
    """A message and where it is in its life."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    status: MessageStatus
    sender: StoredEmail
    to: list[StoredEmail]
    cc: list[StoredEmail]
    bcc: list[StoredEmail]
    reply_to: list[StoredEmail]
    subject: str
    text: str | None
    html: str | None
    send_at: datetime
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None
    finished_at: datetime | None
    provider_message_id: str | None
    error: str | None

    @classmethod
    def of(cls, message: Message) -> MessageOut:
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
        )


class MessagePage(BaseModel):
    """One page of messages, newest first."""

    items: list[MessageOut]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last"
    )


class Health(BaseModel):
    status: str
