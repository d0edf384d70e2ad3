"""The local mailbox: the emails the task runner sent through the local SES.

moto keeps every email SES accepted; its ``GET /moto-api/data.json`` lists them under
``ses`` -> ``Message`` (simple emails: ``id``, ``source``, ``destinations``, ``subject``,
``body``, where the body is the HTML part when there is one, else the text) and
``ses`` -> ``RawMessage`` (raw MIME). The page the runner serves and ``herald-local
mailbox`` both read them from there.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

MODEL_DATA_PATH = "/moto-api/data.json"


class MailboxUnavailableError(RuntimeError):
    """Nothing answers at the local AWS endpoint: the local system is not running."""


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

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


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
    return emails


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
        lines.append(f"    id:   {email.message_id}")
        lines += [f"    | {line}" for line in email.body.splitlines() or [""]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
