"""Where Herald's api spends its CPU per request: a deterministic profile (cProfile).

The api's routes and dependencies are ``def`` functions that FastAPI runs in worker
threads, which a profiler of one thread cannot see and a sampler cannot attribute (a
sampled thread is mostly seen where it blocks). So for this profile only, work that
would go to a thread runs inline on the event loop (``anyio.to_thread.run_sync`` and
``WorkerThreads.run`` are replaced), requests are sent one at a time in process (no
sockets, no uvicorn, no HTTP client: ``asgi_request`` hands the app its scope and body
and collects what it sends, so the profile is the server's alone; the httpx client it
used before was ~15 % of it, with a failed ``import trio`` per request), and everything
is one thread under cProfile with the process's CPU clock as its timer
(``time.process_time``: with threads inline, the process's CPU is this thread's), so
waiting on PostgreSQL costs nothing and only CPU is counted. (The thread's clock,
``time.thread_time``, gave negative totals under Python 3.13's cProfile: its resolution
is coarser than cProfile's bookkeeping expects.) The api's log lines are written, as in
production, but to /dev/null (``stdout_to_devnull``): the handler holds ``sys.stdout``
from the app's creation, so ``redirect_stdout`` could not silence them. cProfile's
overhead inflates code that makes many small calls (3-5 x), so each endpoint is also run
once unprofiled, timed by the same clock: ``cpu_ms_per_request_unprofiled``, the app's
CPU per request without uvicorn's HTTP parsing or thread hand-offs. The measured runs
never use this.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.types import ASGIApp, Message

# (label, a path fragment of the function's file, its name): the steps of a request.
STEPS = [
    ("authentication, cached key (hash + compare)", "ecs_service/api/key_cache.py", "from_cache"),
    ("authentication, key read from the database", "ecs_service/api/key_cache.py", "from_database"),
    ("rate limit (token from the key's lease)", "ecs_service/tenant_limits.py", "take"),
    ("daily quota (usage counted)", "ecs_service/tenant_limits.py", "reserve_daily_quota"),
    ("session commit", "sqlalchemy/orm/session.py", "commit"),
    ("pool checkout (pre-ping)", "sqlalchemy/pool/base.py", "_checkout"),
    ("suppression check (keyed POST)", "ecs_service/messages.py", "listed_recipients"),
    (
        "create_unkeyed_message (suppressions, quota, INSERT)",
        "ecs_service/messages.py",
        "create_unkeyed_message",
    ),
    ("create_message (keyed)", "ecs_service/messages.py", "create_message"),
    ("read_message (SELECT)", "ecs_service/messages.py", "read_message"),
    ("route create_message (all of it)", "ecs_service/api/routes/messages.py", "create_message"),
    ("email address validation", "email_validator/validate_email.py", "validate_email"),
    ("response model (MessageOut.of)", "ecs_service/api/schemas.py", "of"),
    ("FastAPI response serialization", "fastapi/routing.py", "serialize_response"),
    ("request body validation", "fastapi/dependencies/utils.py", "request_body_to_args"),
    ("request log line", "aws_lambda_powertools/logging/logger.py", "info"),
    ("session close (connection back to the pool)", "sqlalchemy/orm/session.py", "close"),
    ("connection close (back to the pool)", "sqlalchemy/engine/base.py", "close"),
    ("fast lane (endpoint, answer)", "ecs_service/api/fast_lane.py", "_answer"),
    ("FastAPI route matching", "fastapi/routing.py", "_match"),
    (
        "FastAPI dependency solving (params, body)",
        "fastapi/dependencies/utils.py",
        "solve_dependencies",
    ),
    ("metrics flush (EMF line)", "ecs_service/thread_safe_metrics.py", "flush"),
    ("psycopg execute", "psycopg/cursor.py", "execute"),
]


@contextmanager
def threads_inline() -> Iterator[None]:
    """Run what FastAPI hands to worker threads on the event loop's thread instead."""
    from ecs_service.api.worker_threads import WorkerThreads

    original, original_run = anyio.to_thread.run_sync, WorkerThreads.run

    async def inline(func: Any, *args: Any, **_: Any) -> Any:
        return func(*args)

    async def inline_method(_: WorkerThreads, func: Any, *args: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = inline  # type: ignore[assignment]
    WorkerThreads.run = inline_method  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        anyio.to_thread.run_sync = original
        WorkerThreads.run = original_run  # type: ignore[method-assign]


@contextmanager
def stdout_to_devnull() -> Iterator[None]:
    """File descriptor 1 to /dev/null: whatever holds ``sys.stdout`` writes there."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


async def asgi_request(
    app: ASGIApp, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    """One HTTP/1.1 request straight into the ASGI app: its status and body. What a
    server would do around it (parsing, sockets) is the same for every version of the
    app, so it is left out."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"bench"),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
            *([(b"content-length", str(len(body)).encode())] if body else []),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await asyncio.sleep(3600)  # the app never waits for a disconnect
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def package_of(filename: str) -> str:
    parts = Path(filename).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0].removesuffix(".py") if rest else filename
    for project in ("ecs_service", "shared"):
        if project in parts:
            return project
    return "python (stdlib, builtins)"


