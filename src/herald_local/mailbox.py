"""The local mailbox: the emails the task runner sent through the local SES.

moto keeps every email SES accepted; its ``GET /moto-api/data.json`` lists them under
``ses`` -> ``Message`` (simple emails: ``id``, ``source``, ``destinations``, ``subject``,
``body``, where the body is the HTML part when there is one, else the text) and
``ses`` -> ``RawMessage`` (raw MIME). The page the runner serves and ``herald-local
mailbox`` both read them from there, and each email's SES events (Send, Delivery, Bounce,
Complaint) from what the local SES's mailbox simulator published (``ses_simulator``):
what SES said happened, which Herald's own view (``GET /v1/messages/{id}``) should match.

SES knows nothing of Herald, and moto keeps no time: given the local database,
``HeraldMessages`` adds which Herald message each email is and when the task runner sent
it (the message's ``provider_message_id`` is SES's id, its ``finished_at`` the send time).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, select
from sqlalchemy.exc import SQLAlchemyError

from ecs_service.db.models import Message
from herald_local.ses_events import EVENTS_PATH

if TYPE_CHECKING:
    from collections.abc import Collection
    from datetime import datetime

MODEL_DATA_PATH = "/moto-api/data.json"


class MailboxUnavailableError(RuntimeError):
    """Nothing answers at the local AWS endpoint: the local system is not running."""


@dataclass(frozen=True)
class MailboxEvent:
    """One SES event the local SES published for an email."""

    type: str  # SES's eventType: Send, Delivery, Bounce, Complaint
    recipients: tuple[str, ...]
    occurred_at: str  # SES's timestamp, ISO 8601 UTC
    detail: dict[str, Any] = field(default_factory=dict)  # bounce type, diagnostic ...

    def describe(self) -> str:
        """One line: what happened, to whom, SES's key words for it."""
        facts = [str(value) for value in self.detail.values() if value]
        words = f"{self.type} {', '.join(self.recipients)}"
        return f"{words}: {'; '.join(facts)}" if facts else words


