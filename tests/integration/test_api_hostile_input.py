"""Issue 13's hostile and careless input, through the api on the real PostgreSQL: each
reproduction is refused with a 422 naming the field, or made harmless."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from tests.integration.conftest import Caller
from tests.support.api import assert_problem, create, email


def field_errors(response: Any) -> list[dict[str, str]]:
    """The validation problem's errors, after checking it is one."""
    errors: list[dict[str, str]] = assert_problem(response, 422, "validation-error")["errors"]
    return errors


# Time bounds


def test_send_at_in_year_one_is_refused_naming_the_field(
    client: TestClient, caller: Caller
) -> None:
    # When a tenant schedules an email for year 1 (issue 13: 201, then no relay pass worked)
    response = client.post(
        "/v1/messages", json=email(send_at="0001-01-01T00:00:00+14:00"), headers=caller.headers
    )

    # Then it is a 422 naming body.send_at, and nothing is stored
    assert field_errors(response) == [
        {
            "location": "body.send_at",
            "message": "must be at most 5 minutes in the past (omit it to send now)",
        }
    ]
    assert client.get("/v1/messages", headers=caller.headers).json()["items"] == []


def test_send_at_a_minute_ago_is_accepted_as_clock_skew(client: TestClient, caller: Caller) -> None:
    send_at = (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)
    created = create(client, caller, send_at=send_at.isoformat())
    assert datetime.fromisoformat(created["send_at"]) == send_at


@pytest.mark.parametrize("send_at", [1_767_225_600_000, "1767225600000"], ids=["number", "digits"])
def test_send_at_as_epoch_milliseconds_is_refused(
    client: TestClient, caller: Caller, send_at: object
) -> None:
    # issue 13: a numeric send_at was read as epoch milliseconds
    (error,) = field_errors(
        client.post("/v1/messages", json=email(send_at=send_at), headers=caller.headers)
    )
    assert error["location"] == "body.send_at"
    assert error["message"].startswith("must be a date-time string with a UTC offset (RFC 3339)")


@pytest.mark.parametrize(
    "send_at",
    [
        "'0001-01-01 00:00:00+14'::timestamptz",
        "'1970-01-01 00:00:00+00'::timestamptz",
        "now() + interval '367 days'",
    ],
    ids=["year-1", "1970", "367-days-ahead"],
)
def test_database_refuses_a_send_at_out_of_bounds_written_directly(
    engine: Engine, caller: Caller, send_at: str
) -> None:
    # Given a writer that goes around the api
    insert = text(
        "INSERT INTO messages (id, tenant_id, status, payload, send_at) "
        f"VALUES (:id, :tenant_id, 'scheduled', '{{}}'::jsonb, {send_at})"
    )

    # When it stores a send_at outside created_at's bounds, Then the CHECK refuses it
    with pytest.raises(IntegrityError, match="ck_messages_send_at_bounds"), engine.begin() as db:
        db.execute(insert, {"id": uuid4(), "tenant_id": caller.tenant_id})


# Addresses as SES needs them


def test_internationalized_domain_is_stored_and_answered_in_punycode(
    client: TestClient, caller: Caller
) -> None:
    # When a tenant writes to an IDN domain (issue 13: stored and sent in Unicode)
    created = create(
        client, caller, to=["leser@bücher.example"], reply_to=["antwort@bücher.example"]
    )

    # Then the address is kept in the ASCII form SES sends, and read back as such
    assert created["to"] == ["leser@xn--bcher-kva.example"]
    assert created["reply_to"] == ["antwort@xn--bcher-kva.example"]
    stored = client.get(f"/v1/messages/{created['id']}", headers=caller.headers).json()
    assert stored["to"] == ["leser@xn--bcher-kva.example"]


def test_non_ascii_local_part_is_a_clear_422(client: TestClient, caller: Caller) -> None:
    # issue 13: üser@example.org was accepted, and SES cannot send to it
    response = client.post(
        "/v1/messages", json=email(to=["üser@example.org"]), headers=caller.headers
    )
    assert field_errors(response) == [
        {
            "location": "body.to.0",
            "message": "value is not a valid email address: Internationalized characters "
            "before the @-sign are not supported: 'ü'.",
        }
    ]


def test_eleven_reply_to_addresses_are_refused(client: TestClient, caller: Caller) -> None:
    # issue 13: 1,000 were accepted
    reply_to = [f"replies{i}@example.org" for i in range(11)]
    (error,) = field_errors(
        client.post("/v1/messages", json=email(reply_to=reply_to), headers=caller.headers)
    )
    assert error["location"] == "body.reply_to"
    assert "at most 10 items" in error["message"]


# Text


@pytest.mark.parametrize("char", ["\u2028", "\u0085", "\v", "\f"])
def test_subject_with_a_line_separator_or_control_character_is_refused(
    client: TestClient, caller: Caller, char: str
) -> None:
    # issue 13: each of these was accepted in a subject
    response = client.post(
        "/v1/messages", json=email(subject=f"Hello{char}Bcc: x@example.org"), headers=caller.headers
    )
    (error,) = field_errors(response)
    assert error["location"] == "body.subject"
    assert f"U+{ord(char):04X} is a control or line-separator character" in error["message"]


def test_lone_surrogate_in_text_is_a_422_not_a_413(client: TestClient, caller: Caller) -> None:
    # Given a JSON body whose text escapes a lone surrogate, as any JSON writer can
    body = json.dumps(email(text="caf\ud800e"))  # ensure_ascii: the body is "\\ud800"
    assert "\\ud800" in body

    # When it is posted (issue 13: 413 "Error serializing to JSON")
    response = client.post(
        "/v1/messages",
        content=body.encode(),
        headers=caller.headers | {"Content-Type": "application/json"},
    )

    # Then it is a validation problem naming the field
    assert field_errors(response) == [
        {
            "location": "body.text",
            "message": "is not valid Unicode: a lone surrogate (U+D800) cannot be encoded as UTF-8",
        }
    ]


# List pages bounded in bytes


def test_list_items_leave_out_the_bodies_which_the_message_itself_has(
    client: TestClient, caller: Caller
) -> None:
    # Given a message with a large text and html (issue 13: a page of 100 was 25 MB)
    created = create(client, caller, text="t" * 100_000, html="<p>" + "h" * 100_000 + "</p>")

    # When the tenant lists its messages
    page = client.get("/v1/messages", headers=caller.headers)

    # Then the item is the message without text and html (nor SES's reports of it: issue 14),
    # and the page stays small
    (item,) = page.json()["items"]
    left_out = {"text", "html", "recipients", "events"}
    assert item == {key: value for key, value in created.items() if key not in left_out}
    assert len(page.content) < 2_000
    # and the bodies are read from the message itself
    one = client.get(f"/v1/messages/{created['id']}", headers=caller.headers).json()
    assert len(one["text"]) == 100_000
