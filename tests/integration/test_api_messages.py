"""The /v1/messages API against real PostgreSQL: every route, its errors and tenant isolation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from shared import observability
from tests.integration.conftest import SENDER, Caller
from tests.support.api import assert_problem, create, email
from tests.support.emf import emitted_metrics


def test_create_schedules_a_message_from_heralds_sender(client: TestClient, caller: Caller) -> None:
    # When a tenant schedules an email for tomorrow
    send_at = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    response = client.post(
        "/v1/messages",
        json=email(cc=["cc@example.org"], send_at=send_at.isoformat()),
        headers=caller.headers,
    )

    # Then it is stored as scheduled, sent from Herald's address, and can be found at Location
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "scheduled"
    assert body["sender"] == SENDER
    assert body["cc"] == ["cc@example.org"]
    assert datetime.fromisoformat(body["send_at"]) == send_at
    assert response.headers["location"] == f"/v1/messages/{body['id']}"
    assert client.get(response.headers["location"], headers=caller.headers).json() == body


def test_send_at_defaults_to_now(client: TestClient, caller: Caller) -> None:
    before = datetime.now(UTC)
    body = create(client, caller)
    assert (
        before - timedelta(seconds=1)
        <= datetime.fromisoformat(body["send_at"])
        <= datetime.now(UTC)
    )


def test_send_at_is_answered_in_utc_by_the_post_as_by_every_get(
    client: TestClient, caller: Caller
) -> None:
    # Given a send_at written in a caller's own offset
    local = (datetime.now(UTC) + timedelta(days=2)).astimezone(timezone(timedelta(hours=-5)))

    # When the email is scheduled, and read back
    created = create(client, caller, send_at=local.isoformat())
    read = client.get(f"/v1/messages/{created['id']}", headers=caller.headers).json()

    # Then both say the same instant in the same way: UTC
    assert datetime.fromisoformat(created["send_at"]) == local
    assert datetime.fromisoformat(created["send_at"]).utcoffset() == timedelta(0)
    assert created["send_at"] == read["send_at"]


def test_send_at_without_time_zone_is_rejected(client: TestClient, caller: Caller) -> None:
    response = client.post(
        "/v1/messages", json=email(send_at="2030-01-01T09:00:00"), headers=caller.headers
    )
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["location"] == "body.send_at"
    assert "timezone" in problem["errors"][0]["message"]


def test_send_at_more_than_a_year_ahead_is_rejected(client: TestClient, caller: Caller) -> None:
    far = (datetime.now(UTC) + timedelta(days=366)).isoformat()
    problem = assert_problem(
        client.post("/v1/messages", json=email(send_at=far), headers=caller.headers),
        422,
        "validation-error",
    )
    assert problem["errors"] == [
        {"location": "body.send_at", "message": "must be at most one year ahead"}
    ]


@pytest.mark.parametrize(
    ("changes", "location", "message"),
    [
        ({"to": []}, "body", "at least one recipient"),
        ({"to": ["not-an-address"]}, "body.to.0", "not a valid email address"),
        ({"subject": "s" * 999}, "body.subject", "at most 998 characters"),
        ({"text": None}, "body", "text or html is required"),
        ({"bcc": [f"r{i}@example.org" for i in range(50)]}, "body", "51 recipients"),
        ({"sender": "boss@example.com"}, "body.sender", "Extra inputs are not permitted"),
        ({"text": "nul\x00byte"}, "body.text", "may not contain NUL characters"),
    ],
)
def test_invalid_email_gets_a_validation_problem_naming_the_field(
    client: TestClient, caller: Caller, changes: dict[str, Any], location: str, message: str
) -> None:
    response = client.post("/v1/messages", json=email(**changes), headers=caller.headers)
    problem = assert_problem(response, 422, "validation-error")
    assert any(e["location"] == location and message in e["message"] for e in problem["errors"]), (
        problem
    )


def test_email_too_large_for_one_task_is_rejected_with_413(
    client: TestClient, caller: Caller
) -> None:
    # A body under the request cap (300,000 bytes) whose task would be over SQS's 256 KiB
    response = client.post("/v1/messages", json=email(text="x" * 270_000), headers=caller.headers)
    problem = assert_problem(response, 413, "payload-too-large")
    assert "must fit in one SQS message" in problem["detail"]


def test_get_returns_404_for_a_message_of_another_tenant(
    client: TestClient, caller: Caller, other_caller: Caller
) -> None:
    # Given a message of another tenant
    theirs = create(client, other_caller)

    # When this tenant asks for it, lists, or cancels it, Then it does not exist for them
    assert_problem(
        client.get(f"/v1/messages/{theirs['id']}", headers=caller.headers), 404, "not-found"
    )
    assert_problem(
        client.delete(f"/v1/messages/{theirs['id']}", headers=caller.headers), 404, "not-found"
    )
    assert client.get("/v1/messages", headers=caller.headers).json()["items"] == []
    # and theirs is untouched
    assert (
        client.get(f"/v1/messages/{theirs['id']}", headers=other_caller.headers).json()["status"]
        == "scheduled"
    )


def test_get_unknown_message_is_404(client: TestClient, caller: Caller) -> None:
    assert_problem(client.get(f"/v1/messages/{uuid4()}", headers=caller.headers), 404, "not-found")


def test_get_with_a_malformed_id_is_422(client: TestClient, caller: Caller) -> None:
    assert_problem(
        client.get("/v1/messages/not-a-uuid", headers=caller.headers), 422, "validation-error"
    )


def test_list_pages_through_every_message_newest_first_without_repeats(
    client: TestClient, caller: Caller
) -> None:
    # Given 25 messages
    created = [create(client, caller, subject=f"n{i}")["id"] for i in range(25)]

    # When they are listed 10 at a time
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/messages", params=params, headers=caller.headers).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    # Then three pages hold all 25 once, newest first
    assert pages == 3
    assert seen == list(reversed(created))


def test_list_filters_by_status(client: TestClient, caller: Caller) -> None:
    kept = create(client, caller)
    canceled = create(client, caller, send_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    client.delete(f"/v1/messages/{canceled['id']}", headers=caller.headers)

    scheduled = client.get(
        "/v1/messages", params={"status": "scheduled"}, headers=caller.headers
    ).json()
    canceled_page = client.get(
        "/v1/messages", params={"status": "canceled"}, headers=caller.headers
    ).json()

    assert [m["id"] for m in scheduled["items"]] == [kept["id"]]
    assert [m["id"] for m in canceled_page["items"]] == [canceled["id"]]


@pytest.mark.parametrize(
    "params", [{"status": "lost"}, {"limit": 0}, {"limit": 101}, {"cursor": "garbage"}]
)
def test_list_rejects_bad_query_parameters(
    client: TestClient, caller: Caller, params: dict[str, Any]
) -> None:
    assert_problem(
        client.get("/v1/messages", params=params, headers=caller.headers), 422, "validation-error"
    )


def test_cancel_a_scheduled_message(client: TestClient, caller: Caller) -> None:
    message = create(client, caller, send_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())

    response = client.delete(f"/v1/messages/{message['id']}", headers=caller.headers)

    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert response.json()["finished_at"] is not None


def test_cancel_twice_is_a_conflict_naming_the_status(client: TestClient, caller: Caller) -> None:
    message = create(client, caller)
    client.delete(f"/v1/messages/{message['id']}", headers=caller.headers)

    problem = assert_problem(
        client.delete(f"/v1/messages/{message['id']}", headers=caller.headers),
        409,
        "not-cancelable",
    )

    assert problem["detail"] == "the message is canceled; only a scheduled message can be canceled"


def test_same_idempotency_key_and_body_returns_the_original(
    client: TestClient, caller: Caller
) -> None:
    headers = caller.headers | {"Idempotency-Key": "order-42"}
    first = client.post("/v1/messages", json=email(), headers=headers)

    again = client.post("/v1/messages", json=email(), headers=headers)

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(client.get("/v1/messages", headers=caller.headers).json()["items"]) == 1


def test_each_created_message_is_counted_once_and_a_replay_not_at_all(
    client: TestClient, caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given nothing printed yet
    capsys.readouterr()

    # When a tenant creates two messages, then a third with an Idempotency-Key twice
    create(client, caller)
    create(client, caller)
    headers = caller.headers | {"Idempotency-Key": "order-7"}
    first = client.post("/v1/messages", json=email(), headers=headers)
    replay = client.post("/v1/messages", json=email(), headers=headers)

    # Then three messages were created, each counted once and published after its request;
    # the replay counts nothing
    assert (first.status_code, replay.status_code) == (201, 200)
    assert emitted_metrics(capsys.readouterr().out)["MessagesCreated"] == [1.0, 1.0, 1.0]


def test_created_messages_are_counted_in_the_apis_namespace_and_dimensions(
    client: TestClient, caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given nothing printed yet
    capsys.readouterr()

    # When a tenant creates a message
    create(client, caller)

    # Then the EMF line is in the process's namespace, with its service and environment as
    # dimensions: what the dashboard and alarms select
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "MessagesCreated" in line]
    blob = json.loads(line)
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == observability.settings.metrics_namespace
    assert [sorted(names) for names in directive["Dimensions"]] == [["environment", "service"]]
    assert blob["service"] == observability.settings.service_name


def test_same_idempotency_key_with_another_body_is_rejected(
    client: TestClient, caller: Caller
) -> None:
    headers = caller.headers | {"Idempotency-Key": "order-42"}
    client.post("/v1/messages", json=email(), headers=headers)

    response = client.post("/v1/messages", json=email(subject="Changed"), headers=headers)

    assert_problem(response, 422, "idempotency-key-reused")


def test_idempotency_keys_are_per_tenant(
    client: TestClient, caller: Caller, other_caller: Caller
) -> None:
    mine = client.post(
        "/v1/messages", json=email(), headers=caller.headers | {"Idempotency-Key": "k"}
    )
    theirs = client.post(
        "/v1/messages", json=email(), headers=other_caller.headers | {"Idempotency-Key": "k"}
    )
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer hrld_AAAAAAAAAAAA_" + "x" * 43},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["missing", "unknown-key", "malformed", "wrong-scheme"],
)
def test_every_v1_route_needs_an_active_key(
    client: TestClient, caller: Caller, headers: dict[str, str]
) -> None:
    message_id = create(client, caller)["id"]
    for method, path in [
        ("POST", "/v1/messages"),
        ("GET", "/v1/messages"),
        ("GET", f"/v1/messages/{message_id}"),
        ("DELETE", f"/v1/messages/{message_id}"),
    ]:
        response = client.request(
            method, path, json=email() if method == "POST" else None, headers=headers
        )
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_unknown_route_is_a_problem(client: TestClient) -> None:
    assert_problem(client.get("/v2/nothing"), 404, "not-found")


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "trace-123"}).headers["x-request-id"]
        == "trace-123"
    )
    assert (
        len(client.get("/healthz", headers={"X-Request-ID": "bad id!"}).headers["x-request-id"])
        == 36
    )


def test_database_outage_is_a_503_problem_never_a_500() -> None:
    # Given an api whose database does not answer (nothing listens on that port)
    from ecs_service.api.app import create_app
    from ecs_service.settings import ApiSettings, DatabaseSettings
    from herald_local.postgres import free_port

    unreachable = DatabaseSettings(url=f"postgresql://herald@127.0.0.1:{free_port()}/herald")
    app = create_app(ApiSettings(SENDER_EMAIL=SENDER), unreachable)

    # When it is asked for readiness and to create a message
    with TestClient(app, raise_server_exceptions=False) as offline:
        ready = offline.get("/readyz")
        well_formed_key = {"Authorization": "Bearer hrld_AAAAAAAAAAAA_" + "x" * 43}
        created = offline.post("/v1/messages", json=email(), headers=well_formed_key)

        # Then both say the service is unavailable, with a hint to retry, and liveness holds
        assert offline.get("/healthz").status_code == 200
    for response in (ready, created):
        assert_problem(response, 503, "service-unavailable")
        assert response.headers["retry-after"] == "2"


def test_every_request_is_logged_with_its_request_id(client: TestClient, caller: Caller) -> None:
    import json
    import logging

    from shared.observability import logger

    lines: list[dict[str, Any]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(logger.registered_formatter.format(record)))

    handler = Capture()
    logger._logger.addHandler(handler)  # noqa: SLF001 - Powertools exposes no other hook
    try:
        client.get("/v1/messages", headers=caller.headers | {"X-Request-ID": "req-42"})
    finally:
        logger._logger.removeHandler(handler)  # noqa: SLF001

    [line] = [line for line in lines if line["message"] == "request"]
    assert (line["request_id"], line["method"], line["path"], line["status"]) == (
        "req-42",
        "GET",
        "/v1/messages",
        200,
    )
