"""Calling the api in tests: a valid email body, scheduling one, and reading a problem."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from tests.support.builders import Caller

PROBLEM = "application/problem+json"


def email(**changes: Any) -> dict[str, Any]:
    """A valid ``POST /v1/messages`` body, with ``changes`` applied."""
    body: dict[str, Any] = {
        "to": ["reader@example.org"],
        "subject": "Hello",
        "text": "Hi from Herald.",
    }
    body.update(changes)
    return body


def create(client: TestClient, caller: Caller, **changes: Any) -> dict[str, Any]:
    """Schedule ``email(**changes)`` as ``caller``; the api's 201 answer."""
    response = client.post("/v1/messages", json=email(**changes), headers=caller.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def assert_problem(response: Any, status: int, kind: str) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem of ``status`` and ``kind``, as the api answers them."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:herald:problem:{kind}"
    assert problem["status"] == status
    assert problem["detail"]
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem
