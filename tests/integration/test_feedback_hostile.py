"""The feedback consumer, and the suppression list it fills, against hostile and careless
input (issue 14's review): events naming addresses their message was never sent to, an
oversized diagnostic, clocks out of range, a tampered suppression-list cursor, and two
consumers applying one message's events at once."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ecs_service.db.models import Message, MessageEvent
from tests.integration.conftest import Caller, drain
from tests.support.builders import status_of
from tests.support.consumers import Feedback
from tests.support.feedback_events import (
    READER,
    message_to,
    recipients,
    sample,
    suppressions,
    untagged,
)

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from mypy_boto3_sqs import SQSClient
    from sqlalchemy.engine import Engine

STRANGER = "ceo@victim.example"


def with_bounced(body: str, **fields: Any) -> str:
    """``body`` (a Bounce) with its bounced recipient's fields replaced."""
    event = json.loads(body)
    event["detail"]["bounce"]["bouncedRecipients"][0].update(fields)
    return json.dumps(event)


def occurred_at(engine: Engine, message_id: Any) -> list[datetime]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(MessageEvent.occurred_at).where(MessageEvent.message_id == message_id)
            )
        )


# -- addresses the message was never sent to -----------------------------------------------


def test_a_bounce_naming_an_address_the_message_never_had_neither_adds_nor_suppresses_it(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message to READER
    message_id = message_to(engine, caller.tenant_id)

    # When a permanent Bounce for it names another address
    body = with_bounced(
        sample("bounce-permanent", message_id, caller.tenant_id), emailAddress=STRANGER
    )
    feedback.consume(body)

    # Then the event is history only: no recipient added, nothing suppressed, still sent
    assert status_of(engine, message_id) == ("sent", None)
    assert recipients(engine, message_id) == {}
    assert suppressions(engine, caller.tenant_id) == {}
    assert feedback.count("EmailsBounced") == 0
    assert any(
        line["message"].startswith("feedback named addresses its message was not sent to")
        for line in feedback.log_lines()
    )


def test_a_bounce_naming_the_recipient_in_another_case_and_ascii_form_is_its_recipients(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message to an address with an internationalized domain
    message_id = message_to(engine, caller.tenant_id, "Reader@Bücher.example")

    # When SES's Bounce names it in another case, its domain in ASCII
    feedback.consume(
        sample(
            "bounce-permanent",
            message_id,
            caller.tenant_id,
            recipient="READER@XN--BCHER-KVA.EXAMPLE",
        )
    )

    # Then it is that recipient that bounced and is suppressed
    assert status_of(engine, message_id) == ("bounced", None)
    assert list(recipients(engine, message_id)) == ["reader@xn--bcher-kva.example"]
    assert list(suppressions(engine, caller.tenant_id)) == ["reader@xn--bcher-kva.example"]


# -- oversized fields ------------------------------------------------------------------------


def test_a_bounce_with_a_very_long_diagnostic_is_applied_with_its_first_thousand_characters(
    engine: Engine, sqs: SQSClient, queue_url: str, caller: Caller, feedback: Feedback
) -> None:
    # Given a permanent Bounce whose diagnostic is 25,000 characters (a server's long answer)
    message_id = message_to(engine, caller.tenant_id)
    diagnostic = "smtp; 550 " + "x" * 25_000
    body = with_bounced(
        sample("bounce-permanent", message_id, caller.tenant_id), diagnosticCode=diagnostic
    )

    # When it is consumed
    feedback.consume(body)

    # Then the bounce is not lost: applied, suppressed, the diagnostic cut to 1,000 characters
    assert status_of(engine, message_id) == ("bounced", None)
    assert recipients(engine, message_id)[READER][3] == diagnostic[:1_000]
    assert list(suppressions(engine, caller.tenant_id)) == [READER]
    assert feedback.count("FeedbackEventsRejected") == 0
    assert drain(sqs, queue_url) == []


# -- clocks -----------------------------------------------------------------------------------


def test_a_time_postgresql_could_not_read_back_is_poison_and_the_message_takes_later_events(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a DeliveryDelay stamped in year 10000 (UTC), which PostgreSQL stores but Python
    # cannot read back
    message_id = message_to(engine, caller.tenant_id)
    event = json.loads(sample("delivery-delay", message_id, caller.tenant_id))
    event["detail"]["deliveryDelay"]["timestamp"] = "9999-12-31T23:00:00-05:00"

    # When it is consumed, and then the real Delivery
    feedback.consume(json.dumps(event))
    feedback.consume(sample("delivery", message_id, caller.tenant_id))

    # Then the first was refused at the edge and the Delivery still applies
    assert feedback.count("FeedbackEventsRejected") == 1
    assert status_of(engine, message_id) == ("delivered", None)


def test_an_event_stamped_in_the_future_is_recorded_no_later_than_it_was_received(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a Delivery whose clock is decades ahead
    message_id = message_to(engine, caller.tenant_id)
    event = json.loads(sample("delivery", message_id, caller.tenant_id))
    event["detail"]["delivery"]["timestamp"] = "2100-01-01T00:00:00Z"

    # When it is consumed
    feedback.consume(json.dumps(event))

    # Then it is applied, at a time no later than now
    assert status_of(engine, message_id) == ("delivered", None)
    assert [t <= datetime.now(UTC) for t in occurred_at(engine, message_id)] == [True]


# -- the suppression list's cursor ---------------------------------------------------------


def test_a_tampered_cursor_naming_no_address_is_a_validation_problem_not_a_server_error(
    client: TestClient, caller: Caller
) -> None:
    # Given cursors forged to carry a NUL and a lone surrogate (PostgreSQL refuses both)
    forged = [
        {"c": "2026-12-03T10:00:00+00:00", "a": "a\x00b@example.org"},
        {"c": "2026-12-03T10:00:00+00:00", "a": "\ud800@example.org"},
    ]
    tokens = [
        base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=") for raw in forged
    ]

    # When the list is asked for with each
    statuses = [
        client.get("/v1/suppressions", params={"cursor": t}, headers=caller.headers).status_code
        for t in tokens
    ]

    # Then each is the cursor's validation problem
    assert statuses == [422, 422]


# -- concurrent consumers --------------------------------------------------------------------


def test_two_consumers_applying_one_messages_events_at_once_end_in_the_strongest_state(
    engine: Engine, sqs: SQSClient, caller: Caller
) -> None:
    # Given a sent message to two recipients, and two consumers of two queues: one with the
    # Delivery of both, one with a permanent Bounce of one
    other = "other@example.org"
    message_id = message_to(engine, caller.tenant_id, READER, other)
    delivery = json.loads(sample("delivery", message_id, caller.tenant_id))
    delivery["detail"]["delivery"]["recipients"] = [READER, other]
    consumers = [
        Feedback(
            engine,
            sqs,
            sqs.create_queue(QueueName=f"feedback-h13-{n}-{message_id.hex[:8]}")["QueueUrl"],
        )
        for n in range(2)
    ]
    consumers[0].publish(json.dumps(delivery))
    consumers[1].publish(sample("bounce-permanent", message_id, caller.tenant_id))

    # When both consume at the same moment
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def consume(each: Feedback) -> None:
        start.wait()
        try:
            each.consumer.consume_once()
        except BaseException as error:  # noqa: BLE001  (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=consume, args=(c,)) for c in consumers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # Then both applied, one after the other: the bounce wins over the delivery
    assert errors == []
    assert status_of(engine, message_id) == ("bounced", None)
    assert {a: r[0] for a, r in recipients(engine, message_id).items()} == {
        READER: "bounced",
        other: "delivered",
    }


# -- repeats and reorders ----------------------------------------------------------------------


def test_one_ses_event_in_two_eventbridge_envelopes_is_applied_once(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given SES's Bounce delivered twice by EventBridge, in envelopes of different ids and times
    message_id = message_to(engine, caller.tenant_id)
    first = json.loads(sample("bounce-permanent", message_id, caller.tenant_id))
    second = dict(first, id="6f0f2d1c-0000-4000-8000-00000000beef", time="2026-12-03T10:05:00Z")

    # When both are consumed
    applied = feedback.consume(json.dumps(first), json.dumps(second))

    # Then the event is applied once and the other counted as a repeat
    assert applied == 1
    assert (feedback.count("EmailsBounced"), feedback.count("FeedbackEventsRepeated")) == (1, 1)


def test_a_delivery_after_a_bounce_of_the_same_recipient_never_undoes_the_bounce(
    engine: Engine, caller: Caller, feedback: Feedback
) -> None:
    # Given a sent message whose recipient bounced permanently
    message_id = message_to(engine, caller.tenant_id)
    feedback.consume(sample("bounce-permanent", message_id, caller.tenant_id))

    # When a Delivery of that recipient follows
    feedback.consume(sample("delivery", message_id, caller.tenant_id))

    # Then the recipient and the message stay bounced, and the address suppressed
    assert status_of(engine, message_id) == ("bounced", None)
    assert recipients(engine, message_id)[READER][0] == "bounced"
    assert list(suppressions(engine, caller.tenant_id)) == [READER]
    assert feedback.count("EmailsDelivered") == 0


# -- SES's id claimed twice ----------------------------------------------------------------------


def test_an_untagged_event_whose_ses_id_two_messages_claim_touches_neither(
    engine: Engine, caller: Caller, other_caller: Caller, feedback: Feedback
) -> None:
    # Given two tenants' sent messages that claim the same SES message id (a garbled or
    # forged result), and an untagged Bounce naming that id
    mine = message_to(engine, caller.tenant_id)
    theirs = message_to(engine, other_caller.tenant_id)
    with engine.begin() as connection:
        connection.execute(
            update(Message)
            .where(Message.id == theirs)
            .values(
                provider_message_id=select(Message.provider_message_id)
                .where(Message.id == mine)
                .scalar_subquery()
            )
        )
    body = untagged(sample("bounce-permanent", mine, caller.tenant_id))

    # When it is consumed
    feedback.consume(body)

    # Then it is unmatched: neither message, nor either tenant's list, changes
    assert feedback.count("FeedbackEventsUnmatched") == 1
    assert [status_of(engine, m) for m in (mine, theirs)] == [("sent", None)] * 2
    assert (
        suppressions(engine, caller.tenant_id) == suppressions(engine, other_caller.tenant_id) == {}
    )
