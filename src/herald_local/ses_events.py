"""What SES's mailbox simulator publishes for an email: its events, in SES's own JSON.

SES publishes an event record per happening (a Send for the email; a Delivery, Bounce or
Complaint per recipient) through the email's configuration set; with an EventBridge
destination each record is the ``detail`` of an EventBridge event on the default bus.
The records here follow the documented event-publishing format ("Contents of event
data that Amazon SES publishes", and its examples): ``eventType``, the ``mail`` object
(the SES message id, the send's tags with SES's own ``ses:*`` tags, the destination,
headers) and the per-type object.

Every address gets what SES's mailbox simulator gives it (a ``+label`` is ignored, as
SES ignores it); any other address is delivered:

==================================  ==================================================
success@simulator.amazonses.com     Send, Delivery
bounce@simulator.amazonses.com      Send, Bounce (Permanent, General, 550 5.1.1)
ooto@simulator.amazonses.com        Send, Delivery (the auto-reply goes to the sender)
complaint@simulator.amazonses.com   Send, Delivery, Complaint (abuse)
suppressionlist@...                 Send, Bounce (Permanent, OnAccountSuppressionList)
anyone else                         Send, Delivery
==================================  ==================================================

Nothing here does I/O: ``simulated_events`` says what happens and when (seconds after
SES accepted the email), ``eventbridge_event`` wraps one record as EventBridge delivers
it to an SQS target.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

SIMULATOR_DOMAIN = "simulator.amazonses.com"
# Where the local endpoint lists what its SES published, for the mailbox.
EVENTS_PATH = "/_herald_local/ses-events.json"
ACCOUNT_ID = "123456789012"  # moto's default account, as the template's pseudo parameters
EVENTBRIDGE_SOURCE = "aws.ses"
# SES's eventType -> EventBridge's detail-type (EventBridge reference, "Amazon SES events").
DETAIL_TYPES = {
    "Send": "Email Sent",
    "Delivery": "Email Delivered",
    "Bounce": "Email Bounced",
    "Complaint": "Email Complaint Received",
    "Reject": "Email Rejected",
    "DeliveryDelay": "Email Delivery Delayed",
    "Rendering Failure": "Email Rendering Failed",
}
# The configuration set's MatchingEventTypes value for each eventType.
MATCHING_EVENT_TYPES = {
    "Send": "SEND",
    "Delivery": "DELIVERY",
    "Bounce": "BOUNCE",
    "Complaint": "COMPLAINT",
    "Reject": "REJECT",
    "DeliveryDelay": "DELIVERY_DELAY",
    "Rendering Failure": "RENDERING_FAILURE",
}
ALL_EVENT_TYPES = frozenset(MATCHING_EVENT_TYPES.values())

# Seconds after SES accepted the email: SES publishes the Send at once, the receiving
# server's answer a moment later, a complaint after the reader pressed "spam". Small,
# so a test or a person sees the outcome in seconds; never zero, so the task runner's
# own result can arrive before or after the events, as in AWS.
SEND_DELAY = 0.1
DELIVERY_DELAY = 0.6
COMPLAINT_DELAY = 1.2

USER_UNKNOWN = "smtp; 550 5.1.1 user unknown"
ON_SUPPRESSION_LIST = (
    "Amazon SES did not send the message to this address because it is on the suppression "
    "list for your account. For more information about removing addresses from the "
    "suppression list, see the Amazon SES Developer Guide at "
    "https://docs.aws.amazon.com/ses/latest/DeveloperGuide/sending-email-suppression-list.html"
)
DELIVERED_SMTP_RESPONSE = "250 2.6.0 Message received"
REPORTING_MTA = "a8-70.smtp-out.amazonses.com"
COMPLAINT_USER_AGENT = "Amazon SES Mailbox Simulator"


@dataclass(frozen=True)
class AcceptedEmail:
    """An email SES accepted: what its events say about it."""

    message_id: str  # SES's id, as SendEmail returned it
    source: str  # FromEmailAddress
    to: Sequence[str]
    cc: Sequence[str]
    bcc: Sequence[str]
    subject: str
    configuration_set: str
    email_tags: Mapping[str, str]  # the request's EmailTags, name -> value
    sent_at: datetime
    region: str
    sending_identity: str  # the verified identity that allowed the From address

    @property
    def destination(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]


@dataclass(frozen=True)
class SimulatedEvent:
    """One SES event record, and when SES publishes it (seconds after the send)."""

    delay_seconds: float
    record: dict[str, Any] = field(compare=False)

    @property
    def event_type(self) -> str:
        return str(self.record["eventType"])


def simulator_outcome(address: str) -> str:
    """What the mailbox simulator does for ``address``: its local part, or ``delivered``."""
    local, _, domain = address.strip().lower().rpartition("@")
    if domain != SIMULATOR_DOMAIN:
        return "delivered"
    mailbox = local.split("+", 1)[0]
    return mailbox if mailbox in {"bounce", "complaint", "suppressionlist"} else "delivered"


def simulated_events(
    email: AcceptedEmail, *, matching: Collection[str] = ALL_EVENT_TYPES
) -> list[SimulatedEvent]:
    """Every event SES publishes for ``email``, oldest first, as the simulator decides.

    ``matching`` is the configuration set's event destination's ``MatchingEventTypes``
    (``SEND``, ``DELIVERY`` ...): other types are not published.
    """
    sent = email.sent_at
    events = [SimulatedEvent(SEND_DELAY, _record(email, "Send", {}))]
    for recipient in email.destination:
        outcome = simulator_outcome(recipient)
        if outcome == "bounce":
            events.append(
                _bounce(email, recipient, "General", USER_UNKNOWN, "dsn; " + REPORTING_MTA)
            )
        elif outcome == "suppressionlist":
            events.append(
                _bounce(
                    email, recipient, "OnAccountSuppressionList", ON_SUPPRESSION_LIST,
                    "dns; amazonses.com",
                )
            )  # fmt: skip
        else:
            delivered_at = sent + timedelta(seconds=DELIVERY_DELAY)
            delivery = {
                "timestamp": _iso(delivered_at),
                "processingTimeMillis": round(DELIVERY_DELAY * 1000),
                "recipients": [recipient],
                "smtpResponse": DELIVERED_SMTP_RESPONSE,
                "reportingMTA": REPORTING_MTA,
                "remoteMtaIp": "127.0.0.1",
            }
            events.append(SimulatedEvent(DELIVERY_DELAY, _record(email, "Delivery", delivery)))
            if outcome == "complaint":
                complained_at = sent + timedelta(seconds=COMPLAINT_DELAY)
                complaint = {
                    "feedbackId": _feedback_id(complained_at),
                    "complaintSubType": None,
                    "complainedRecipients": [{"emailAddress": recipient}],
                    "timestamp": _iso(complained_at),
                    "userAgent": COMPLAINT_USER_AGENT,
                    "complaintFeedbackType": "abuse",
                    "arrivalDate": _iso(delivered_at),
                }
                events.append(
                    SimulatedEvent(COMPLAINT_DELAY, _record(email, "Complaint", complaint))
                )
    return [event for event in events if MATCHING_EVENT_TYPES[event.event_type] in matching]


def eventbridge_event(
    record: Mapping[str, Any], *, region: str, configuration_set: str, now: datetime
) -> dict[str, Any]:
    """``record`` as EventBridge delivers SES's event to a target: the envelope around it."""
    event_type = str(record["eventType"])
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPES[event_type],
        "source": EVENTBRIDGE_SOURCE,
        "account": ACCOUNT_ID,
        "time": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [configuration_set_arn(region, configuration_set)],
        "detail": dict(record),
    }


