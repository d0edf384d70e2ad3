"""Servers a benchmark starts: PostgreSQL with Herald's schema, and apps under uvicorn."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bench.support.processes import stop, tail

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_DIR = Path(__file__).resolve().parents[2]
SERVER_START_SECONDS = 60.0
# What `herald api` gets from uvicorn.run's defaults (uvloop and httptools when installed,
# as they are), minus the access log it also turns off; Ctrl-C should not wait 20 s.
UVICORN_OPTIONS = [
    "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    "--timeout-graceful-shutdown", "5", "--proxy-headers", "--forwarded-allow-ips", "*",
]  # fmt: skip


def migrate(database_url: str) -> None:
    """Bring the database to Herald's schema with the project's migrations."""
    from ecs_service.db.migrations import upgrade_to_head

    engine = create_engine(database_url)
    try:
        upgrade_to_head(engine)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    api_key: str


# One key drives a whole bench load: the api's per-key limiter runs and costs what it
# costs, but never refuses (a bench measures speed, not the limit).
BENCH_RATE_LIMIT = {"API_RATE_LIMIT_PER_SECOND": "1000000", "API_RATE_LIMIT_BURST": "10000000"}


def create_tenant(database_url: str, name: str) -> Tenant:
    """A tenant and an API key, as ``herald tenants create`` and ``herald keys create`` do."""
    from ecs_service import api_keys, tenant_limits

    engine = create_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            tenant = api_keys.create_tenant(session, name)
            issued = api_keys.issue_key(session, tenant, "bench")
            # A bench schedules more than the default daily quota, run after run.
            tenant_limits.set_daily_quota(session, tenant.id, tenant_limits.MAX_DAILY_QUOTA)
    finally:
        engine.dispose()
    return Tenant(id=issued.tenant_id, api_key=issued.plaintext)


@dataclass(frozen=True)
class Server:
    pid: int  # uvicorn's (the supervisor's, with --workers > 1)
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def uvicorn_server(
    target: list[str],
    *,
    port: int,
    workers: int,
    environment: dict[str, str],
    log_path: Path,
    api_key: str,
) -> Iterator[Server]:
    """``python -m uvicorn <target>`` in its own process group until the block ends.

    Ready once it answers ``GET /v1/messages/<unknown id>`` with 404 (through the
    database, and for Herald through authentication).
    """
    command = [
        sys.executable, "-m", "uvicorn", *target, "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), *UVICORN_OPTIONS,
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_DIR,
            env={**os.environ, **environment},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to us; we stop it in order
        )
    try:
        _wait_until_serving(process, port, log_path, api_key)
        yield Server(pid=process.pid, port=port)
    finally:
        stop(process, group=True)


def _wait_until_serving(
    process: subprocess.Popen[bytes], port: int, log_path: Path, api_key: str
) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    url = f"http://127.0.0.1:{port}/v1/messages/{uuid.UUID(int=0)}"
    headers = {"Authorization": f"Bearer {api_key}"}
    answered = 0
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited ({process.returncode}):\n{tail(log_path)}")
        with contextlib.suppress(httpx.TransportError):
            status = httpx.get(url, headers=headers, timeout=2.0).status_code
            last = f"HTTP {status}"
            if status == 404:
                answered += 1
                # Several workers share the port: a few answers in a row, not just one.
                if answered >= 5:
                    return
                continue
        time.sleep(0.1)
    raise TimeoutError(
        f"uvicorn not serving after {SERVER_START_SECONDS:.0f}s ({last}):\n{tail(log_path)}"
    )
