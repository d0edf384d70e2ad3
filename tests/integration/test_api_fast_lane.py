"""The fast lane (ecs_service.api.fast_lane) answers its two hot paths exactly as FastAPI
does, and leaves every other request to FastAPI."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from ecs_service.api.fast_lane import FastLane
from shared.observability import logger
from tests.support.api import assert_problem, create, email

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from httpx import Response

    from tests.integration.conftest import Caller

# What differs between two answers about the same message: the request id and the tokens
# left of the key's rate limit.
VARYING_HEADERS = {"x-request-id", "ratelimit"}
# What differs between two messages made from the same body.
VARYING_FIELDS = {"id", "created_at", "updated_at"}


@pytest.fixture
def lane(client: TestClient) -> FastLane:
    found = client.app.router.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(found, FastLane)
    return found


def answer(response: Response) -> tuple[int, list[tuple[str, str]]]:
    headers = [
        (name, "…" if name in VARYING_HEADERS else value)
        for name, value in response.headers.multi_items()
    ]
    return response.status_code, headers


def taken_by_lane(lane: FastLane, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests the lane answered itself from now on."""
    taken: list[str] = []
    original = lane._answer  # noqa: SLF001 - the one place the lane answers

    async def counted(route: Any, values: Any, scope: Any, receive: Any, send: Any) -> None:
        taken.append(scope["path"])
        await original(route, values, scope, receive, send)

    monkeypatch.setattr(lane, "_answer", counted)
    return taken


def fastapi_answer(client: TestClient, lane: FastLane, method: str, path: str, **kw: Any) -> Any:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(client.app.router, "middleware_stack", lane.app)  # type: ignore[attr-defined]
        return client.request(method, path, **kw)


def test_a_get_is_answered_with_the_same_bytes_and_headers_as_fastapi_answers(
    client: TestClient, caller: Caller, lane: FastLane, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a scheduled message
    message_id = create(client, caller)["id"]
    taken = taken_by_lane(lane, monkeypatch)

    # When it is read through the fast lane, and through FastAPI's routing alone
    fast = client.get(f"/v1/messages/{message_id}", headers=caller.headers)
    slow = fastapi_answer(client, lane, "GET", f"/v1/messages/{message_id}", headers=caller.headers)

    # Then the lane answered the first, with the same status, headers and body
    assert taken == [f"/v1/messages/{message_id}"]
    assert answer(fast) == answer(slow)
    assert fast.content == slow.content


def test_an_unkeyed_post_is_answered_as_fastapi_answers_it(
    client: TestClient, caller: Caller, lane: FastLane, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a body with every field, sent in a week
    send_at = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0).isoformat()
    body = email(cc=["cc@example.org"], bcc=["b@example.org"], html="<p>Hi</p>", send_at=send_at)
    taken = taken_by_lane(lane, monkeypatch)

    # When it is posted through the fast lane, and through FastAPI's routing alone
    fast = client.post("/v1/messages", json=body, headers=caller.headers)
    slow = fastapi_answer(client, lane, "POST", "/v1/messages", json=body, headers=caller.headers)

    # Then the lane stored the first, and both answers are the same but for the message
    assert taken == ["/v1/messages"]
    assert answer(fast)[0] == answer(slow)[0] == 201
    assert [name for name, _ in answer(fast)[1]] == [name for name, _ in answer(slow)[1]]
    assert fast.headers["location"] == f"/v1/messages/{fast.json()['id']}"
    fast_body, slow_body = json.loads(fast.content), json.loads(slow.content)
    assert list(fast_body) == list(slow_body)
    assert {k: v for k, v in fast_body.items() if k not in VARYING_FIELDS} == {
        k: v for k, v in slow_body.items() if k not in VARYING_FIELDS
    }


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/v1/messages", {"Idempotency-Key": "k-1"}, email()),
        ("/v1/messages", {"Content-Type": "application/json; charset=utf-8"}, email()),
        ("/v1/messages", {}, email(to=["not an address"])),
        ("/v1/messages", {}, email(unknown="field")),
        ("/v1/messages/00000000-0000-0000-0000-00000000000G", {}, None),
        ("/v1/messages/00000000-0000-0000-0000-0000000000AB", {}, None),
        ("/v1/messages/batch", {}, {"messages": [email()]}),
    ],
    ids=["keyed", "charset", "invalid", "unknown-field", "not-a-uuid", "upper-case", "batch"],
)
def test_a_request_the_lane_cannot_parse_for_sure_goes_to_fastapi(
    client: TestClient,
    caller: Caller,
    lane: FastLane,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any] | None,
) -> None:
    # Given the lane, watched
    taken = taken_by_lane(lane, monkeypatch)

    # When a request it does not take is made
    if body is None:
        response = client.get(path, headers=caller.headers | headers)
    else:
        content = json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} | headers
        response = client.post(path, content=content, headers=caller.headers | sent)

    # Then FastAPI answered it, the body the lane read replayed to it
    assert taken == []
    assert response.status_code in {200, 201, 404, 422}, response.text


def test_a_post_with_two_content_types_is_fastapis_to_read(
    client: TestClient, caller: Caller, lane: FastLane, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the lane, watched, and a valid body sent as text/plain, then as JSON (FastAPI
    # reads the first Content-Type of several)
    taken = taken_by_lane(lane, monkeypatch)
    headers = [
        *caller.headers.items(),
        ("Content-Type", "text/plain"),
        ("Content-Type", "application/json"),
    ]

    # When it is posted
    response = client.post("/v1/messages", content=json.dumps(email()).encode(), headers=headers)

    # Then FastAPI answered it, as it answers without the lane: not JSON, nothing stored
    assert taken == []
    assert response.status_code == 422, response.text
    assert client.get("/v1/messages", headers=caller.headers).json()["items"] == []


def test_a_refusal_in_the_lane_is_the_same_problem_as_fastapis(
    client: TestClient, caller: Caller, lane: FastLane
) -> None:
    # Given a message id no message has
    path = "/v1/messages/00000000-0000-0000-0000-000000000001"

    # When it is read through the lane and through FastAPI alone
    fast = client.get(path, headers=caller.headers)
    slow = fastapi_answer(client, lane, "GET", path, headers=caller.headers)

    # Then both are the same 404 problem
    fast_problem = assert_problem(fast, 404, "not-found")
    slow_problem = assert_problem(slow, 404, "not-found")
    assert answer(fast) == answer(slow)
    assert {k: v for k, v in fast_problem.items() if k != "request_id"} == {
        k: v for k, v in slow_problem.items() if k != "request_id"
    }


def test_the_lanes_requests_are_logged_with_their_route_template(
    client: TestClient, caller: Caller
) -> None:
    # Given the api's log lines, captured
    lines: list[dict[str, Any]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(logger.registered_formatter.format(record)))

    handler = Capture()
    logger._logger.addHandler(handler)  # noqa: SLF001 - Powertools exposes no other hook
    try:
        # When a message is created and read through the lane
        message_id = create(client, caller)["id"]
        client.get(f"/v1/messages/{message_id}", headers=caller.headers)
    finally:
        logger._logger.removeHandler(handler)  # noqa: SLF001

    # Then each line names its route's template, never the id
    logged = [
        (line["method"], line["path"], line["status"])
        for line in lines
        if line["message"] == "request"
    ]
    assert logged == [
        ("POST", "/v1/messages", 201),
        ("GET", "/v1/messages/{message_id}", 200),
    ]
