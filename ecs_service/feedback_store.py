"""Delivery feedback: the one home of ``message_recipients``, ``message_events`` and
``suppressions`` (issue 14).

The worker's feedback consumer records each SES event it matched to a message
(``record_event``) and then summarises the message (``summarise``); the results consumer
summarises a message when its ``sent`` result arrives, because SES's events may come
first. The api reads a message's recipients and events and manages the tenant's
suppression list (``ecs_service.messages`` checks a new message's recipients against it).
A message's own row is ``ecs_service.messages``'s: the status a summary decides is written
there (``record_delivery``, ``fail_after_acceptance``).

Rules kept here and nowhere else:

- A recipient's state only ever strengthens: complained > bounced > rejected > delivered
  > delayed, and within bounced a permanent bounce over a transient or undetermined one.
  A weaker or repeated event is recorded as an event only.
- A permanent bounce or a complaint puts the address on the message's tenant's list.
- An event changes only the message's own recipients (to, cc, bcc): an address it names
  that the message was not sent to is history only, never a recipient or a suppression.
- The summary of a ``sent`` (or already summarised) message: ``failed`` if SES rejected
  it or could not render it; else ``complained`` if any recipient complained, ``bounced``
  if any bounced, ``delivered`` if every recipient (to, cc, bcc) was delivered, else
  ``sent``. A message that is not sent yet keeps its status (its events wait).

Every address is keyed by ``shared.contracts.suppression_key`` (ASCII, lower case).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import delete, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert

from ecs_service import messages
from ecs_service.db.models import MessageEvent, MessageRecipient, Suppression
from shared.contracts import MessageStatus, suppression_key
from shared.errors import FailureCode, failure_text

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from uuid import UUID

    from sqlalchemy.orm import Session

MAX_DIAGNOSTIC_LENGTH = 1_000
MAX_EVENTS = 100
# The message statuses a summary may change: sent, and what a summary made of it.
SUMMARISED = frozenset(
    {
        MessageStatus.SENT.value,
        MessageStatus.DELIVERED.value,
        MessageStatus.BOUNCED.value,
        MessageStatus.COMPLAINED.value,
    }
)
# SES's event types that end a sent message as failed, with Herald's code for each.
FAILING_EVENTS: Mapping[str, FailureCode] = {
    "Reject": FailureCode.SES_REJECTED,
    "Rendering Failure": FailureCode.RENDERING_FAILED,
}
PERMANENT = "Permanent"
# SES refused to try this address because it is on the account's suppression list: another
# tenant's bounce or complaint put it there. Recorded as a bounce for this message, but it
# says nothing of this tenant's own sending, so it never lands on this tenant's list (the
# account list is SES's, shared by every tenant; Herald's lists are per tenant).
ACCOUNT_SUPPRESSION_SUBTYPE = "OnAccountSuppressionList"


class RecipientState(StrEnum):
    """What SES last said of a recipient (the ``message_recipients.status`` values)."""

    COMPLAINED = "complained"
    BOUNCED = "bounced"
    REJECTED = "rejected"
    DELIVERED = "delivered"
    DELAYED = "delayed"


_STRENGTH = {
    RecipientState.DELAYED: 1,
    RecipientState.DELIVERED: 2,
    RecipientState.REJECTED: 3,
    RecipientState.BOUNCED: 4,
    RecipientState.COMPLAINED: 5,
}


class SuppressionReason(StrEnum):
    """Why an address is on a tenant's suppression list."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"


class InvalidCursorError(ValueError):
    """A suppression-list cursor that this API did not hand out."""


@dataclass(frozen=True)
class RecipientOutcome:
    """What one event says of one recipient.

    Attributes
    ----------
    address
        The recipient, as ``suppression_key`` keys it.
    state
        The state the event puts it in (if stronger than what it is in).
    bounce_type, bounce_subtype, diagnostic
        SES's bounce type and subtype and the receiving server's answer, for a bounce;
        the diagnostic (also a delivery's SMTP response) at most 1,000 characters.
    """

    address: str
    state: RecipientState
    bounce_type: str | None = None
    bounce_subtype: str | None = None
    diagnostic: str | None = None

    def __post_init__(self) -> None:
        if self.diagnostic is not None and len(self.diagnostic) > MAX_DIAGNOSTIC_LENGTH:
            object.__setattr__(self, "diagnostic", self.diagnostic[:MAX_DIAGNOSTIC_LENGTH])

    def rank(self) -> tuple[int, int]:
        """How strong this outcome is: its state, then a permanent bounce over another."""
        return _rank(self.state, self.bounce_type)


