"""What SES said of each email, as the api answers it: statuses, recipients and events."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.support.feedback import (
    bounced,
    complained,
    delivered,
    event,
    record,
    sent_message,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastapi.testclient import TestClient
    from sqlalchemy.engine import Engine

    from ecs_service.feedback_store import RecipientOutcome
    from tests.integration.conftest import Caller

ADA, BOB = "ada@example.org", "bob@example.org"


def test_a_message_every_recipient_received_is_delivered_with_each_recipient_and_event(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a sent message to two recipients, and SES's Send and a Delivery for each
    message_id = sent_message(client, engine, caller, ADA, BOB)
    record(
        engine,
        event(message_id, caller.tenant_id, "Send", seconds=0),
        event(message_id, caller.tenant_id, "Delivery", delivered(BOB), seconds=3),
        event(message_id, caller.tenant_id, "Delivery", delivered(ADA), seconds=2),
    )

    # When the message is read
    body = client.get(f"/v1/messages/{message_id}", headers=caller.headers).json()

    # Then it is delivered, each recipient says so, and the events come oldest first
    assert body["status"] == "delivered"
    assert [(r["address"], r["status"]) for r in body["recipients"]] == [
        (ADA, "delivered"),
        (BOB, "delivered"),
    ]
    assert [(e["type"], e["recipient"]) for e in body["events"]] == [
        ("Send", None),
        ("Delivery", ADA),
        ("Delivery", BOB),
    ]
    assert body["events"][1]["occurred_at"] == "2026-12-03T10:00:02Z"


def test_a_bounce_shows_its_type_subtype_and_diagnostic(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a sent message whose recipient bounced for good
    message_id = sent_message(client, engine, caller, ADA)
    record(
        engine,
        event(
            message_id,
            caller.tenant_id,
            "Bounce",
            bounced(ADA),
            detail={"bounceType": "Permanent", "diagnosticCode": "smtp; 550 5.1.1 user unknown"},
        ),
    )

    # When it is read
    body = client.get(f"/v1/messages/{message_id}", headers=caller.headers).json()

    # Then the message is bounced, and its recipient carries what SES said
    assert body["status"] == "bounced"
    assert body["recipients"] == [
        {
            "address": ADA,
            "status": "bounced",
            "bounce_type": "Permanent",
            "bounce_subtype": "General",
            "diagnostic": "smtp; 550 5.1.1 user unknown",
            "updated_at": "2026-12-03T10:00:01Z",
        }
    ]
    assert body["events"][0]["detail"] == {
        "bounceType": "Permanent",
        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
    }


def test_a_recipient_ses_has_not_reported_on_is_absent_and_the_message_stays_sent(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a sent message to two recipients, only one of them delivered so far
    message_id = sent_message(client, engine, caller, ADA, BOB)
    record(engine, event(message_id, caller.tenant_id, "Delivery", delivered(ADA)))

    # When it is read
    body = client.get(f"/v1/messages/{message_id}", headers=caller.headers).json()

    # Then it is still sent, and only the delivered recipient is listed
    assert body["status"] == "sent"
    assert [r["address"] for r in body["recipients"]] == [ADA]


def test_a_new_message_has_no_recipients_or_events_and_reads_back_as_created(
    client: TestClient, caller: Caller
) -> None:
    # When a message is scheduled
    created = client.post(
        "/v1/messages",
        json={"to": [ADA], "subject": "Hello", "text": "Hi"},
        headers=caller.headers,
    ).json()

    # Then SES has said nothing of it yet, and a read answers the same
    assert (created["recipients"], created["events"]) == ([], [])
    assert client.get(f"/v1/messages/{created['id']}", headers=caller.headers).json() == created


def test_a_message_answers_its_latest_100_events_oldest_first(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a message with 101 events (SES said "delayed" again and again)
    message_id = sent_message(client, engine, caller, ADA)
    record(
        engine,
        *(event(message_id, caller.tenant_id, "DeliveryDelay", seconds=i + 1) for i in range(101)),
    )

    # When it is read
    events = client.get(f"/v1/messages/{message_id}", headers=caller.headers).json()["events"]

    # Then the latest 100 are there, oldest first: the earliest delay made room
    assert len(events) == 100
    assert events[0]["occurred_at"] == "2026-12-03T10:00:02Z"
    assert events[-1]["occurred_at"] == "2026-12-03T10:01:41Z"


@pytest.mark.parametrize(
    ("status", "kind", "outcome"),
    [
        ("delivered", "Delivery", delivered),
        ("bounced", "Bounce", bounced),
        ("complained", "Complaint", complained),
    ],
)
def test_the_list_filters_by_a_delivery_status_and_shows_it(
    client: TestClient,
    engine: Engine,
    caller: Caller,
    status: str,
    kind: str,
    outcome: Callable[[str], RecipientOutcome],
) -> None:
    # Given a message SES reported on, and one it has not
    reported = sent_message(client, engine, caller, ADA)
    sent_message(client, engine, caller, BOB)
    record(engine, event(reported, caller.tenant_id, kind, outcome(ADA)))

    # When the list is filtered by that status
    page = client.get("/v1/messages", params={"status": status}, headers=caller.headers).json()

    # Then it holds that message only, with its status, and no recipients or events
    assert [(m["id"], m["status"]) for m in page["items"]] == [(str(reported), status)]
    assert "recipients" not in page["items"][0]
    assert "events" not in page["items"][0]


def test_another_tenant_cannot_read_a_messages_feedback(
    client: TestClient, engine: Engine, caller: Caller, other_caller: Caller
) -> None:
    # Given a delivered message of one tenant
    message_id = sent_message(client, engine, caller, ADA)
    record(engine, event(message_id, caller.tenant_id, "Delivery", delivered(ADA)))

    # When another tenant reads it, or lists its delivered messages
    read = client.get(f"/v1/messages/{message_id}", headers=other_caller.headers)
    listed = client.get(
        "/v1/messages", params={"status": "delivered"}, headers=other_caller.headers
    )

    # Then it is not found, and not listed
    assert read.status_code == 404
    assert listed.json()["items"] == []


def test_the_openapi_document_describes_recipients_events_and_the_new_statuses(
    client: TestClient,
) -> None:
    # When the OpenAPI document is read
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]

    # Then a message carries its recipients and events, each of a documented shape
    message = schemas["MessageOut"]
    assert {"recipients", "events"} <= set(message["required"])
    assert message["properties"]["recipients"]["items"] == {
        "$ref": "#/components/schemas/RecipientOut"
    }
    assert message["properties"]["events"]["items"] == {"$ref": "#/components/schemas/EventOut"}
    assert schemas["RecipientState"]["enum"] == [
        "complained",
        "bounced",
        "rejected",
        "delivered",
        "delayed",
    ]
    # And the list's status filter takes the delivery statuses
    (status,) = [
        p for p in document["paths"]["/v1/messages"]["get"]["parameters"] if p["name"] == "status"
    ]
    statuses = schemas["MessageStatus"]["enum"]
    assert {"delivered", "bounced", "complained"} <= set(statuses)
    assert status["schema"]["anyOf"][0] == {"$ref": "#/components/schemas/MessageStatus"}
