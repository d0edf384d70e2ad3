"""The feedback consumer: SES's delivery events from the feedback queue to the messages.

SES publishes each event of a configuration set to EventBridge, whose rule puts it, in
EventBridge's envelope, on the feedback queue. An event is a claim read from a queue, so
it is checked, not trusted:

- The body is parsed here, at the edge, into bounded models of the envelope and of SES's
  documented event format. A body that is not one (a poison event) is deleted, logged
  and counted in ``FeedbackEventsRejected``: it can never become valid, and it must not
  hold up the events beside it. An event type Herald does not record (Open, Click,
  Subscription) is deleted and counted in ``FeedbackEventsIgnored``. A diagnostic is cut
  to 1,000 characters (never a reason to lose the bounce); a time SES could not have
  stamped (before 2000, or one PostgreSQL would hold but Python not read back) is poison,
  and a time ahead of the worker's clock is recorded as the time the event was received.
- The event finds its message by Herald's tags on the send (``herald-message-id`` and
  ``herald-tenant-id``, which must name the message's own tenant) or, without the tags,
  by SES's message id (``messages.provider_message_id``), the tenant tag still checked
  when present. One tenant's event can never touch another tenant's message, and an SES
  id two messages claim matches neither. An event with no such message is deleted and
  counted in ``FeedbackEventsUnmatched``; an address it names that its message was not
  sent to is history only (``feedback_store``), logged as a count, never named.
- Applying is idempotent: ``feedback_store.record_event`` records an event once, by the
  digest of SES's event (SES delivers at least once); a repeat is counted in
  ``FeedbackEventsRepeated`` and changes nothing.
- Events arrive in any order, even before the task runner's ``sent`` result: the
  recipients' states only ever strengthen, and a message that is still ``queued`` keeps
  its events until the results consumer summarises it.

A batch is applied in one transaction; if the database refuses one of its events, it is
applied again with a savepoint per event, so the refused one alone is left on the queue
(the feedback DLQ takes it after five receives). Messages are deleted only after commit.
(``queue_batch`` holds what this consumer and the results consumer do alike.)
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from sqlalchemy.orm import Session

from ecs_service import feedback_store, messages
from ecs_service.feedback_store import (
    ACCOUNT_SUPPRESSION_SUBTYPE,
    MAX_DIAGNOSTIC_LENGTH,
    PERMANENT,
    FeedbackEvent,
    RecipientOutcome,
    RecipientState,
)
from ecs_service.worker.queue_batch import REFUSED_BY_THE_DATABASE, QueueConsumer, item_scope
from shared.adapters.sqs_receiver import SqsReceiver
from shared.contracts import (
    MAX_ADDRESS_INPUT_LENGTH,
    MAX_PROVIDER_MESSAGE_ID_LENGTH,
    MAX_RECIPIENTS,
    PROVIDER_MESSAGE_ID_PATTERN,
    describe_validation_error,
    suppression_key,
)
from shared.ports import Received

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mypy_boto3_sqs import SQSClient

    from ecs_service.messages import FeedbackTarget

MESSAGE_TAG = "herald-message-id"
TENANT_TAG = "herald-tenant-id"

FEEDBACK_EVENTS_APPLIED = "FeedbackEventsApplied"
FEEDBACK_EVENTS_REPEATED = "FeedbackEventsRepeated"
FEEDBACK_EVENTS_UNMATCHED = "FeedbackEventsUnmatched"
FEEDBACK_EVENTS_REJECTED = "FeedbackEventsRejected"
# Open, Click, Subscription: SES may publish them (a configuration set shared with another
# use), Herald does not record them. Apart from Rejected, whose alarm they must not wake.
FEEDBACK_EVENTS_IGNORED = "FeedbackEventsIgnored"
# Recipients newly in that state (issue 14's dashboard metrics).
NEWLY = {
    RecipientState.DELIVERED: "EmailsDelivered",
    RecipientState.BOUNCED: "EmailsBounced",
    RecipientState.COMPLAINED: "EmailsComplained",
}

# RFC 5965's Feedback-Type for "not spam": a report that is not a complaint (SES passes
# it on as complaintFeedbackType). Kept in the history, no recipient complained.
NOT_SPAM = "not-spam"

RECORDED_TYPES = frozenset(
    {"Send", "Delivery", "Bounce", "Complaint", "Reject", "DeliveryDelay", "Rendering Failure"}
)
MAX_TAGS = 60  # SES allows 50 message tags, and adds its own ses:* ones
MAX_TAG_LENGTH = 256
MAX_TEXT_LENGTH = 256


def _storable(value: str) -> str:
    # PostgreSQL's text and jsonb refuse NUL: such an event is poison, not a database error.
    if "\x00" in value:
        raise ValueError("may not contain NUL characters")
    return value


def _truncated(value: str | None) -> str | None:
    return value if value is None else _storable(value)[:MAX_DIAGNOSTIC_LENGTH]


def _cut(value: object) -> object:
    # A receiving server's answer can be long (SES passes it on whole): an event is kept
    # with its first 1,000 characters, never refused for it (that would lose the bounce).
    return value[:MAX_DIAGNOSTIC_LENGTH] if isinstance(value, str) else value


# SES did not exist before this; an earlier time (or one PostgreSQL would store before year
# 1) is no time SES stamps.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _plausible(value: datetime) -> datetime:
    if not EARLIEST <= value <= LATEST:
        raise ValueError("is not a time SES could have stamped")
    return value


# Bounded at SQS's 256 KiB body by the queue; each field bounded again here.
Address = Annotated[str, Field(min_length=1, max_length=MAX_ADDRESS_INPUT_LENGTH)]
ShortText = Annotated[str, Field(max_length=MAX_TEXT_LENGTH), AfterValidator(_storable)]
Diagnostic = Annotated[
    str | None, BeforeValidator(_cut), Field(max_length=20_000), AfterValidator(_truncated)
]
SesTime = Annotated[AwareDatetime, AfterValidator(_plausible)]
Recipients = Annotated[list[Address], Field(min_length=1, max_length=MAX_RECIPIENTS)]
TagValues = Annotated[list[Annotated[str, Field(max_length=MAX_TAG_LENGTH)]], Field(max_length=10)]
TagName = Annotated[str, Field(max_length=MAX_TAG_LENGTH)]


class _SesObject(BaseModel):
    """SES's JSON: read the fields Herald uses, ignore the others (SES adds fields)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class SesMail(_SesObject):
    """The ``mail`` object: which email the event is about."""

    message_id: str = Field(
        alias="messageId",
        min_length=1,
        max_length=MAX_PROVIDER_MESSAGE_ID_LENGTH,
        pattern=PROVIDER_MESSAGE_ID_PATTERN,
    )
    timestamp: SesTime
    destination: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    tags: dict[TagName, TagValues] = Field(default_factory=dict, max_length=MAX_TAGS)

    def tag(self, name: str) -> str | None:
        values = self.tags.get(name) or []
        return values[0] if values else None


