"""The feedback consumer against real PostgreSQL and the moto server's SQS, fed the sample
events in events/ (AWS's documented examples in EventBridge's envelope)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from uuid import uuid4

import pytest
from mypy_boto3_sqs import SQSClient
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service.db.models import Message, MessageEvent
from shared.contracts import TaskResult
from shared.errors import FailureCode, failure_text
from tests.integration.conftest import Caller, drain, new_queue
from tests.support.builders import status_of
from tests.support.consumers import Feedback, Results
from tests.support.feedback_events import (
    READER,
    SENT_AT,
    events,
    message_to,
    recipients,
    sample,
    ses_id_of,
    suppressions,
    untagged,
)

# -- each documented event type ------------------------------------------------------------


def test_delivery_makes_a_sent_message_to_one_recipient_delivered(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message to one recipient
    message_id = message_to(engine, caller.tenant_id)

    # When SES's Delivery event for it is consumed
    applied = feedback.consume(sample("delivery", message_id, caller.tenant_id))

    # Then the recipient and the message are delivered, with the SMTP answer
    assert applied == 1
    assert status_of(engine, message_id) == ("delivered", None)
    assert recipients(engine, message_id) == {
        READER: ("delivered", None, None, "250 2.6.0 Message received")
    }
    assert (feedback.count("EmailsDelivered"), feedback.count("FeedbackEventsApplied")) == (1, 1)


def test_permanent_bounce_bounces_the_message_and_suppresses_the_address(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message
    message_id = message_to(engine, caller.tenant_id)

    # When SES's permanent Bounce event for it is consumed
    feedback.consume(sample("bounce-permanent", message_id, caller.tenant_id))

    # Then the message is bounced, with SES's bounce type and the diagnostic, and the
    # address is on the tenant's suppression list
    assert status_of(engine, message_id) == ("bounced", None)
    assert recipients(engine, message_id) == {
        READER: ("bounced", "Permanent", "General", "smtp; 550 5.1.1 user unknown")
    }
    assert suppressions(engine, caller.tenant_id) == {
        READER: ("bounce", message_id, "smtp; 550 5.1.1 user unknown")
    }
    assert feedback.count("EmailsBounced") == 1


def test_transient_bounce_bounces_the_message_without_suppressing_the_address(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message
    message_id = message_to(engine, caller.tenant_id)

    # When SES's transient Bounce event for it is consumed
    feedback.consume(sample("bounce-transient", message_id, caller.tenant_id))

    # Then the message is bounced, and the address may still be sent to
    assert status_of(engine, message_id) == ("bounced", None)
    assert recipients(engine, message_id)[READER][:2] == ("bounced", "Transient")
    assert suppressions(engine, caller.tenant_id) == {}


def test_complaint_makes_the_message_complained_and_suppresses_the_address(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message
    message_id = message_to(engine, caller.tenant_id)

    # When SES's Complaint event for it is consumed
    feedback.consume(sample("complaint", message_id, caller.tenant_id))

    # Then the message is complained and the address is suppressed, with the complaint type
    assert status_of(engine, message_id) == ("complained", None)
    assert suppressions(engine, caller.tenant_id) == {
        READER: ("complaint", message_id, "complaint (abuse)")
    }
    assert feedback.count("EmailsComplained") == 1


@pytest.mark.parametrize(
    ("kind", "subtype_at"),
    [
        ("bounce-permanent", ("bounce", "bounceSubType")),
        ("complaint", ("complaint", "complaintSubType")),
    ],
    ids=["bounce", "complaint"],
)
def test_an_event_from_the_account_suppression_list_does_not_suppress_for_this_tenant(
    engine: Engine, caller: Caller, feedback: Feedback, kind: str, subtype_at: tuple[str, str]
) -> None:
    # Given a sent message to an address SES's account-wide list holds (another tenant's
    # bounce or complaint put it there: SES's list is one per account), and SES's event
    # for it, a bounce or a complaint of subtype OnAccountSuppressionList (SES: "SES
    # accepted the message, but didn't attempt to send it")
    message_id = message_to(engine, caller.tenant_id)
    event = json.loads(sample(kind, message_id, caller.tenant_id))
    section, field = subtype_at
    event["detail"][section][field] = "OnAccountSuppressionList"

    # When it is consumed
    feedback.consume(json.dumps(event))

    # Then either way the message is bounced with SES's reason (not delivered, nobody of
    # this tenant's complained), and this tenant's own list is untouched
    assert status_of(engine, message_id) == ("bounced", None)
    assert recipients(engine, message_id)[READER][:3] == (
        "bounced",
        "Permanent",
        "OnAccountSuppressionList",
    )
    assert suppressions(engine, caller.tenant_id) == {}
    assert feedback.count("EmailsComplained") == 0
    assert feedback.count("EmailsBounced") == 1


def test_a_not_spam_feedback_report_is_history_only(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message whose recipient's provider reports it as not spam (RFC 5965's
    # Feedback-Type not-spam, which SES passes on as complaintFeedbackType)
    message_id = message_to(engine, caller.tenant_id)
    event = json.loads(sample("complaint", message_id, caller.tenant_id))
    event["detail"]["complaint"]["complaintFeedbackType"] = "not-spam"

    # When it is consumed
    feedback.consume(json.dumps(event))

    # Then it is in the history, but the message stays sent and nothing is suppressed
    assert status_of(engine, message_id) == ("sent", None)
    assert recipients(engine, message_id) == {}
    assert suppressions(engine, caller.tenant_id) == {}
    assert feedback.count("EmailsComplained") == 0
    assert "Complaint" in events(engine, message_id)


def test_reject_fails_the_message_with_ses_rejected_and_the_reason(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message
    message_id = message_to(engine, caller.tenant_id)

    # When SES's Reject event for it is consumed
    feedback.consume(sample("reject", message_id, caller.tenant_id))

    # Then the message failed, saying SES rejected it and why; its recipient is rejected
    status, error = status_of(engine, message_id)
    assert status == "failed"
    assert error == f"{failure_text(FailureCode.SES_REJECTED)} SES said: Bad content"
    assert recipients(engine, message_id)[READER][0] == "rejected"
    assert suppressions(engine, caller.tenant_id) == {}


def test_rendering_failure_fails_the_message_with_rendering_failed(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message
    message_id = message_to(engine, caller.tenant_id)

    # When SES's Rendering Failure event for it is consumed
    feedback.consume(sample("rendering-failure", message_id, caller.tenant_id))

    # Then the message failed with Herald's text for a rendering failure and SES's message
    status, error = status_of(engine, message_id)
    assert status == "failed"
    assert error is not None
    assert error.startswith(failure_text(FailureCode.RENDERING_FAILED))
    assert "Attribute 'attributeName' is not present" in error


def test_delivery_delay_marks_the_recipient_delayed_and_the_message_stays_sent(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message
    message_id = message_to(engine, caller.tenant_id)

    # When SES's DeliveryDelay event for it is consumed
    feedback.consume(sample("delivery-delay", message_id, caller.tenant_id))

    # Then the recipient is delayed, with the diagnostic, and the message is still sent
    assert status_of(engine, message_id) == ("sent", None)
    assert recipients(engine, message_id) == {
        READER: ("delayed", None, None, "smtp; 421 4.4.0 Unable to lookup DNS for example.org")
    }


def test_send_event_is_recorded_as_history_only(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message
    message_id = message_to(engine, caller.tenant_id)

    # When SES's Send event for it is consumed
    feedback.consume(sample("send", message_id, caller.tenant_id))

    # Then it is in the message's events, and nothing else changed
    assert events(engine, message_id) == ["Send"]
    assert recipients(engine, message_id) == {}
    assert status_of(engine, message_id) == ("sent", None)


# -- at least once, in any order -------------------------------------------------------------


def test_an_event_delivered_twice_is_applied_once(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message whose Bounce event was consumed
    message_id = message_to(engine, caller.tenant_id)
    bounce = sample("bounce-permanent", message_id, caller.tenant_id)
    feedback.consume(bounce)

    # When SES delivers the same event again
    applied = feedback.consume(bounce)

    # Then it is counted as a repeat and recorded once
    assert applied == 0
    assert events(engine, message_id) == ["Bounce"]
    assert feedback.count("FeedbackEventsRepeated") == 1
    assert feedback.count("EmailsBounced") == 1


def test_a_complaint_before_the_delivery_still_ends_complained(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message whose Complaint event arrived first
    message_id = message_to(engine, caller.tenant_id)
    feedback.consume(sample("complaint", message_id, caller.tenant_id))

    # When its Delivery event arrives after it
    feedback.consume(sample("delivery", message_id, caller.tenant_id))

    # Then the recipient and the message stay complained; both events are kept, in SES's order
    assert status_of(engine, message_id) == ("complained", None)
    assert recipients(engine, message_id)[READER][0] == "complained"
    assert events(engine, message_id) == ["Delivery", "Complaint"]


def test_a_delay_after_the_delivery_is_recorded_without_downgrading(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a delivered message
    message_id = message_to(engine, caller.tenant_id)
    feedback.consume(sample("delivery", message_id, caller.tenant_id))

    # When a DeliveryDelay event for it arrives late
    feedback.consume(sample("delivery-delay", message_id, caller.tenant_id))

    # Then the recipient and the message stay delivered; the delay is history
    assert status_of(engine, message_id) == ("delivered", None)
    assert recipients(engine, message_id)[READER][0] == "delivered"
    assert events(engine, message_id) == ["Delivery", "DeliveryDelay"]


def test_a_permanent_bounce_after_a_transient_one_suppresses_the_address(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a message whose recipient bounced transiently
    message_id = message_to(engine, caller.tenant_id)
    feedback.consume(sample("bounce-transient", message_id, caller.tenant_id))

    # When a permanent bounce follows
    feedback.consume(sample("bounce-permanent", message_id, caller.tenant_id))

    # Then the recipient's bounce is permanent and the address suppressed
    assert recipients(engine, message_id)[READER][:2] == ("bounced", "Permanent")
    assert list(suppressions(engine, caller.tenant_id)) == [READER]


def test_events_before_the_sent_result_wait_for_it_and_then_count(
    engine: Engine, sqs: SQSClient, caller: Caller, feedback: Feedback
) -> None:
    # Given a message still queued (its result not applied yet) whose Delivery arrived
    message_id = message_to(engine, caller.tenant_id, status="queued")
    feedback.consume(sample("delivery", message_id, caller.tenant_id))
    assert status_of(engine, message_id) == ("queued", None)

    # When the task runner's sent result is consumed
    result_queue = new_queue(sqs, "results")
    results = Results(engine, sqs, result_queue)
    sqs.send_message(
        QueueUrl=result_queue,
        MessageBody=TaskResult.sent(message_id, ses_id_of(message_id), SENT_AT).model_dump_json(),
    )
    results.consume_once()

    # Then the message is delivered at once, with SES's id
    with Session(engine) as session:
        stored = session.get_one(Message, message_id)
    assert (stored.status, stored.provider_message_id) == ("delivered", ses_id_of(message_id))


def test_a_repeated_sent_result_after_the_delivery_is_a_repeat(
    engine: Engine, sqs: SQSClient, caller: Caller, feedback: Feedback
) -> None:
    # Given a delivered message
    message_id = message_to(engine, caller.tenant_id)
    feedback.consume(sample("delivery", message_id, caller.tenant_id))

    # When its sent result arrives again (SQS delivers at least once)
    result_queue = new_queue(sqs, "results")
    results = Results(engine, sqs, result_queue)
    sqs.send_message(
        QueueUrl=result_queue,
        MessageBody=TaskResult.sent(message_id, ses_id_of(message_id), SENT_AT).model_dump_json(),
    )
    results.consume_once()

    # Then it is a harmless repeat: the message stays delivered, no rejection is counted
    assert status_of(engine, message_id) == ("delivered", None)
    assert results.metrics.values["ResultsRepeated"] == [1.0]
    assert "ResultsRejected" not in results.metrics.values


# -- the summary of several recipients --------------------------------------------------------


def test_a_message_is_delivered_only_once_every_recipient_is(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message to two recipients, one of them delivered
    message_id = message_to(engine, caller.tenant_id, READER, "second@example.org")
    feedback.consume(sample("delivery", message_id, caller.tenant_id))
    assert status_of(engine, message_id) == ("sent", None)

    # When the other's Delivery event arrives
    feedback.consume(
        sample("delivery", message_id, caller.tenant_id, recipient="Second@Example.org")
    )

    # Then the message is delivered (addresses compared in any case)
    assert status_of(engine, message_id) == ("delivered", None)


def test_one_bounced_recipient_of_two_makes_the_message_bounced(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message to two recipients
    message_id = message_to(engine, caller.tenant_id, READER, "second@example.org")

    # When one is delivered and the other bounces
    feedback.consume(
        sample("delivery", message_id, caller.tenant_id),
        sample("bounce-transient", message_id, caller.tenant_id, recipient="second@example.org"),
    )

    # Then the message is bounced
    assert status_of(engine, message_id) == ("bounced", None)


# -- what is not applied -----------------------------------------------------------------------


def test_a_poison_event_is_deleted_and_counted_without_blocking_its_batch(
    engine: Engine, sqs: SQSClient, queue_url: str, caller: Caller, feedback: Feedback
) -> None:
    # Given a batch of a good event, a body that is not JSON, and an SES Bounce without
    # its bounced recipients
    message_id = message_to(engine, caller.tenant_id)
    broken = json.loads(sample("bounce-permanent", message_id, caller.tenant_id))
    del broken["detail"]["bounce"]["bouncedRecipients"]

    # When the batch is consumed
    applied = feedback.consume(
        sample("delivery", message_id, caller.tenant_id), "{not json", json.dumps(broken)
    )

    # Then the good event is applied, the two poison ones are logged, counted and deleted
    assert applied == 1
    assert status_of(engine, message_id) == ("delivered", None)
    assert feedback.count("FeedbackEventsRejected") == 2
    assert [line["message"] for line in feedback.log_lines()].count(
        "not an SES event; deleted"
    ) == 2
    assert drain(sqs, queue_url) == []


def test_an_event_tagged_with_another_tenant_never_touches_the_message(
    engine: Engine, caller: Caller, other_caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message of one tenant
    message_id = message_to(engine, caller.tenant_id)

    # When a Bounce names that message, its SES id and another tenant
    feedback.consume(sample("bounce-permanent", message_id, other_caller.tenant_id))

    # Then nothing changes for either tenant; the event is counted as unmatched
    assert status_of(engine, message_id) == ("sent", None)
    assert events(engine, message_id) == []
    assert suppressions(engine, caller.tenant_id) == suppressions(engine, other_caller.tenant_id)
    assert suppressions(engine, other_caller.tenant_id) == {}
    assert feedback.count("FeedbackEventsUnmatched") == 1


def test_an_untagged_event_finds_its_message_by_the_ses_message_id(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message
    message_id = message_to(engine, caller.tenant_id)

    # When its Delivery event carries no Herald tags
    feedback.consume(untagged(sample("delivery", message_id, caller.tenant_id)))

    # Then SES's message id finds the message
    assert status_of(engine, message_id) == ("delivered", None)


def test_an_event_for_no_known_message_is_deleted_and_counted_unmatched(
    engine: Engine, sqs: SQSClient, queue_url: str, caller: Caller, feedback: Feedback
) -> None:
    # Given no message with the event's id or SES id
    unknown = uuid4()

    # When its event is consumed
    feedback.consume(sample("delivery", unknown, caller.tenant_id))

    # Then it is counted as unmatched and gone from the queue
    assert feedback.count("FeedbackEventsUnmatched") == 1
    assert drain(sqs, queue_url) == []


def test_open_and_click_events_are_counted_and_dropped(
    engine: Engine, sqs: SQSClient, queue_url: str, caller: Caller, feedback: Feedback
) -> None:
    # Given Open and Click events of a sent message (types Herald does not record)
    message_id = message_to(engine, caller.tenant_id)
    opened = json.loads(sample("send", message_id, caller.tenant_id))
    opened["detail-type"], opened["detail"]["eventType"] = "Email Opened", "Open"
    opened["detail"]["open"] = {"timestamp": "2026-12-03T10:20:00.000Z", "ipAddress": "192.0.2.1"}
    clicked = json.loads(json.dumps(opened))
    clicked["detail-type"], clicked["detail"]["eventType"] = "Email Clicked", "Click"

    # When they are consumed
    applied = feedback.consume(json.dumps(opened), json.dumps(clicked))

    # Then they are counted apart from the rejected ones, and dropped
    assert applied == 0
    assert feedback.count("FeedbackEventsIgnored") == 2
    assert "FeedbackEventsRejected" not in feedback.metrics.values
    assert events(engine, message_id) == []
    assert drain(sqs, queue_url) == []


def test_a_suppression_is_per_tenant(
    engine: Engine, caller: Caller, other_caller: Caller, feedback: Feedback
) -> None:
    # Given two tenants each with a sent message to the same address
    mine = message_to(engine, caller.tenant_id)
    theirs = message_to(engine, other_caller.tenant_id)

    # When only one tenant's message bounces permanently
    feedback.consume(sample("bounce-permanent", mine, caller.tenant_id))

    # Then only that tenant's list has the address
    assert list(suppressions(engine, caller.tenant_id)) == [READER]
    assert suppressions(engine, other_caller.tenant_id) == {}
    assert status_of(engine, theirs) == ("sent", None)


def test_a_batch_of_events_of_one_message_is_applied_in_one_pass(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message
    message_id = message_to(engine, caller.tenant_id)

    # When its Send, Delivery and Complaint events arrive in one batch, out of order
    applied = feedback.consume(
        sample("complaint", message_id, caller.tenant_id),
        sample("send", message_id, caller.tenant_id),
        sample("delivery", message_id, caller.tenant_id),
    )

    # Then all three are applied and the message ends complained
    assert applied == 3
    assert status_of(engine, message_id) == ("complained", None)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(MessageEvent)) == 3


def test_an_event_with_a_nul_character_is_poison_not_a_database_error(
    engine: Engine, sqs: SQSClient, queue_url: str, caller: Caller, feedback: Feedback
) -> None:
    # Given a Bounce whose diagnostic holds a NUL (PostgreSQL's text refuses it)
    message_id = message_to(engine, caller.tenant_id)
    event = json.loads(sample("bounce-permanent", message_id, caller.tenant_id))
    event["detail"]["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = "smtp; 550\x00"

    # When it is consumed
    feedback.consume(json.dumps(event))

    # Then it is rejected at the edge and deleted; the message is untouched
    assert feedback.count("FeedbackEventsRejected") == 1
    assert status_of(engine, message_id) == ("sent", None)
    assert drain(sqs, queue_url) == []


@pytest.fixture
def database_refuses_delays(owner_engine: Engine) -> Iterator[None]:
    """PostgreSQL refuses to record a DeliveryDelay event, until the test ends."""
    with owner_engine.begin() as connection:
        connection.execute(
            text(
                "ALTER TABLE message_events ADD CONSTRAINT ck_test_no_delays "
                "CHECK (event_type <> 'DeliveryDelay') NOT VALID"
            )
        )
    yield
    with owner_engine.begin() as connection:
        connection.execute(text("ALTER TABLE message_events DROP CONSTRAINT ck_test_no_delays"))


def test_an_event_the_database_refuses_is_left_for_the_dlq_and_its_batch_applies(
    engine: Engine, sqs: SQSClient, caller: Caller, database_refuses_delays: None
) -> None:
    # Given a queue that shows a message again at once, and a batch of a Delivery of one
    # message and a DeliveryDelay of another, which the database refuses
    queue_url = sqs.create_queue(
        QueueName=f"feedback-{uuid4().hex[:12]}", Attributes={"VisibilityTimeout": "0"}
    )["QueueUrl"]
    feedback = Feedback(engine, sqs, queue_url)
    delivered, delayed = message_to(engine, caller.tenant_id), message_to(engine, caller.tenant_id)

    # When the batch is consumed
    applied = feedback.consume(
        sample("delivery", delivered, caller.tenant_id),
        sample("delivery-delay", delayed, caller.tenant_id),
    )

    # Then the Delivery is applied and the refused event alone stays on the queue
    assert applied == 1
    assert status_of(engine, delivered) == ("delivered", None)
    assert events(engine, delayed) == []
    left = drain(sqs, queue_url)
    assert [json.loads(m["Body"])["detail"]["eventType"] for m in left] == ["DeliveryDelay"]
