"""herald-deploy smoke against a local HTTP server standing in for an environment's api:
one email to SES's simulator, waited for until delivered, any other end one clear line."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from pytest_socket import enable_socket, socket_allow_hosts

from herald_deploy.errors import DeployError
from herald_deploy.smoke import SIMULATOR_SUCCESS, http_api, send_and_wait

if TYPE_CHECKING:
    from collections.abc import Iterator

KEY = "hk_smoke_test_key"
MESSAGE_ID = "0b9c8a4e-1f2d-4c3b-9a8e-7d6c5b4a3f21"


class FakeApi(BaseHTTPRequestHandler):
    """POST /v1/messages creates the one message; each GET answers the next status."""

    statuses: ClassVar[list[str]] = []
    requests: ClassVar[list[tuple[str, str, dict[str, Any] | None]]] = []
    refuse_with: ClassVar[int | None] = None

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {KEY}" and self.refuse_with is None:
            return True
        self._answer(self.refuse_with or 401, {"title": "Unauthorized", "detail": "bad key"})
        return False

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        self.requests.append(("POST", self.path, body))
        if self._authorised():
            self._answer(201, {"id": MESSAGE_ID, "status": "scheduled"})

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, None))
        if self._authorised():
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            error = "SES said no" if status == "failed" else None
            self._answer(200, {"id": MESSAGE_ID, "status": status, "error": error})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        del format, args


@pytest.fixture
def api_url() -> Iterator[str]:
    # The fake api listens on 127.0.0.1, and nothing else may be reached (as the unit
    # tests' conftest wants): a request leaving the machine fails at connect().
    enable_socket()
    socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)
    FakeApi.statuses, FakeApi.requests, FakeApi.refuse_with = [], [], None
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def wait(api_url: str, *, key: str = KEY, timeout: float = 5.0) -> str:
    return send_and_wait(
        http_api, base_url=api_url, key=key, timeout_seconds=timeout, poll_seconds=0.01
    ).message_id


def test_an_email_to_the_simulator_is_followed_until_it_is_delivered(api_url: str) -> None:
    # Given an api that reports the message queued, sent, then delivered
    FakeApi.statuses = ["queued", "sent", "delivered"]

    # When the smoke test runs
    message_id = wait(api_url)

    # Then it scheduled one email to the simulator and read it until delivered
    assert message_id == MESSAGE_ID
    [(method, path, body), *reads] = FakeApi.requests
    assert (method, path) == ("POST", "/v1/messages")
    assert body is not None and body["to"] == [SIMULATOR_SUCCESS]
    assert [path for _, path, _ in reads] == [f"/v1/messages/{MESSAGE_ID}"] * 3


def test_a_message_that_ends_otherwise_fails_naming_its_status_and_error(api_url: str) -> None:
    # Given an api whose message fails
    FakeApi.statuses = ["queued", "failed"]

    # When the smoke test runs, then it fails in one line with the message's own error
    with pytest.raises(DeployError) as failure:
        wait(api_url)
    assert str(failure.value) == f"smoke: message {MESSAGE_ID} ended 'failed': SES said no"


def test_a_message_never_delivered_fails_after_the_timeout_naming_its_last_status(
    api_url: str,
) -> None:
    # Given an api whose message stays sent (no delivery event arrives)
    FakeApi.statuses = ["sent"]

    # When the smoke test runs with a short timeout, then it gives up in one line
    with pytest.raises(DeployError, match=r"still 'sent' after 0\.2 s \(expected 'delivered'\)"):
        wait(api_url, timeout=0.2)


def test_an_api_that_refuses_the_key_fails_with_its_answer(api_url: str) -> None:
    # Given a key the api does not know
    FakeApi.statuses = ["delivered"]

    # When the smoke test runs, then the failure quotes the status and the problem's detail
    with pytest.raises(DeployError) as failure:
        wait(api_url, key="hk_wrong")
    assert str(failure.value) == f"smoke: POST {api_url}/v1/messages answered 401: bad key"
    assert "\n" not in str(failure.value)
