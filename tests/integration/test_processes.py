"""The herald command as people and ECS run it: admin commands, SIGTERM of api and worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from mypy_boto3_sqs import SQSClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service.cli import main
from ecs_service.db.models import Message
from herald_local.postgres import LocalPostgres, free_port
from shared.contracts import AnyTask, TaskResult
from tests.integration.conftest import REPO_ROOT, SENDER, Caller, drain, new_queue
from tests.support.builders import insert_messages
from tests.support.cli import run_cli
from tests.support.processes import spawn
from tests.support.waits import wait_for


@pytest.fixture
def database_env(
    postgres: LocalPostgres, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = {"DATABASE_URL": postgres.url(), "DATABASE_SSLMODE": "disable", "SENDER_EMAIL": SENDER}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_cli_issues_a_key_the_api_accepts_and_revokes_it(
    database_env: dict[str, str], client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a tenant and a key made with the CLI
    assert run_cli(capsys, "tenants", "create", "initech")[0] == 0
    code, key, note = run_cli(capsys, "keys", "create", "initech", "--name", "billing")
    key = key.strip()
    assert code == 0
    assert key.startswith("hrld_")
    assert "shown once" in note

    # Then the API accepts it, and the key list shows it without its secret
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/messages", headers=headers).status_code == 200
    _, listing, _ = run_cli(capsys, "keys", "list", "initech")
    key_id = key.split("_")[1]
    header, row = listing.splitlines()
    assert header.split() == [
        "KEY", "ID", "TENANT", "NAME", "CREATED", "EXPIRES", "LAST", "USED", "STATE"
    ]  # fmt: skip
    assert row.split()[:3] == [key_id, "initech", "billing"]
    expires, last_used = row.split()[-3:-1]
    assert (expires, last_used[:2]) == ("never", "20")  # never expires, used just now
    assert row.split()[-1] == "active"
    assert key not in listing

    # When it is revoked, Then the API refuses it as soon as it hears the revocation (a
    # NOTIFY delivered at the commit, read by the api's listener thread: ~1 ms, but on a
    # loaded machine the next request can be quicker than that thread)
    assert run_cli(capsys, "keys", "revoke", key_id)[0] == 0
    wait_for(
        lambda: client.get("/v1/messages", headers=headers).status_code == 401,
        2,
        "the api to refuse the revoked key",
    )
    assert "revoked" in run_cli(capsys, "keys", "list")[1]


def test_cli_refuses_a_duplicate_tenant_and_an_unknown_key(
    database_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli(capsys, "tenants", "create", "initech")
    code, _, error = run_cli(capsys, "tenants", "create", "initech")
    assert (code, error.strip()) == (1, "herald: a tenant named 'initech' exists already")
    code, _, error = run_cli(capsys, "keys", "revoke", "nosuchkey")
    assert (code, error.strip()) == (1, "herald: no active key 'nosuchkey'")


def test_migrate_can_run_again(
    database_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "migrate") == (0, "herald: database schema is up to date\n", "")


def test_missing_configuration_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_SECRET", raising=False)
    monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)
    with pytest.raises(SystemExit, match="invalid configuration: .*DATABASE_URL"):
        main(["migrate"])


@pytest.fixture
def api_process(database_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = spawn("api", database_env | {"PORT": str(port), "HOST": "127.0.0.1"})

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 30, "the api to answer /healthz")
    yield process, port
    if process.poll() is None:
        process.kill()
    process.wait()


def test_api_finishes_an_in_flight_request_on_sigterm_then_exits(
    api_process: tuple[subprocess.Popen[str], int], caller: Caller
) -> None:
    process, port = api_process
    body = b'{"to": ["reader@example.org"], "subject": "Hi", "text": "In flight"}'
    # Given a request whose body is still arriving
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        head = (
            f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {caller.key}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        connection.sendall(head.encode() + body[:10])
        time.sleep(0.5)

        # When ECS sends SIGTERM
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        connection.sendall(body[10:])
        answer = connection.recv(65_536).decode()

    # Then that request completes, and the process shuts down cleanly well within 20 s
    # (uvicorn re-raises the SIGTERM it handled once it is done, as Unix servers should)
    assert answer.startswith("HTTP/1.1 201"), answer
    assert process.wait(timeout=25) in (0, -signal.SIGTERM)
    assert time.monotonic() - stopped_at < 20
    assert "api stopped" in (process.stdout.read() if process.stdout else "")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def uvicorn_workers(supervisor: int) -> list[int]:
    """The api processes uvicorn's supervisor started (not multiprocessing's helpers)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def test_api_workers_all_serve_and_all_stop_on_sigterm(
    database_env: dict[str, str], caller: Caller, tmp_path: Path
) -> None:
    # Given herald api with API_WORKERS=2
    port = free_port()
    log_path = tmp_path / "api.log"
    env = database_env | {"PORT": str(port), "HOST": "127.0.0.1", "API_WORKERS": "2"}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ecs_service", "api"],
            cwd=REPO_ROOT,
            env=os.environ | env | {"PYTHONPATH": f"{REPO_ROOT / 'src'}:{REPO_ROOT}"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: log_path.read_text().count('"api started"') == 2,
            30,
            "both api processes to start",
        )
        workers = uvicorn_workers(process.pid)
        assert len(workers) == 2, workers

        # Then each process answers on its own while the other is paused
        body = {"to": ["reader@example.org"], "subject": "Hi", "text": "From one worker"}
        for serving in workers:
            paused = [pid for pid in workers if pid != serving]
            for pid in paused:
                os.kill(pid, signal.SIGSTOP)
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/v1/messages",
                    json=body,
                    headers=caller.headers,
                    timeout=10,
                )
            finally:
                for pid in paused:
                    os.kill(pid, signal.SIGCONT)
            assert answer.status_code == 201, answer.text

        # When ECS sends SIGTERM, Then the supervisor and both workers exit cleanly
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=25) in (0, -signal.SIGTERM)
        wait_for(
            lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
            10,
            "both api processes to exit",
        )
        assert log_path.read_text().count('"api stopped"') == 2
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_worker_relays_applies_results_and_stops_cleanly_on_sigterm(
    database_env: dict[str, str], engine: Engine, sqs: SQSClient, moto_endpoint: str, caller: Caller
) -> None:
    # Given a worker wired to fresh queues, and messages due now and one due in a second
    task_queue, result_queue = new_queue(sqs, "tasks"), new_queue(sqs, "results")
    worker = spawn(
        "worker",
        database_env
        | {
            "TASK_QUEUE_URL": task_queue,
            "RESULT_QUEUE_URL": result_queue,
            "AWS_ENDPOINT_URL": moto_endpoint,
            "RESULTS_WAIT_SECONDS": "1",
            "RELAY_POLL_SECONDS": "1",
            # moto has no sesv2 GetAccount: unpaced, as herald-local
            "SES_MAX_SEND_RATE": "1000",
        },
    )
    try:
        due = insert_messages(engine, caller.tenant_id, 25)
        [soon] = insert_messages(
            engine, caller.tenant_id, 1, send_at=datetime.now(UTC) + timedelta(seconds=1)
        )

        def queued() -> int:
            with Session(engine) as session:
                return session.scalar(select(func.count()).where(Message.status == "queued")) or 0

        # Then they are relayed: the due ones at once, the other when it is due
        wait_for(lambda: queued() == 26, 20, "26 queued messages")
        tasks = {
            AnyTask.model_validate_json(str(m["Body"])).task_id for m in drain(sqs, task_queue)
        }
        assert tasks == {*due, soon}

        # When the task runner's results arrive, Then the worker applies them
        for message_id in due:
            sqs.send_message(
                QueueUrl=result_queue,
                MessageBody=TaskResult.sent(message_id, "ses", datetime.now(UTC)).model_dump_json(),
            )
        wait_for(lambda: queued() == 1, 20, "25 results applied")

        # When SIGTERM arrives, Then the worker finishes and exits 0, promptly
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert time.monotonic() - stopped_at < 15
        output = worker.stdout.read() if worker.stdout else ""
        assert "worker stopped" in output
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