def configuration_set_arn(region: str, name: str) -> str:
    return f"arn:aws:ses:{region}:{ACCOUNT_ID}:configuration-set/{name}"


def _bounce(
    email: AcceptedEmail, recipient: str, subtype: str, diagnostic: str, reporting_mta: str
) -> SimulatedEvent:
    bounced_at = email.sent_at + timedelta(seconds=DELIVERY_DELAY)
    bounce = {
        "bounceType": "Permanent",
        "bounceSubType": subtype,
        "bouncedRecipients": [
            {
                "emailAddress": recipient,
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": diagnostic,
            }
        ],
        "timestamp": _iso(bounced_at),
        "feedbackId": _feedback_id(bounced_at),
        "reportingMTA": reporting_mta,
    }
    return SimulatedEvent(DELIVERY_DELAY, _record(email, "Bounce", bounce))


def _record(email: AcceptedEmail, event_type: str, detail: Mapping[str, Any]) -> dict[str, Any]:
    key = {
        "Send": "send",
        "Delivery": "delivery",
        "Bounce": "bounce",
        "Complaint": "complaint",
    }[event_type]
    return {"eventType": event_type, "mail": _mail(email, event_type), key: dict(detail)}


def _mail(email: AcceptedEmail, event_type: str) -> dict[str, Any]:
    from_domain = email.source.rpartition("@")[2].rstrip(">").lower()
    tags: dict[str, list[str]] = {name: [value] for name, value in email.email_tags.items()}
    tags |= {
        "ses:configuration-set": [email.configuration_set],
        "ses:source-ip": ["127.0.0.1"],
        "ses:from-domain": [from_domain],
        "ses:caller-identity": ["herald-local"],
    }
    if event_type in {"Delivery", "Bounce", "Complaint"}:
        tags["ses:outgoing-ip"] = ["127.0.0.1"]
    headers = [
        {"name": "From", "value": email.source},
        {"name": "To", "value": ", ".join(email.to)},
        *([{"name": "Cc", "value": ", ".join(email.cc)}] if email.cc else []),
        {"name": "Subject", "value": email.subject},
        {"name": "MIME-Version", "value": "1.0"},
        {"name": "Content-Type", "value": "multipart/alternative"},
    ]
    common_headers: dict[str, Any] = {
        "from": [email.source],
        "to": list(email.to),
        "messageId": email.message_id,
        "subject": email.subject,
    }
    if email.cc:
        common_headers["cc"] = list(email.cc)
    return {
        "timestamp": _iso(email.sent_at),
        "source": email.source,
        "sourceArn": (f"arn:aws:ses:{email.region}:{ACCOUNT_ID}:identity/{email.sending_identity}"),
        "sendingAccountId": ACCOUNT_ID,
        "messageId": email.message_id,
        "destination": email.destination,
        "headersTruncated": False,
        "headers": headers,
        "commonHeaders": common_headers,
        "tags": tags,
    }


def _iso(moment: datetime) -> str:
    """SES's timestamps: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def _feedback_id(moment: datetime) -> str:
    # SES's form: the time in hex, a UUID, a sequence ("0100018c...-<uuid>-000000").
    return f"{int(moment.timestamp() * 1000):016x}-{uuid.uuid4()}-000000"
