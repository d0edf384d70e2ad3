"""A request's headers are bounded in time and size, which uvicorn's httptools does not do
(issue 13: "headers and bodies have read timeouts"). A real server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import uvicorn

from ecs_service.api.http_protocol import BoundedHeadersProtocol
from herald_local.postgres import free_port

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send


class QuickProtocol(BoundedHeadersProtocol):
    header_timeout_seconds = 0.5


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    chosen = free_port()
    config = uvicorn.Config(
        ok, host="127.0.0.1", port=chosen, http=QuickProtocol, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield chosen
    server.should_exit = True
    thread.join(timeout=5)


def connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.settimeout(5)
    return client


def closed_after(client: socket.socket) -> float:
    """Seconds until the server closes the connection (what it sent first is ignored)."""
    started = time.monotonic()
    while client.recv(65_536):
        pass
    return time.monotonic() - started


def test_a_request_within_the_bounds_is_answered(port: int) -> None:
    with connect(port) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(65_536).startswith(b"HTTP/1.1 200")


def test_headers_that_dribble_in_are_cut_at_the_deadline(port: int) -> None:
    # Given a client that starts a request and never finishes its headers
    with connect(port) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")

        # When it waits, Then the server closes the connection at the header deadline
        assert closed_after(client) < 3


def test_a_kept_alive_connection_bounds_the_next_requests_headers_too(port: int) -> None:
    # Given a connection whose first request was answered
    with connect(port) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(65_536).startswith(b"HTTP/1.1 200")

        # When its second request's headers stop half way, Then it is closed in time
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        assert closed_after(client) < 3


def test_headers_over_64_kib_are_refused_with_431(port: int) -> None:
    # Given a request whose one header is larger than the ALB would pass
    with connect(port) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000)

        # Then the answer is 431 and the connection is closed
        assert client.recv(65_536).startswith(b"HTTP/1.1 431")