def profile_api(
    app: Any, api_key: str, bodies: list[str], ids: list[str], requests: int
) -> dict[str, Any]:
    """Profile ``requests`` POSTs, then as many GETs; per endpoint, ms per request of each
    step and the self time by package (shares of the profiled time). GETs read ``ids``,
    or, if it is empty, the messages the POSTs created."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    results: dict[str, Any] = {}
    created: list[str] = []

    async def drive(endpoint: str) -> None:
        for number in range(requests):
            if endpoint == "POST":
                body = bodies[number % len(bodies)].encode()
                status, answer = await asgi_request(app, "POST", "/v1/messages", headers, body)
                expected = 201
            else:
                read = ids or created
                path = f"/v1/messages/{read[number % len(read)]}"
                status, answer = await asgi_request(app, "GET", path, headers)
                expected = 200
            if status != expected:
                raise RuntimeError(f"{endpoint} answered {status}: {answer.decode()}")
            if endpoint == "POST" and not ids:
                created.append(json.loads(answer)["id"])

    async def main() -> None:
        async with app.router.lifespan_context(app):
            for endpoint in ("POST", "GET"):
                await drive(endpoint)  # warm-up: imports, caches, prepared statements
                cpu_before = time.process_time()
                await drive(endpoint)  # unprofiled: the CPU a request costs in this process
                cpu_ms = 1e3 * (time.process_time() - cpu_before) / requests
                profiler = cProfile.Profile(time.process_time)
                started = time.perf_counter()
                profiler.enable()
                await drive(endpoint)
                profiler.disable()
                wall = time.perf_counter() - started
                results[endpoint] = summarize(profiler, requests, wall)
                results[endpoint]["cpu_ms_per_request_unprofiled"] = round(cpu_ms, 3)

    with threads_inline(), stdout_to_devnull():
        asyncio.run(main())
    return results


def summarize(profiler: cProfile.Profile, requests: int, wall: float) -> dict[str, Any]:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in entries.values())  # tottime
    by_package: Counter[str] = Counter()
    for (filename, _, _), entry in entries.items():
        by_package[package_of(filename)] += entry[2]
    steps: dict[str, float] = {}
    for label, fragment, name in STEPS:
        cumulative = sum(
            entry[3]
            for (filename, _, function), entry in entries.items()
            if function == name and fragment in filename
        )
        if cumulative:
            steps[label] = round(1e3 * cumulative / requests, 3)
    statements = sum(
        entry[1]  # primitive calls
        for (filename, _, function), entry in entries.items()
        if function == "execute" and filename.endswith(str(Path("psycopg", "cursor.py")))
    )
    commits = sum(
        entry[1]
        for (filename, _, function), entry in entries.items()
        if function == "commit" and filename.endswith(str(Path("psycopg", "connection.py")))
    )
    return {
        "statements_per_request": round(statements / requests, 2),
        "commits_per_request": round(commits / requests, 2),
        "profiled_ms_per_request": round(1e3 * total / requests, 3),
        "wall_ms_per_request": round(1e3 * wall / requests, 3),
        "steps_ms_per_request": steps,
        "top_self_ms_per_request": {
            f"{package_of(filename)}:{Path(filename).name}:{function}": round(
                1e3 * entry[2] / requests, 3
            )
            for (filename, _, function), entry in sorted(
                entries.items(), key=lambda item: item[1][2], reverse=True
            )[:12]
        },
        "self_share_by_package": {
            name: round(value / total, 3) for name, value in by_package.most_common(10)
        },
    }
