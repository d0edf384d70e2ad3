"""The API benchmark's baseline: ``POST /v1/messages`` and ``GET /v1/messages/{id}`` as one
INSERT and one SELECT on Herald's ``messages`` table, and nothing else.

A bare ASGI app (no framework, no validation, no authentication, no logging, no metrics)
on the same driver as the api (psycopg 3) with a pool of the api's size per process
(``psycopg_pool``; autocommit, so each request is exactly one round trip). The POST stores
the same row the api stores (the email as jsonb, status ``scheduled``) for the tenant of
``HERALD_BENCH_TENANT_ID``; the GET reads it back by id and tenant. Run it under the same
uvicorn settings as the api::

    HERALD_BENCH_DATABASE_URL=postgresql://... HERALD_BENCH_TENANT_ID=<uuid> \\
        uvicorn bench.support.baseline_app:app --workers 2 ...
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

DATABASE_URL_VARIABLE = "HERALD_BENCH_DATABASE_URL"
TENANT_VARIABLE = "HERALD_BENCH_TENANT_ID"
POOL_MIN_VARIABLE = "HERALD_BENCH_POOL_SIZE"
POOL_MAX_VARIABLE = "HERALD_BENCH_POOL_MAX"
SENDER = "herald@example.com"
COLUMNS = "id, status, payload, send_at, created_at, updated_at, queued_at, finished_at"
INSERT = (
    "INSERT INTO messages (id, tenant_id, status, payload, send_at) "
    f"VALUES (%s, %s, 'scheduled', %s, %s) RETURNING {COLUMNS}"
)
SELECT = f"SELECT {COLUMNS} FROM messages WHERE id = %s AND tenant_id = %s"
PREFIX = "/v1/messages"
JSON_HEADERS = [(b"content-type", b"application/json")]


def _json(row: dict[str, Any]) -> bytes:
    payload = row.pop("payload")
    row = {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in row.items()
    }
    row["id"] = str(row["id"])
    return json.dumps({**row, **payload}).encode()


class BaselineApp:
    """The ASGI app; the pool opens on lifespan start-up and closes on shutdown."""

    def __init__(self) -> None:
        self.tenant_id = uuid.UUID(os.environ.get(TENANT_VARIABLE, str(uuid.UUID(int=0))))
        self.pool: AsyncConnectionPool | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert self.pool is not None
        path, method = scope["path"], scope["method"]
        if method == "POST" and path == PREFIX:
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            body = json.loads(b"".join(chunks))
            payload = {
                "sender": SENDER, "to": body["to"], "cc": [], "bcc": [], "reply_to": [],
                "subject": body["subject"], "text": body["text"], "html": None,
            }  # fmt: skip
            row = await self._one(
                INSERT, (uuid.uuid4(), self.tenant_id, Jsonb(payload), body["send_at"])
            )
            await self._answer(send, 201, _json(row))  # type: ignore[arg-type]
        elif method == "GET" and path.startswith(PREFIX + "/"):
            try:
                message_id = uuid.UUID(path.removeprefix(PREFIX + "/"))
            except ValueError:
                await self._answer(send, 404, b"{}")
                return
            row = await self._one(SELECT, (message_id, self.tenant_id))
            await self._answer(send, 200 if row else 404, _json(row) if row else b"{}")
        else:
            await self._answer(send, 404, b"{}")

    async def _one(self, query: str, parameters: tuple[Any, ...]) -> dict[str, Any] | None:
        assert self.pool is not None
        async with self.pool.connection() as connection:
            cursor = connection.cursor(row_factory=dict_row)
            await cursor.execute(query, parameters)
            return await cursor.fetchone()

    @staticmethod
    async def _answer(send: Any, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = AsyncConnectionPool(
                    os.environ[DATABASE_URL_VARIABLE],
                    min_size=int(os.environ.get(POOL_MIN_VARIABLE, "10")),
                    max_size=int(os.environ.get(POOL_MAX_VARIABLE, "15")),
                    kwargs={"autocommit": True, "application_name": "herald-bench-baseline"},
                    open=False,
                )
                await self.pool.open(wait=True, timeout=30)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = BaselineApp()
