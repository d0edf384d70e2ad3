"""uvicorn's httptools protocol with the two bounds httptools lacks on a request's headers.

httptools parses fast (h11 would bound headers too, at 0.3 ms more CPU a request), but it
sets no deadline before a request's headers are complete and no limit on their size: a
client that dribbles a header a byte at a time, or sends megabytes of them, held a
connection (and memory) for as long as it liked. Here a request's headers must arrive
within ``HEADER_TIMEOUT_SECONDS`` and in at most ``MAX_HEADER_BYTES``, else the
connection is closed (with a 431 for the too large). The ALB in front enforces its own
limits too; these hold wherever the api runs. Bodies are bounded by the app
(``ecs_service.api.request_limits``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    import asyncio

# The ALB's own bound on a request's headers (its request line and headers: 64 KB).
MAX_HEADER_BYTES = 65_536
# As long as a whole body may take (ecs_service.api.request_limits).
HEADER_TIMEOUT_SECONDS = 10.0
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


class BoundedHeadersProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose requests' headers are bounded in time and in size."""

    header_timeout_seconds = HEADER_TIMEOUT_SECONDS
    max_header_bytes = MAX_HEADER_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is not None:
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._headers_arrived()
                self.transport.write(TOO_LARGE)
                self.transport.close()
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:  # the next request on a kept-alive connection
            self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_arrived()
        super().on_headers_complete()

    def _await_headers(self) -> None:
        self._header_bytes = 0
        self._header_deadline = self.loop.call_later(
            self.header_timeout_seconds, self.transport.close
        )

    def _headers_arrived(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
