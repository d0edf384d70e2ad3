"""What the local SES publishes for an email, as SES's mailbox simulator and event format say."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from herald_local.eventbridge_rules import UnsupportedPatternError, check_pattern, matches
from herald_local.ses_events import (
    ALL_EVENT_TYPES,
    AcceptedEmail,
    eventbridge_event,
    simulated_events,
    simulator_outcome,
)

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"
SENT_AT = datetime(2026, 12, 3, 10, 0, 0, 123_000, tzinfo=UTC)
CONFIGURATION_SET = "herald-dev-1234"
MESSAGE_ID = "0100018c-0000-4000-8000-000000000000-000000"


def email(*to: str, cc: tuple[str, ...] = ()) -> AcceptedEmail:
    return AcceptedEmail(
        message_id=MESSAGE_ID,
        source="herald@example.com",
        to=list(to),
        cc=list(cc),
        bcc=[],
        subject="Your receipt",
        configuration_set=CONFIGURATION_SET,
        email_tags={"herald-message-id": "m-1", "herald-tenant-id": "t-1"},
        sent_at=SENT_AT,
        region="us-east-1",
        sending_identity="example.com",
    )


def types(events: list[Any]) -> list[tuple[str, list[str]]]:
    """(eventType, recipients it is about) for each event."""
    found = []
    for event in events:
        record = event.record
        if "delivery" in record:
            recipients = record["delivery"]["recipients"]
        elif "bounce" in record:
            recipients = [r["emailAddress"] for r in record["bounce"]["bouncedRecipients"]]
        elif "complaint" in record:
            recipients = [r["emailAddress"] for r in record["complaint"]["complainedRecipients"]]
        else:
            recipients = record["mail"]["destination"]
        found.append((event.event_type, recipients))
    return found


@pytest.mark.parametrize(
    ("address", "outcome"),
    [
        ("success@simulator.amazonses.com", "delivered"),
        ("bounce@simulator.amazonses.com", "bounce"),
        ("ooto@simulator.amazonses.com", "delivered"),
        ("complaint@simulator.amazonses.com", "complaint"),
        ("suppressionlist@simulator.amazonses.com", "suppressionlist"),
        ("Bounce+tenant-b@Simulator.AmazonSES.com", "bounce"),
        ("bounce@example.org", "delivered"),
    ],
)
def test_each_address_gets_what_the_mailbox_simulator_gives_it(address: str, outcome: str) -> None:
    # Given an address; When the simulator looks at it; Then its outcome is SES's
    assert simulator_outcome(address) == outcome


def test_a_delivered_email_publishes_send_then_delivery() -> None:
    # Given an email to the simulator's success address
    # When its events are made
    events = simulated_events(email("success@simulator.amazonses.com"))

    # Then a Send for the email, then a Delivery for the recipient, later
    assert types(events) == [
        ("Send", ["success@simulator.amazonses.com"]),
        ("Delivery", ["success@simulator.amazonses.com"]),
    ]
    assert 0 < events[0].delay_seconds < events[1].delay_seconds
    assert events[1].record["delivery"]["smtpResponse"].startswith("250")


def test_a_bounce_is_permanent_general_with_the_user_unknown_diagnostic() -> None:
    # Given an email to the simulator's bounce address
    # When its events are made
    send, bounce = simulated_events(email("bounce@simulator.amazonses.com"))

    # Then the Bounce is SES's hard bounce for an unknown user
    assert send.event_type == "Send"
    details = bounce.record["bounce"]
    assert (details["bounceType"], details["bounceSubType"]) == ("Permanent", "General")
    assert details["bouncedRecipients"] == [
        {
            "emailAddress": "bounce@simulator.amazonses.com",
            "action": "failed",
            "status": "5.1.1",
            "diagnosticCode": "smtp; 550 5.1.1 user unknown",
        }
    ]


def test_the_suppression_list_address_bounces_as_on_the_account_suppression_list() -> None:
    # Given an email to the simulator's suppression-list address
    # When its events are made
    _, bounce = simulated_events(email("suppressionlist@simulator.amazonses.com"))

    # Then it is a permanent bounce of subtype OnAccountSuppressionList, never delivered
    details = bounce.record["bounce"]
    assert (details["bounceType"], details["bounceSubType"]) == (
        "Permanent",
        "OnAccountSuppressionList",
    )
    assert "suppression list" in details["bouncedRecipients"][0]["diagnosticCode"]


def test_a_complaint_follows_the_delivery_as_abuse() -> None:
    # Given an email to the simulator's complaint address
    # When its events are made
    events = simulated_events(email("complaint@simulator.amazonses.com"))

    # Then Send, Delivery, and later a Complaint of type abuse from that recipient
    assert [event.event_type for event in events] == ["Send", "Delivery", "Complaint"]
    complaint = events[2].record["complaint"]
    assert complaint["complaintFeedbackType"] == "abuse"
    assert complaint["complainedRecipients"] == [
        {"emailAddress": "complaint@simulator.amazonses.com"}
    ]
    assert events[2].delay_seconds > events[1].delay_seconds


def test_the_out_of_office_address_is_delivered() -> None:
    # Given an email to the simulator's out-of-office address
    # When its events are made
    events = simulated_events(email("ooto@simulator.amazonses.com"))

    # Then it is delivered (the auto-reply goes to the sender, not into an event)
    assert [event.event_type for event in events] == ["Send", "Delivery"]


def test_every_recipient_has_its_own_outcome_and_one_send_covers_them_all() -> None:
    # Given an email to a bouncing and a delivered address, with a copy to a complainer
    message = email(
        "bounce@simulator.amazonses.com",
        "reader@example.org",
        cc=("complaint@simulator.amazonses.com",),
    )

    # When its events are made
    events = simulated_events(message)

    # Then one Send names all three, and each recipient has its own events
    assert types(events) == [
        ("Send", [*message.to, *message.cc]),
        ("Bounce", ["bounce@simulator.amazonses.com"]),
        ("Delivery", ["reader@example.org"]),
        ("Delivery", ["complaint@simulator.amazonses.com"]),
        ("Complaint", ["complaint@simulator.amazonses.com"]),
    ]


def test_the_mail_object_carries_ses_id_tags_destination_and_send_time() -> None:
    # Given an email sent with Herald's tags through a configuration set
    # When its Delivery is made
    delivery = simulated_events(email("reader@example.org"))[1].record

    # Then its mail object is SES's: the SES id, the send's tags and SES's own, the time
    mail = delivery["mail"]
    assert mail["messageId"] == MESSAGE_ID
    assert mail["destination"] == ["reader@example.org"]
    assert mail["timestamp"] == "2026-12-03T10:00:00.123Z"
    assert mail["source"] == "herald@example.com"
    assert mail["sourceArn"] == "arn:aws:ses:us-east-1:123456789012:identity/example.com"
    assert mail["tags"]["herald-message-id"] == ["m-1"]
    assert mail["tags"]["herald-tenant-id"] == ["t-1"]
    assert mail["tags"]["ses:configuration-set"] == [CONFIGURATION_SET]
    assert mail["commonHeaders"]["subject"] == "Your receipt"


def test_only_the_event_types_the_destination_matches_are_published() -> None:
    # Given a configuration set whose destination matches bounces and complaints only
    matching = {"BOUNCE", "COMPLAINT"}

    # When a delivered and a bounced email's events are made
    delivered = simulated_events(email("reader@example.org"), matching=matching)
    bounced = simulated_events(email("bounce@simulator.amazonses.com"), matching=matching)

    # Then only the bounce is published
    assert delivered == []
    assert [event.event_type for event in bounced] == ["Bounce"]


def test_an_event_is_wrapped_as_eventbridge_delivers_it() -> None:
    # Given an SES Bounce record
    record = simulated_events(email("bounce@simulator.amazonses.com"))[1].record

    # When EventBridge's envelope is put around it
    envelope = eventbridge_event(
        record, region="us-east-1", configuration_set=CONFIGURATION_SET, now=SENT_AT
    )

    # Then it is the default bus's SES event with the record as its detail
    assert envelope["version"] == "0"
    assert envelope["detail-type"] == "Email Bounced"
    assert envelope["source"] == "aws.ses"
    assert envelope["account"] == "123456789012"
    assert envelope["time"] == "2026-12-03T10:00:00Z"
    assert envelope["region"] == "us-east-1"
    assert envelope["resources"] == [
        f"arn:aws:ses:us-east-1:123456789012:configuration-set/{CONFIGURATION_SET}"
    ]
    assert envelope["detail"] == record


@pytest.mark.parametrize(
    ("event_type", "detail_type"),
    [
        ("Send", "Email Sent"),
        ("Delivery", "Email Delivered"),
        ("Complaint", "Email Complaint Received"),
    ],
)
def test_each_event_type_has_eventbridge_detail_type(event_type: str, detail_type: str) -> None:
    # Given an event of each kind the complaint address produces
    events = simulated_events(email("complaint@simulator.amazonses.com"), matching=ALL_EVENT_TYPES)
    record = next(event.record for event in events if event.event_type == event_type)

    # When it is wrapped; Then its detail-type is EventBridge's name for it
    wrapped = eventbridge_event(
        record, region="us-east-1", configuration_set=CONFIGURATION_SET, now=SENT_AT
    )
    assert wrapped["detail-type"] == detail_type


def test_the_feedback_rule_pattern_matches_this_configuration_sets_events_only() -> None:
    # Given the template's pattern: SES's events tagged with this configuration set
    pattern = {
        "source": ["aws.ses"],
        "detail-type": ["Email Delivered", "Email Bounced"],
        "detail": {"mail": {"tags": {"ses:configuration-set": [CONFIGURATION_SET]}}},
    }
    record = simulated_events(email("reader@example.org"))[1].record
    ours = eventbridge_event(
        record, region="us-east-1", configuration_set=CONFIGURATION_SET, now=SENT_AT
    )
    theirs = eventbridge_event(
        record | {"mail": record["mail"] | {"tags": {"ses:configuration-set": ["other"]}}},
        region="us-east-1",
        configuration_set="other",
        now=SENT_AT,
    )

    # When each is matched; Then only this configuration set's event is routed
    assert matches(pattern, ours)
    assert not matches(pattern, theirs)


def test_a_pattern_filter_the_local_system_cannot_follow_is_refused() -> None:
    # Given a pattern with a content filter; When it is checked; Then it is refused
    with pytest.raises(UnsupportedPatternError, match="prefix"):
        check_pattern({"source": [{"prefix": "aws."}]}, "FeedbackRule.EventPattern")


def field_paths(value: Any, prefix: str = "") -> set[str]:
    """Every field's path in a JSON value (``/detail/bounce/bouncedRecipients[]/status``)."""
    if isinstance(value, dict):
        return {
            path
            for key, item in value.items()
            for path in {f"{prefix}/{key}", *field_paths(item, f"{prefix}/{key}")}
        }
    if isinstance(value, list):
        return {path for item in value for path in field_paths(item, f"{prefix}[]")}
    return set()


@pytest.mark.parametrize(
    ("fixture", "address", "event_type"),
    [
        ("ses-feedback-send.json", "success@simulator.amazonses.com", "Send"),
        ("ses-feedback-delivery.json", "success@simulator.amazonses.com", "Delivery"),
        ("ses-feedback-bounce-permanent.json", "bounce@simulator.amazonses.com", "Bounce"),
        ("ses-feedback-complaint.json", "complaint@simulator.amazonses.com", "Complaint"),
    ],
)
def test_each_event_has_every_field_of_the_sample_built_from_aws_docs(
    fixture: str, address: str, event_type: str
) -> None:
    # Given the sample event the consumer is tested with (events/, from AWS's examples)
    sample = json.loads((EVENTS_DIR / fixture).read_text())

    # When the local SES makes the same kind of event
    record = next(
        event.record for event in simulated_events(email(address)) if event.event_type == event_type
    )
    made = eventbridge_event(
        record, region="us-east-1", configuration_set=CONFIGURATION_SET, now=SENT_AT
    )

    # Then it has every field the sample has, at the same place
    assert field_paths(sample) - field_paths(made) == set()