@dataclass(frozen=True)
class SentEmail:
    """One email as the local SES received it."""

    message_id: str
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    body: str
    # From Herald's database, when it has recorded the send (see HeraldMessages).
    herald_message_id: str | None = None
    sent_at: datetime | None = None
    # What the local SES published for it, oldest first (sent through a configuration set).
    events: tuple[MailboxEvent, ...] = ()

    def as_json(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["sent_at"] = self.sent_at.isoformat() if self.sent_at else None
        return fields


@dataclass(frozen=True)
class HeraldSend:
    """Which Herald message an SES email is, and when the task runner sent it."""

    message_id: str
    sent_at: datetime | None


class HeraldMessages:
    """Herald's side of the local mailbox: SES message id -> Herald message and send time.

    One small connection pool for the page's lifetime (it asks every few seconds);
    ``close`` releases it.
    """

    def __init__(self, database_url: str) -> None:
        # Short waits: a page that cannot ask the database shows what SES got, promptly.
        self._engine = create_engine(
            database_url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=2,
            connect_args={"connect_timeout": 2},
        )

    def sends(self, provider_ids: Collection[str]) -> dict[str, HeraldSend]:
        """The sends Herald has recorded among ``provider_ids``; none when it cannot say."""
        if not provider_ids:
            return {}
        query = select(Message.id, Message.provider_message_id, Message.finished_at).where(
            Message.provider_message_id.in_(list(provider_ids))
        )
        try:
            with self._engine.connect() as connection:
                rows = connection.execute(query).all()
        except SQLAlchemyError:
            # The mailbox still lists what SES got while the database restarts or stops.
            return {}
        return {
            str(provider_id): HeraldSend(str(message_id), finished_at)
            for message_id, provider_id, finished_at in rows
        }

    def close(self) -> None:
        self._engine.dispose()


def with_herald_sends(emails: list[SentEmail], herald: HeraldMessages) -> list[SentEmail]:
    """``emails`` with the Herald message id and send time of each that Herald recorded."""
    sends = herald.sends({email.message_id for email in emails})
    return [
        replace(email, herald_message_id=send.message_id, sent_at=send.sent_at)
        if (send := sends.get(email.message_id))
        else email
        for email in emails
    ]


def read_mailbox(endpoint_url: str, *, timeout: float = 5) -> list[SentEmail]:
    """Every email the local SES at ``endpoint_url`` accepted, oldest first."""
    try:
        with urllib.request.urlopen(endpoint_url + MODEL_DATA_PATH, timeout=timeout) as answer:
            data: dict[str, Any] = json.load(answer)
    except (urllib.error.URLError, OSError) as error:
        raise MailboxUnavailableError(
            f"no local AWS endpoint answers at {endpoint_url} ({error}): "
            "start the local system with `make run`"
        ) from error
    ses = data.get("ses", {})
    emails = [_simple(message) for message in ses.get("Message", [])]
    emails += [_raw(message) for message in ses.get("RawMessage", [])]
    published = _published_events(endpoint_url, timeout)
    return [
        replace(email, events=published[email.message_id])
        if email.message_id in published
        else email
        for email in emails
    ]


def _published_events(endpoint_url: str, timeout: float) -> dict[str, tuple[MailboxEvent, ...]]:
    try:
        with urllib.request.urlopen(endpoint_url + EVENTS_PATH, timeout=timeout) as answer:
            published: dict[str, list[dict[str, Any]]] = json.load(answer)
    except (urllib.error.URLError, OSError, ValueError):
        return {}  # the emails are still worth listing
    return {
        message_id: tuple(
            MailboxEvent(
                type=str(event.get("type", "")),
                recipients=tuple(event.get("recipients") or ()),
                occurred_at=str(event.get("occurred_at", "")),
                detail=dict(event.get("detail") or {}),
            )
            for event in events
        )
        for message_id, events in published.items()
    }


def _simple(message: dict[str, Any]) -> SentEmail:
    destinations = message.get("destinations") or {}
    return SentEmail(
        message_id=str(message.get("id", "")),
        sender=str(message.get("source", "")),
        to=tuple(destinations.get("ToAddresses") or ()),
        cc=tuple(destinations.get("CcAddresses") or ()),
        bcc=tuple(destinations.get("BccAddresses") or ()),
        subject=str(message.get("subject", "")),
        body=str(message.get("body", "")),
    )


def _raw(message: dict[str, Any]) -> SentEmail:
    return SentEmail(
        message_id=str(message.get("id", "")),
        sender=str(message.get("source", "")),
        to=tuple(message.get("destinations") or ()),
        cc=(),
        bcc=(),
        subject="(raw MIME message)",
        body=str(message.get("raw_data", "")),
    )


def format_mailbox(emails: list[SentEmail]) -> str:
    """The mailbox as text for a terminal, newest last."""
    if not emails:
        return "The local mailbox is empty: no email has been sent yet."
    blocks = [f"{len(emails)} email(s) sent through the local SES:"]
    for number, email in enumerate(emails, start=1):
        lines = [f"#{number}  {email.subject}", f"    from: {email.sender}"]
        lines.append(f"    to:   {', '.join(email.to)}")
        if email.cc:
            lines.append(f"    cc:   {', '.join(email.cc)}")
        if email.bcc:
            lines.append(f"    bcc:  {', '.join(email.bcc)}")
        if email.sent_at:
            lines.append(f"    sent: {email.sent_at.isoformat(timespec='seconds')}")
        if email.herald_message_id:
            lines.append(f"    herald message: {email.herald_message_id}")
        lines.append(f"    id:   {email.message_id}")
        for event in email.events:
            lines.append(f"    ses:  {event.occurred_at}  {event.describe()}")
        lines += [f"    | {line}" for line in email.body.splitlines() or [""]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