class BouncedRecipient(_SesObject):
    email_address: Address = Field(alias="emailAddress")
    diagnostic_code: Diagnostic = Field(default=None, alias="diagnosticCode")


class SesBounce(_SesObject):
    bounce_type: Literal["Permanent", "Transient", "Undetermined"] = Field(alias="bounceType")
    bounce_sub_type: ShortText = Field(alias="bounceSubType")
    bounced_recipients: Annotated[
        list[BouncedRecipient], Field(min_length=1, max_length=MAX_RECIPIENTS)
    ] = Field(alias="bouncedRecipients")
    timestamp: SesTime


class ComplainedRecipient(_SesObject):
    email_address: Address = Field(alias="emailAddress")


class SesComplaint(_SesObject):
    complained_recipients: Annotated[
        list[ComplainedRecipient], Field(min_length=1, max_length=MAX_RECIPIENTS)
    ] = Field(alias="complainedRecipients")
    complaint_feedback_type: ShortText | None = Field(default=None, alias="complaintFeedbackType")
    complaint_sub_type: ShortText | None = Field(default=None, alias="complaintSubType")
    timestamp: SesTime


class SesDelivery(_SesObject):
    recipients: Recipients
    smtp_response: Diagnostic = Field(default=None, alias="smtpResponse")
    timestamp: SesTime


