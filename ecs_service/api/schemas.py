"""The API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field

from shared.contracts import EmailContent, MessageStatus

if TYPE_CHECKING:
    from ecs_service.db.models import Message


class MessageCreate(EmailContent):
    """An email to send now (no ``send_at``) or at ``send_at``, with its time zone."""

    send_at: AwareDatetime | None = Field(
        default=None,
        description="When to send, with a UTC offset (RFC 3339); now when omitted; "
        "at most one year ahead",
    )


class MessageOut(BaseModel):
    """A message and where it is in its life."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    status: MessageStatus
    sender: EmailStr
    to: list[EmailStr]
    cc: list[EmailStr]
    bcc: list[EmailStr]
    reply_to: list[EmailStr]
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