def _rank(state: str, bounce_type: str | None) -> tuple[int, int]:
    return _STRENGTH[RecipientState(state)], int(bounce_type == PERMANENT)


@dataclass(frozen=True)
class FeedbackEvent:
    """One SES event, parsed and matched to its message.

    Attributes
    ----------
    message_id, tenant_id
        The message it is about, and that message's tenant.
    event_type
        SES's ``eventType`` (Send, Delivery, Bounce, Complaint, Reject, DeliveryDelay,
        Rendering Failure).
    occurred_at
        When it happened, by SES's clock.
    digest
        SHA-256 (hex) of the SES event's canonical JSON: the same event twice is one.
    detail
        The event's few per-type fields (never the whole ``mail`` object), stored as JSON.
    outcomes
        What it says of each recipient it names.
    suppression_detail
        What a suppression it causes records as ``detail`` (a diagnostic, a complaint type).
    """

    message_id: UUID
    tenant_id: UUID
    event_type: str
    occurred_at: datetime
    digest: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    outcomes: tuple[RecipientOutcome, ...] = ()
    suppression_detail: str | None = None


@dataclass(frozen=True)
class Recorded:
    """What ``record_event`` did.

    Attributes
    ----------
    applied
        False when this very event (its digest) was recorded before: nothing changed.
    newly
        How many recipients moved into each state.
    suppressed
        The addresses newly put on the tenant's suppression list.
    strangers
        How many of the event's outcomes named an address the message was not sent to
        (ignored: recorded in the event's history only).
    """

    applied: bool
    newly: Mapping[RecipientState, int] = field(default_factory=dict)
    suppressed: tuple[str, ...] = ()
    strangers: int = 0