class DelayedRecipient(_SesObject):
    email_address: Address = Field(alias="emailAddress")
    diagnostic_code: Diagnostic = Field(default=None, alias="diagnosticCode")


class SesDeliveryDelay(_SesObject):
    delayed_recipients: Annotated[
        list[DelayedRecipient], Field(min_length=1, max_length=MAX_RECIPIENTS)
    ] = Field(alias="delayedRecipients")
    delay_type: ShortText | None = Field(default=None, alias="delayType")
    expiration_time: SesTime | None = Field(default=None, alias="expirationTime")
    timestamp: SesTime


class SesReject(_SesObject):
    reason: Diagnostic = None


class SesRenderingFailure(_SesObject):
    error_message: Diagnostic = Field(default=None, alias="errorMessage")
    template_name: ShortText | None = Field(default=None, alias="templateName")


_OBJECT_OF = {
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Delivery": "delivery",
    "DeliveryDelay": "delivery_delay",
    "Reject": "reject",
    "Rendering Failure": "failure",
}


class SesEvent(_SesObject):
    """One SES event in the event-publishing format: its type, its mail, its own object."""

    event_type: ShortText = Field(alias="eventType")
    mail: SesMail
    bounce: SesBounce | None = None
    complaint: SesComplaint | None = None
    delivery: SesDelivery | None = None
    delivery_delay: SesDeliveryDelay | None = Field(default=None, alias="deliveryDelay")
    reject: SesReject | None = None
    failure: SesRenderingFailure | None = None

    @model_validator(mode="after")
    def _has_its_object(self) -> SesEvent:
        name = _OBJECT_OF.get(self.event_type)
        if name is not None and getattr(self, name) is None:
            raise ValueError(f"a {self.event_type} event needs its {name} object")
        return self


class EventBridgeEnvelope(_SesObject):
    """EventBridge's envelope around the SES event (the feedback queue's message body).

    Only ``detail`` is read (never ``detail-type``); ``source`` must be SES.
    """

    source: Literal["aws.ses"]
    time: SesTime
    detail: dict[str, Any]


@dataclass(frozen=True)
class ParsedFeedback:
    """A feedback message's SES event, and the digest that makes it one event."""

    event: SesEvent
    digest: str

    @property
    def recorded(self) -> bool:
        """Whether Herald records this event type (Open and Click it does not)."""
        return self.event.event_type in RECORDED_TYPES


# One message of the feedback queue: its event, or why its body is not one.
ReceivedFeedback = Received[ParsedFeedback]


def parse_feedback(body: str) -> ParsedFeedback:
    """Parse a feedback queue body (EventBridge's envelope around an SES event).

    Raises
    ------
    ValueError
        The body is not one; the message says why, in one line.
    """
    try:
        envelope = EventBridgeEnvelope.model_validate_json(body)
        event = SesEvent.model_validate(envelope.detail)
        # Every address named must be one SES could have sent to.
        for address in _addresses(event):
            suppression_key(address)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None
    canonical = json.dumps(envelope.detail, sort_keys=True, separators=(",", ":"))
    return ParsedFeedback(event, hashlib.sha256(canonical.encode()).hexdigest())


def _addresses(event: SesEvent) -> list[str]:
    addresses = list(event.mail.destination)
    if event.bounce:
        addresses += [r.email_address for r in event.bounce.bounced_recipients]
    if event.complaint:
        addresses += [r.email_address for r in event.complaint.complained_recipients]
    if event.delivery:
        addresses += event.delivery.recipients
    if event.delivery_delay:
        addresses += [r.email_address for r in event.delivery_delay.delayed_recipients]
    return addresses


