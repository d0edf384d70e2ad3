"""The api as a process (``herald api``) under hostile load: a flood from one tenant, huge
bodies from nobody, and a key revoked while two processes hold it in their caches.

Every load here is bounded in count and in time, and goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service import api_keys
from herald_local.postgres import LocalPostgres, free_port
from tests.integration.conftest import REPO_ROOT, SENDER, Caller, make_caller
from tests.support.processes import herald_process, tail, wait_watching

FLOOD_CLIENTS = 150
FLOOD_SECONDS = 6.0
FLOOD_MAX_REQUESTS = 100_000
QUIET_PAUSE_SECONDS = 0.05  # the quiet tenant's pace: 20 requests a second, under its limit
MIB = 1024 * 1024


@dataclass(frozen=True)
class ApiProcess:
    url: str
    pid: int
    log: Path


@contextmanager
def api_process(
    postgres: LocalPostgres, log: Path, extra_env: dict[str, str] | None = None
) -> Iterator[ApiProcess]:
    """``herald api`` (one process) on the session's PostgreSQL, ready."""
    port = free_port()
    env = {
        "DATABASE_URL": postgres.url(),
        "DATABASE_SSLMODE": "disable",
        "SENDER_EMAIL": SENDER,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    } | (extra_env or {})
    url = f"http://127.0.0.1:{port}"
    with herald_process("api", env, log) as process:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_watching(ready, 60, "the api to be ready", log)
        yield ApiProcess(url, process.pid, log)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def post_message(api: ApiProcess, caller: Caller) -> str:
    body = {"to": ["reader@example.org"], "subject": "Hello", "text": "Hi"}
    response = httpx.post(f"{api.url}/v1/messages", json=body, headers=caller.headers, timeout=10)
    assert response.status_code == 201, response.text
    message_id: str = response.json()["id"]
    return message_id


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def quiet_tenant_reads(
    url: str, caller: Caller, until: Callable[[], bool]
) -> list[tuple[int, float]]:
    """One request at a time, paced, until ``until``; each answer's status and seconds."""
    answers: list[tuple[int, float]] = []
    with httpx.Client(headers=caller.headers, timeout=10) as client:
        while not until() and len(answers) < 1_000:
            started = time.perf_counter()
            try:
                status = client.get(url).status_code
            except httpx.HTTPError:
                status = 0
            answers.append((status, time.perf_counter() - started))
            time.sleep(QUIET_PAUSE_SECONDS)
    return answers


@pytest.mark.parametrize(
    "rate_limit",
    [{}, {"API_RATE_LIMIT_PER_SECOND": "1000000", "API_RATE_LIMIT_BURST": "1000000"}],
    ids=["default-rate-limit", "no-rate-limit"],
)
def test_a_flood_from_one_tenant_leaves_another_tenants_requests_fast(
    postgres: LocalPostgres, engine: Engine, tmp_path: Path, rate_limit: dict[str, str]
) -> None:
    # Given an api process, and a message of each of two tenants
    noisy, quiet = make_caller(engine), make_caller(engine)
    with api_process(postgres, tmp_path / "api.log", rate_limit) as api:
        noisy_url = f"{api.url}/v1/messages/{post_message(api, noisy)}"
        quiet_url = f"{api.url}/v1/messages/{post_message(api, quiet)}"

        # When 150 clients of one tenant read its message without pause, while the other
        # tenant keeps reading its own
        flood = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.hammer",
                noisy_url,
                noisy.key,
                str(FLOOD_CLIENTS),
                str(FLOOD_SECONDS),
                str(FLOOD_MAX_REQUESTS),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)  # the flood is on
        quiet_answers = quiet_tenant_reads(quiet_url, quiet, lambda: flood.poll() is not None)
        output, _ = flood.communicate(timeout=60)
        flooded = json.loads(output)
        log_tail = tail(api.log)

    # Then every read of the quiet tenant succeeded, its p99 under a second; the noisy
    # tenant got no 500, and each refusal it got was a 429 or 503 with Retry-After
    latencies = [seconds for _, seconds in quiet_answers]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(
        f"\nflood {rate_limit or 'default'}: noisy {flooded}; quiet n={len(latencies)} "
        f"p50={p50 * 1000:.1f} ms p99={p99 * 1000:.1f} ms max={max(latencies) * 1000:.1f} ms"
    )
    assert len(quiet_answers) >= 20, "the quiet tenant hardly got to send anything"
    assert {status for status, _ in quiet_answers} == {200}, quiet_answers
    assert p99 < 1.0, f"the quiet tenant's p99 was {p99:.3f} s"
    statuses: dict[str, int] = flooded["statuses"]
    assert set(statuses) <= {"200", "429", "503"}, (statuses, log_tail)
    assert flooded["without_retry_after"] == {}, flooded


def send_large_body(url: str, size: int, chunked: bool) -> str:
    """POST ``size`` bytes with no key; the status line the api answered, or how the
    connection ended before one came."""
    host, port = url.removeprefix("http://").split(":")
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n"
    ).encode()
    piece = b"x" * (256 * 1024)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head)
        sent = 0
        try:
            while sent < size:
                data = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
                connection.sendall(data)
                sent += len(piece)
        except OSError:
            pass  # the api closed the connection: it stopped reading, as it should
        try:
            return connection.recv(200).split(b"\r\n")[0].decode()
        except OSError as error:
            return f"closed after {sent // MIB} MiB ({error.strerror})"


def test_large_bodies_without_a_key_do_not_grow_the_api_process(
    postgres: LocalPostgres, engine: Engine, tmp_path: Path
) -> None:
    # Given an api process
    with api_process(postgres, tmp_path / "api.log") as api:
        before = rss_bytes(api.pid)

        # When three 60 MB bodies come with no key (declared, and streamed without a length)
        outcomes = [send_large_body(api.url, 60_000_000, chunked=i == 1) for i in range(3)]
        after = rss_bytes(api.pid)
        still_ready = httpx.get(f"{api.url}/readyz", timeout=5).status_code

    # Then the process barely grew, and it still serves
    print(f"\nlarge bodies: {outcomes}; RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB")
    assert after - before < 10 * MIB, f"RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB"
    assert still_ready == 200


def test_a_revoked_key_fails_at_once_in_every_api_process(
    postgres: LocalPostgres, engine: Engine, tmp_path: Path
) -> None:
    # Given two api processes, each of which has authenticated a tenant's keys (cached)
    callers = [make_caller(engine) for _ in range(5)]
    with ExitStack() as stack:
        apis = [
            stack.enter_context(api_process(postgres, tmp_path / f"api-{i}.log")) for i in (1, 2)
        ]
        for caller in callers:
            for api in apis:
                for _ in range(2):
                    answer = httpx.get(f"{api.url}/v1/messages", headers=caller.headers)
                    assert answer.status_code == 200, answer.text

        # When each key is revoked, Then its very next request fails in both processes
        refused: list[list[int]] = []
        for caller in callers:
            with Session(engine) as session, session.begin():
                api_keys.revoke_key(session, caller.key_id)
            refused.append(
                [
                    httpx.get(f"{api.url}/v1/messages", headers=caller.headers).status_code
                    for api in apis
                ]
            )
    assert refused == [[401, 401]] * len(callers)
