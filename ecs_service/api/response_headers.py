"""Headers every api response carries: the security headers, and a request's rate-limit
headers once the limiter has decided it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
# Tenant data: no shared cache (a proxy, the browser's disk) keeps a copy.
NO_STORE = (b"cache-control", b"no-store")
# Where a request's limiter decision leaves its headers (``RateDecision.headers``).
STATE_KEY = "rate_limit_headers"


class ResponseHeadersMiddleware:
    """Adds the security headers to every response (errors and 404s included),
    ``Cache-Control: no-store`` to /v1 responses, and the request's ``RateLimit`` headers
    where the limiter recorded them in the request's state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        private = scope["path"].startswith("/v1/") or scope["path"] == "/v1"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if not (private and name.lower() == b"cache-control")
                ]
                present = {name.lower() for name, _ in headers}
                headers += SECURITY_HEADERS
                if private:
                    headers.append(NO_STORE)
                limit_headers: dict[str, str] = state.get(STATE_KEY) or {}
                headers += [
                    (name.lower().encode(), value.encode())
                    for name, value in limit_headers.items()
                    if name.lower().encode() not in present
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