def to_feedback_event(parsed: ParsedFeedback, message_id: UUID, tenant_id: UUID) -> FeedbackEvent:
    """The event, as ``feedback_store`` records it for the message it matched."""
    event = parsed.event
    key = suppression_key
    occurred_at: datetime = event.mail.timestamp
    outcomes: list[RecipientOutcome] = []
    detail: dict[str, Any] = {}
    suppression_detail: str | None = None
    if event.event_type == "Bounce" and event.bounce is not None:
        bounce = event.bounce
        occurred_at = bounce.timestamp
        outcomes = [
            RecipientOutcome(
                key(r.email_address),
                RecipientState.BOUNCED,
                bounce_type=bounce.bounce_type,
                bounce_subtype=bounce.bounce_sub_type,
                diagnostic=r.diagnostic_code,
            )
            for r in bounce.bounced_recipients
        ]
        detail = {
            "bounceType": bounce.bounce_type,
            "bounceSubType": bounce.bounce_sub_type,
            "bouncedRecipients": [
                _without_none(emailAddress=r.email_address, diagnosticCode=r.diagnostic_code)
                for r in bounce.bounced_recipients
            ],
        }
        suppression_detail = f"{bounce.bounce_type} bounce ({bounce.bounce_sub_type})"
    elif event.event_type == "Complaint" and event.complaint is not None:
        complaint = event.complaint
        occurred_at = complaint.timestamp
        if complaint.complaint_sub_type == ACCOUNT_SUPPRESSION_SUBTYPE:
            # SES did not try the address: it is on the account's list (another tenant's
            # history). Not delivered, as for a bounce of that subtype, never suppressed.
            outcomes = [
                RecipientOutcome(
                    key(r.email_address),
                    RecipientState.BOUNCED,
                    bounce_type=PERMANENT,
                    bounce_subtype=ACCOUNT_SUPPRESSION_SUBTYPE,
                )
                for r in complaint.complained_recipients
            ]
        elif (complaint.complaint_feedback_type or "").lower() != NOT_SPAM:
            outcomes = [
                RecipientOutcome(key(r.email_address), RecipientState.COMPLAINED)
                for r in complaint.complained_recipients
            ]
            suppression_detail = f"complaint ({complaint.complaint_feedback_type or 'no type'})"
        detail = _without_none(
            complaintFeedbackType=complaint.complaint_feedback_type,
            complaintSubType=complaint.complaint_sub_type,
            complainedRecipients=[r.email_address for r in complaint.complained_recipients],
        )
    elif event.event_type == "Delivery" and event.delivery is not None:
        delivery = event.delivery
        occurred_at = delivery.timestamp
        outcomes = [
            RecipientOutcome(
                key(address), RecipientState.DELIVERED, diagnostic=delivery.smtp_response
            )
            for address in delivery.recipients
        ]
        detail = _without_none(recipients=delivery.recipients, smtpResponse=delivery.smtp_response)
    elif event.event_type == "DeliveryDelay" and event.delivery_delay is not None:
        delay = event.delivery_delay
        occurred_at = delay.timestamp
        outcomes = [
            RecipientOutcome(
                key(r.email_address), RecipientState.DELAYED, diagnostic=r.diagnostic_code
            )
            for r in delay.delayed_recipients
        ]
        detail = _without_none(
            delayType=delay.delay_type,
            expirationTime=delay.expiration_time.isoformat() if delay.expiration_time else None,
            delayedRecipients=[
                _without_none(emailAddress=r.email_address, diagnosticCode=r.diagnostic_code)
                for r in delay.delayed_recipients
            ],
        )
    elif event.event_type == "Reject" and event.reject is not None:
        # SES rejects the whole email: every recipient.
        outcomes = [
            RecipientOutcome(key(address), RecipientState.REJECTED)
            for address in event.mail.destination
        ]
        detail = _without_none(reason=event.reject.reason)
    elif event.event_type == "Rendering Failure" and event.failure is not None:
        detail = _without_none(
            errorMessage=event.failure.error_message, templateName=event.failure.template_name
        )
    return FeedbackEvent(
        message_id=message_id,
        tenant_id=tenant_id,
        event_type=event.event_type,
        # A clock ahead of ours (skew, or a forged time) would order history wrongly and
        # hold a recipient's time in the future: no event happened after it was received.
        occurred_at=min(occurred_at, datetime.now(UTC)),
        digest=parsed.digest,
        detail=detail,
        outcomes=tuple(outcomes),
        suppression_detail=suppression_detail,
    )


