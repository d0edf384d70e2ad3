"""The body cap and read timeout, at the ASGI level: what the app behind them receives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

from ecs_service.api.request_limits import BodyLimitMiddleware

Message = dict[str, Any]


async def call(
    middleware_args: dict[str, Any],
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    pause: float = 0,
) -> tuple[list[Message], list[bytes], int]:
    """Run one POST through the middleware: what it sent, what the app read, chunks read."""
    received: list[bytes] = []
    sent: list[Message] = []
    read = 0

    async def receive() -> Message:
        nonlocal read
        await asyncio.sleep(pause)
        read += 1
        index = read - 1
        if index >= len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[index], "more_body": index < len(chunks) - 1}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        received.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    scope = {"type": "http", "method": "POST", "path": "/v1/messages", "headers": headers}
    await BodyLimitMiddleware(app, **middleware_args)(scope, receive, send)
    return sent, received, read


def status_and_kind(sent: list[Message]) -> tuple[int, str]:
    return sent[0]["status"], json.loads(sent[1]["body"])["type"].rsplit(":", 1)[1]


def test_a_body_under_the_cap_reaches_the_app_whole() -> None:
    chunks = [b'{"a":', b" 1}"]
    sent, received, _ = asyncio.run(
        call({"max_bytes": 100}, [(b"transfer-encoding", b"chunked")], chunks)
    )
    assert received == [b'{"a": 1}']
    assert sent[0]["status"] == 200


def test_a_declared_length_over_the_cap_is_refused_without_reading_the_body() -> None:
    sent, received, read = asyncio.run(
        call({"max_bytes": 100}, [(b"content-length", b"101")], [b"x" * 101])
    )
    assert (status_and_kind(sent), received, read) == ((413, "payload-too-large"), [], 0)


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_cap() -> None:
    chunks = [b"x" * 60] * 10
    sent, received, read = asyncio.run(
        call({"max_bytes": 100}, [(b"transfer-encoding", b"chunked")], chunks)
    )
    assert (status_and_kind(sent), received, read) == ((413, "payload-too-large"), [], 2)


def test_a_body_slower_than_the_read_timeout_is_408() -> None:
    # Given a body that arrives a piece every 50 ms, and a timeout of 120 ms for all of it
    chunks = [b"x"] * 10
    sent, received, read = asyncio.run(
        call(
            {"read_timeout": 0.12},
            [(b"transfer-encoding", b"chunked")],
            chunks,
            pause=0.05,
        )
    )
    # Then it is refused before the app sees any of it
    assert (status_and_kind(sent), received) == ((408, "request-timeout"), [])
    assert read < len(chunks)