@dataclass(frozen=True)
class SuppressionCursor:
    """Where a page of the suppression list ends: its last (created_at, address), newest
    first."""

    created_at: datetime
    address: str

    # The longest token ``encode`` makes: an address of at most 254 ASCII characters (RFC
    # 5321's path limit, which the api holds recipients to) and a timestamp, as ~300 bytes
    # of JSON in base64; with room to spare, and still a bound on what a caller may send.
    MAX_TOKEN_LENGTH: ClassVar[int] = 512

    def encode(self) -> str:
        raw = json.dumps({"c": self.created_at.isoformat(), "a": self.address}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> SuppressionCursor:
        """The cursor ``encode`` made.

        Raises
        ------
        InvalidCursorError
            ``token`` is not one.
        """
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            fields = json.loads(raw)
            created_at = datetime.fromisoformat(fields["c"])
            address = fields["a"]
            # A listed address is its own key: anything else (a NUL, a lone surrogate,
            # which PostgreSQL cannot take) was not handed out by this API.
            listed = isinstance(address, str) and suppression_key(address) == address
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidCursorError("the cursor is not one this API returned") from error
        if not listed or created_at.tzinfo is None:
            raise InvalidCursorError("the cursor is not one this API returned")
        return cls(created_at=created_at, address=address)


def record_event(session: Session, event: FeedbackEvent) -> Recorded:
    """Record ``event`` once: its row, its recipients' states, the suppressions it causes.

    Locks the message's row first (``FOR UPDATE``), so events of one message, and its
    result, are applied one after the other. The caller's transaction commits it, and
    calls ``summarise`` afterwards.
    """
    locked = messages.lock_for_events(session, event.message_id)
    payload = None if locked is None else locked.payload
    # SES reports only on the addresses the email went to: an outcome for any other address
    # is a forged or garbled event, and may neither add a recipient to the message nor put
    # on the tenant's list an address the tenant never sent to. The event stays history.
    own = _recipients(payload or {})
    outcomes = tuple(o for o in event.outcomes if o.address in own)
    strangers = len(event.outcomes) - len(outcomes)
    event = replace(event, outcomes=outcomes)
    recipient = event.outcomes[0].address if len(event.outcomes) == 1 else None
    inserted = session.scalar(
        insert(MessageEvent)
        .values(
            message_id=event.message_id,
            tenant_id=event.tenant_id,
            event_type=event.event_type,
            recipient=recipient,
            occurred_at=event.occurred_at,
            detail=dict(event.detail),
            digest=event.digest,
        )
        .on_conflict_do_nothing(index_elements=[MessageEvent.digest])
        .returning(MessageEvent.id)
    )
    if inserted is None:
        return Recorded(applied=False)
    newly = _apply_outcomes(session, event)
    suppressed = _suppress(session, event)
    return Recorded(applied=True, newly=newly, suppressed=suppressed, strangers=strangers)


def _apply_outcomes(session: Session, event: FeedbackEvent) -> dict[RecipientState, int]:
    """Strengthen the recipients' states; count those that entered a state."""
    if not event.outcomes:
        return {}
    known = {
        row.address: row
        for row in session.scalars(
            select(MessageRecipient).where(MessageRecipient.message_id == event.message_id)
        )
    }
    newly: dict[RecipientState, int] = {}
    for outcome in _strongest_per_address(event.outcomes):
        row = known.get(outcome.address)
        if row is None:
            row = MessageRecipient(
                message_id=event.message_id, address=outcome.address, tenant_id=event.tenant_id
            )
            session.add(row)
            known[outcome.address] = row
        else:
            old = _rank(row.status, row.bounce_type)
            new = outcome.rank()
            # Weaker, or as strong and older: the event is history only.
            if new < old or (new == old and event.occurred_at <= row.updated_at):
                continue
            if row.status == outcome.state.value:
                _fill(row, outcome, event.occurred_at)
                continue
        _fill(row, outcome, event.occurred_at)
        newly[outcome.state] = newly.get(outcome.state, 0) + 1
    session.flush()
    return newly


def _strongest_per_address(outcomes: Iterable[RecipientOutcome]) -> list[RecipientOutcome]:
    strongest: dict[str, RecipientOutcome] = {}
    for outcome in outcomes:
        seen = strongest.get(outcome.address)
        if seen is None or outcome.rank() > seen.rank():
            strongest[outcome.address] = outcome
    return list(strongest.values())


def _fill(row: MessageRecipient, outcome: RecipientOutcome, occurred_at: datetime) -> None:
    row.status = outcome.state.value
    row.bounce_type = outcome.bounce_type
    row.bounce_subtype = outcome.bounce_subtype
    row.diagnostic = outcome.diagnostic
    row.updated_at = occurred_at


def _suppress(session: Session, event: FeedbackEvent) -> tuple[str, ...]:
    """Put a permanently bounced or complaining address on the tenant's list (once).

    Not for a bounce SES gave because the address is on the account's list
    (``ACCOUNT_SUPPRESSION_SUBTYPE``): that is another tenant's history, not this one's.
    """
    reasons: dict[str, tuple[SuppressionReason, str | None]] = {}
    for outcome in _strongest_per_address(event.outcomes):
        detail = (outcome.diagnostic or event.suppression_detail or "")[:MAX_DIAGNOSTIC_LENGTH]
        if outcome.state is RecipientState.COMPLAINED:
            reasons[outcome.address] = (SuppressionReason.COMPLAINT, detail or None)
        elif (
            outcome.state is RecipientState.BOUNCED
            and outcome.bounce_type == PERMANENT
            and outcome.bounce_subtype != ACCOUNT_SUPPRESSION_SUBTYPE
        ):
            reasons[outcome.address] = (SuppressionReason.BOUNCE, detail or None)
    if not reasons:
        return ()
    added = session.scalars(
        insert(Suppression)
        .values(
            [
                {
                    "tenant_id": event.tenant_id,
                    "address": address,
                    "reason": reason.value,
                    "message_id": event.message_id,
                    "detail": detail,
                }
                for address, (reason, detail) in sorted(reasons.items())
            ]
        )
        .on_conflict_do_nothing(index_elements=[Suppression.tenant_id, Suppression.address])
        .returning(Suppression.address)
    )
    return tuple(added)


def summarise(session: Session, message_id: UUID) -> MessageStatus | None:
    """Set a sent message's status from its recipients' states; return its status.

    Only a message that is ``sent``, ``delivered``, ``bounced`` or ``complained`` changes
    (see the module's rules); any other keeps its status, and an unknown id answers None.
    Locks the message's row (``FOR UPDATE``).
    """
    row = messages.lock_for_events(session, message_id)
    if row is None:
        return None
    status = MessageStatus(row.status)
    if status.value not in SUMMARISED:
        return status
    failing = session.execute(
        select(MessageEvent.event_type, MessageEvent.detail)
        .where(
            MessageEvent.message_id == message_id,
            MessageEvent.event_type.in_(list(FAILING_EVENTS)),
        )
        .order_by(MessageEvent.occurred_at, MessageEvent.id)
        .limit(1)
    ).one_or_none()
    if failing is not None:
        code = FAILING_EVENTS[failing.event_type]
        # Herald's sentence for the code, then SES's reason (at most 1,000 characters).
        reason = failing.detail.get("reason") or failing.detail.get("errorMessage")
        error = failure_text(code) + (f" SES said: {reason}" if reason else "")
        messages.fail_after_acceptance(session, message_id, error)
        return MessageStatus.FAILED
    states = {
        row.address: row.status
        for row in session.execute(
            select(MessageRecipient.address, MessageRecipient.status).where(
                MessageRecipient.message_id == message_id
            )
        )
    }
    summary = _summary(states, _recipients(row.payload))
    if summary is not status:
        messages.record_delivery(session, message_id, summary)
    return summary


def _recipients(payload: Mapping[str, Any]) -> set[str]:
    addresses: set[str] = set()
    for name in ("to", "cc", "bcc"):
        for address in payload.get(name) or ():
            try:
                addresses.add(suppression_key(address))
            except ValueError:
                addresses.add(str(address).strip().lower())
    return addresses


def _summary(states: Mapping[str, str], recipients: set[str]) -> MessageStatus:
    seen = set(states.values())
    if RecipientState.COMPLAINED.value in seen:
        return MessageStatus.COMPLAINED
    if RecipientState.BOUNCED.value in seen:
        return MessageStatus.BOUNCED
    delivered = {
        address for address, state in states.items() if state == RecipientState.DELIVERED.value
    }
    if recipients and recipients <= delivered:
        return MessageStatus.DELIVERED
    return MessageStatus.SENT


# Many tenants' addresses in one statement: the relay's re-check of a released batch.
SUPPRESSED_AMONG = text("""
SELECT s.tenant_id, s.address FROM suppressions AS s
JOIN unnest(CAST(:tenant_ids AS uuid[]), CAST(:addresses AS text[])) AS r (tenant_id, address)
  ON s.tenant_id = r.tenant_id AND s.address = r.address
""")


def suppressed_among(
    session: Session, candidates: Iterable[tuple[UUID, str]]
) -> set[tuple[UUID, str]]:
    """Those of ``candidates`` (a tenant and an address in its ``suppression_key`` form) on
    that tenant's suppression list: one query, whatever the tenants (primary key lookups)."""
    pairs = sorted(set(candidates))
    if not pairs:
        return set()
    rows = session.execute(
        SUPPRESSED_AMONG,
        {"tenant_ids": [t for t, _ in pairs], "addresses": [a for _, a in pairs]},
    )
    return {(row.tenant_id, row.address) for row in rows}


def list_suppressions(
    session: Session,
    tenant_id: UUID,
    *,
    limit: int,
    after: SuppressionCursor | None,
) -> tuple[list[Suppression], SuppressionCursor | None]:
    """One page of the tenant's suppression list, newest first, and the next page's cursor."""
    query = select(Suppression).where(Suppression.tenant_id == tenant_id)
    if after is not None:
        query = query.where(
            tuple_(Suppression.created_at, Suppression.address) < (after.created_at, after.address)
        )
    query = query.order_by(Suppression.created_at.desc(), Suppression.address.desc()).limit(
        limit + 1
    )
    rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    next_cursor = SuppressionCursor(page[-1].created_at, page[-1].address) if more else None
    return page, next_cursor


def remove_suppression(session: Session, tenant_id: UUID, address: str) -> bool:
    """Take ``address`` (any case) off the tenant's list; False if it was not on it."""
    try:
        key = suppression_key(address)
    except ValueError:
        return False  # not an address: it cannot be listed
    removed = session.execute(
        delete(Suppression).where(Suppression.tenant_id == tenant_id, Suppression.address == key)
    )
    return bool(removed.rowcount)  # type: ignore[attr-defined]


def recipients_of(session: Session, message_id: UUID) -> list[MessageRecipient]:
    """The message's recipients SES reported on, by address (none before any event)."""
    return list(
        session.scalars(
            select(MessageRecipient)
            .where(MessageRecipient.message_id == message_id)
            .order_by(MessageRecipient.address)
        )
    )


def events_of(session: Session, message_id: UUID, limit: int = MAX_EVENTS) -> list[MessageEvent]:
    """The message's latest ``limit`` events, oldest first.

    The latest, not the first: a run of DeliveryDelay events must not hide the Bounce or
    Delivery that ended them.
    """
    latest = list(
        session.scalars(
            select(MessageEvent)
            .where(MessageEvent.message_id == message_id)
            .order_by(MessageEvent.occurred_at.desc(), MessageEvent.id.desc())
            .limit(limit)
        )
    )
    latest.reverse()
    return latest
