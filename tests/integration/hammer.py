"""A noisy tenant, as a process of its own: ``concurrency`` clients sending one GET without
pause, bounded in time and count, to 127.0.0.1 only. Prints what they got as one JSON line.

    python -m tests.integration.hammer URL KEY CONCURRENCY SECONDS MAX_REQUESTS

A process of its own so that its CPU does not show as the quiet tenant's latency in the
test process that measures it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

REQUEST_TIMEOUT_SECONDS = 10


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict[bytes, bytes]]:
    """One request on a kept-alive connection: the answer's status and headers (body read
    and dropped)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines if b": " in line)
    if headers.get(b"transfer-encoding") == b"chunked":
        await reader.readuntil(b"0\r\n\r\n")
    else:
        await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return int(status_line.split()[1]), headers


async def hammer(
    url: str, key: str, concurrency: int, seconds: float, max_requests: int
) -> dict[str, object]:
    # Plain HTTP/1.1 over asyncio streams: an HTTP client library spends more CPU per
    # request than the api does, and the flood would measure the client.
    parts = urlsplit(url)
    if parts.hostname != "127.0.0.1" or parts.port is None:
        raise SystemExit("hammer: only http://127.0.0.1:PORT")
    request = (
        f"GET {parts.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"
    ).encode()
    statuses: Counter[str] = Counter()
    without_retry_after: Counter[str] = Counter()
    sent = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal sent
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.monotonic() < deadline and sent < max_requests:
            sent += 1
            try:
                if connection is None:
                    connection = await asyncio.open_connection("127.0.0.1", parts.port)
                async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                    status, headers = await _exchange(*connection, request)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
                statuses[type(error).__name__] += 1
                if connection is not None:
                    connection[1].close()
                connection = None
                continue
            statuses[str(status)] += 1
            if status in (429, 503) and b"retry-after" not in headers:
                without_retry_after[str(status)] += 1
            if headers.get(b"connection") == b"close":
                connection[1].close()
                connection = None
        if connection is not None:
            connection[1].close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"statuses": dict(statuses), "without_retry_after": dict(without_retry_after)}


def main() -> None:
    url, key, concurrency, seconds, max_requests = sys.argv[1:6]
    result = asyncio.run(hammer(url, key, int(concurrency), float(seconds), int(max_requests)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
