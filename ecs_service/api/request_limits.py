"""Bounded requests: a body cap and a body read timeout, applied before routing.

Everything here runs before FastAPI parses a byte or authentication looks at a key, so a
large or slow body from anyone (with a key or without) costs at most
``MAX_REQUEST_BODY_BYTES`` of memory and ``BODY_READ_TIMEOUT_SECONDS`` of a connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from ecs_service.api import problems

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Over the 256 KiB task limit (SQS), with room for the JSON around the email; a request
# over it could never be scheduled anyway.
MAX_REQUEST_BODY_BYTES = 300_000
# POST /v1/messages/batch: up to 500 emails (messages.MAX_BATCH_MESSAGES) of about 4 KB of
# JSON each. Its own cap, so a single message's stays small; each item is still refused if
# its task would not fit in one SQS message.
MAX_BATCH_BODY_BYTES = 2_000_000
# Routes with a cap of their own: (method, path) -> bytes.
ROUTE_BODY_CAPS: dict[tuple[str, str], int] = {("POST", "/v1/messages/batch"): MAX_BATCH_BODY_BYTES}
# The whole body must arrive within this: a client sending a byte a second (slow loris)
# holds a connection for seconds, never for minutes.
BODY_READ_TIMEOUT_SECONDS = 10.0


async def send_problem(scope: Scope, send: Send, error: problems.ProblemError) -> None:
    """Answer ``error`` as problem+json from ASGI, where no FastAPI request exists yet."""
    request_id = scope.get("state", {}).get("request_id")
    body = error.to_problem(instance=scope["path"], request_id=request_id)
    content = json.dumps(body.model_dump(exclude_none=True), separators=(",", ":")).encode()
    headers = [
        (b"content-type", problems.PROBLEM_JSON.encode()),
        (b"content-length", str(len(content)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _has_body(scope: Scope, declared: int | None) -> bool:
    if declared is not None:
        return declared > 0
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


class BodyLimitMiddleware:
    """Reads a request's whole body, at most ``max_bytes`` of it within ``read_timeout``
    seconds, before the app sees the request: over the cap is a 413 (from Content-Length
    at once, or as soon as the streamed bytes pass it), too slow is a 408; either closes
    the connection, so the rest of the body is never read."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int = MAX_REQUEST_BODY_BYTES,
        read_timeout: float = BODY_READ_TIMEOUT_SECONDS,
        route_caps: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.route_caps = ROUTE_BODY_CAPS if route_caps is None else route_caps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if not _has_body(scope, declared):
            await self.app(scope, receive, send)
            return
        max_bytes = self.route_caps.get((scope["method"], scope["path"]), self.max_bytes)
        too_large = problems.payload_too_large(max_bytes)
        too_large.headers["Connection"] = "close"
        if declared is not None and declared > max_bytes:
            await send_problem(scope, send, too_large)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left: nobody to answer
                    chunk: bytes = message.get("body", b"")
                    size += len(chunk)
                    if size > max_bytes:
                        await send_problem(scope, send, too_large)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await send_problem(scope, send, problems.request_timeout(self.read_timeout))
            return
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, replay(whole, receive), send)


def replay(message: Message, receive: Receive) -> Receive:
    """A ``receive`` that gives the app ``message``, already read, then the server's events."""
    pending: list[Message] = [message]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