def _without_none(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


class SqsFeedbackReceiver(SqsReceiver[ParsedFeedback]):
    """The feedback queue: each body parsed at the edge (``parse_feedback``).

    Parameters
    ----------
    client
        A ``boto3.client("sqs")``.
    queue_url
        The feedback queue's URL.
    wait_seconds
        How long one receive long-polls (0 to 20).
    """

    def __init__(self, client: SQSClient, queue_url: str, *, wait_seconds: int) -> None:
        super().__init__(
            client, queue_url, wait_seconds=wait_seconds, parse=parse_feedback, what="feedback"
        )


def lock_targets(session: Session, events: Sequence[SesEvent]) -> list[FeedbackTarget]:
    """Lock the messages the events may be about (by tag id or SES id), in id order."""
    ids = sorted({i for e in events if (i := _uuid(e.mail.tag(MESSAGE_TAG))) is not None})
    provider_ids = sorted({e.mail.message_id for e in events})
    return messages.lock_for_feedback(session, ids, provider_ids)


def _uuid(value: str | None) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        return None


def match(event: SesEvent, targets: Sequence[FeedbackTarget]) -> FeedbackTarget | None:
    """The message ``event`` is about, or None.

    With Herald's tenant tag: the message its message tag names, else the one with its SES
    message id, and only if it is that tenant's. Without it: the message with its SES
    message id (known once the ``sent`` result is applied).
    """
    # SES's id names one email; two messages claiming it (a forged or garbled result) name
    # none: the event must not land on whichever of them sorts first, maybe another tenant's.
    claimed = [t for t in targets if t.provider_message_id == event.mail.message_id]
    by_provider_id = claimed[0] if len(claimed) == 1 else None
    tenant_tag = event.mail.tag(TENANT_TAG)
    if tenant_tag is None:
        return by_provider_id
    tagged_id = _uuid(event.mail.tag(MESSAGE_TAG))
    found = next((t for t in targets if t.id == tagged_id), None) or by_provider_id
    if found is None or found.tenant_id != _uuid(tenant_tag):
        return None  # one tenant's event never touches another tenant's message
    return found


@dataclass
class _Outcome:
    """What became of one received batch's events."""

    applied: list[tuple[ReceivedFeedback, FeedbackEvent]] = field(default_factory=list)
    repeated: list[ReceivedFeedback] = field(default_factory=list)
    unmatched: list[ReceivedFeedback] = field(default_factory=list)
    refused: list[tuple[ReceivedFeedback, str]] = field(default_factory=list)
    newly: Counter[RecipientState] = field(default_factory=Counter)
    suppressed: list[tuple[UUID, str]] = field(default_factory=list)
    strangers: list[tuple[ReceivedFeedback, int]] = field(default_factory=list)
    handled: list[str] = field(default_factory=list)  # receipt handles to delete


class FeedbackConsumer(QueueConsumer[ParsedFeedback, ReceivedFeedback, _Outcome]):
    """Long-polls the feedback queue and applies SES's events to the messages.

    See ``QueueConsumer`` for its parameters.
    """

    what = "feedback"

    def consume_once(self) -> int:
        """Receive up to 10 events, apply them, delete the handled; return how many applied.

        Raises
        ------
        HeraldError
            SQS could not be read.
        sqlalchemy.exc.SQLAlchemyError
            The database failed as a whole: nothing is deleted, every event comes back.
        """
        received = self._receiver.receive()
        handled: list[str] = []
        rejected = ignored = 0
        recorded: list[ReceivedFeedback] = []
        for message in received:
            if message.parsed is None:
                # Never valid, whatever happens: logged, counted, and gone.
                self._logger.error(
                    "not an SES event; deleted",
                    extra={"message_id": message.message_id, "error": message.problem},
                )
                rejected += 1
                handled.append(message.receipt_handle)
            elif not message.parsed.recorded:
                ignored += 1
                handled.append(message.receipt_handle)
            else:
                recorded.append(message)
        self._count(FEEDBACK_EVENTS_REJECTED, rejected)
        self._count(FEEDBACK_EVENTS_IGNORED, ignored)
        outcome = self._apply(recorded) if recorded else _Outcome()
        self._report(outcome)
        # Only now that the transaction committed may SQS forget the events.
        self._delete(handled + outcome.handled)
        return len(outcome.applied)

    def _apply_in_one_transaction(
        self, received: Sequence[ReceivedFeedback], isolate: bool
    ) -> _Outcome:
        outcome = _Outcome()
        with Session(self._engine) as session, session.begin():
            events = [m.parsed.event for m in received if m.parsed is not None]
            targets = lock_targets(session, events)
            touched: set[UUID] = set()
            for message in received:
                assert message.parsed is not None  # only parsed, recorded events come here
                target = match(message.parsed.event, targets)
                if target is None:
                    outcome.unmatched.append(message)
                    outcome.handled.append(message.receipt_handle)
                    continue
                event = to_feedback_event(message.parsed, target.id, target.tenant_id)
                try:
                    with item_scope(session, isolate):
                        recorded = feedback_store.record_event(session, event)
                except REFUSED_BY_THE_DATABASE as error:
                    if not isolate:
                        raise
                    outcome.refused.append((message, type(error.orig).__name__))
                    continue
                outcome.handled.append(message.receipt_handle)
                if not recorded.applied:
                    outcome.repeated.append(message)
                    continue
                outcome.applied.append((message, event))
                outcome.newly.update(recorded.newly)
                outcome.suppressed += [(event.tenant_id, a) for a in recorded.suppressed]
                if recorded.strangers:
                    outcome.strangers.append((message, recorded.strangers))
                touched.add(target.id)
            for message_id in sorted(touched):
                feedback_store.summarise(session, message_id)
        return outcome

    def _count(self, name: str, value: int) -> None:
        if value:
            self._metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    def _report(self, outcome: _Outcome) -> None:
        self._count(FEEDBACK_EVENTS_APPLIED, len(outcome.applied))
        self._count(FEEDBACK_EVENTS_REPEATED, len(outcome.repeated))
        self._count(FEEDBACK_EVENTS_UNMATCHED, len(outcome.unmatched))
        for state, metric in NEWLY.items():
            self._count(metric, outcome.newly.get(state, 0))
        for message in outcome.unmatched:
            assert message.parsed is not None
            mail = message.parsed.event.mail
            self._logger.warning(
                "feedback unmatched: no such message for that tenant; deleted",
                extra={
                    "message_id": message.message_id,
                    "event_type": message.parsed.event.event_type,
                    "ses_message_id": mail.message_id,
                    "herald_message_id": mail.tag(MESSAGE_TAG),
                    "herald_tenant_id": mail.tag(TENANT_TAG),
                },
            )
        suppressed = Counter(tenant_id for tenant_id, _ in outcome.suppressed)
        for tenant_id, count in suppressed.items():
            # Counted, not named: an address is the tenant's to see (GET /v1/suppressions).
            self._logger.info(
                "addresses suppressed for their tenant",
                extra={"tenant_id": str(tenant_id), "addresses": count},
            )
        for message, strangers in outcome.strangers:
            # Counted, not named: SES reports only on an email's own recipients.
            self._logger.warning(
                "feedback named addresses its message was not sent to; kept as history only",
                extra={"message_id": message.message_id, "addresses": strangers},
            )
        for message, why in outcome.refused:
            self._logger.error(
                "the database refused a feedback event; left for the feedback DLQ",
                extra={"message_id": message.message_id, "error": why},
            )
