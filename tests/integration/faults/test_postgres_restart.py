"""Scenario 5: PostgreSQL restarted while the api is under load.

A server of the test's own, so the session's shared one is never disturbed. A COMMIT in
flight as the server stops is what finds an api that answers before it commits (a 201
for a message that was never stored, or a dropped connection instead of a 503); not
every run has one in flight, so such a regression shows in some runs, not all.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service.db.models import Message
from herald_local.postgres import LocalPostgres, free_port
from tests.integration.conftest import SENDER, Caller, make_caller, migrated_postgres
from tests.integration.faults.conftest import RecordScenario
from tests.integration.faults.pipeline import N
from tests.support.processes import herald_process, tail, wait_watching
from tests.support.waits import wait_for

CLIENTS = 4
DOWN_SECONDS = 1
REQUEST_TIMEOUT_SECONDS = 30


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    # Its own server, so restarting it never disturbs the session's.
    with migrated_postgres("herald-faults-postgres-") as server:
        yield server


@dataclass
class Load:
    """Clients posting messages without pause, and everything they saw, in order."""

    url: str
    caller: Caller
    answers: list[tuple[float, int, str]] = field(default_factory=list)  # when, status, body
    broken: list[str] = field(default_factory=list)  # requests with no HTTP answer at all
    created: list[UUID] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        body = {"to": ["reader@example.org"], "subject": "Under load", "text": "Hello"}
        with httpx.Client(
            base_url=self.url, headers=self.caller.headers, timeout=REQUEST_TIMEOUT_SECONDS
        ) as client:
            while not self.stop.is_set():
                try:
                    answer = client.post("/v1/messages", json=body)
                except httpx.HTTPError as error:
                    with self.lock:
                        self.broken.append(repr(error))
                    continue
                with self.lock:
                    self.answers.append((time.monotonic(), answer.status_code, answer.text))
                    if answer.status_code == 201:
                        self.created.append(UUID(answer.json()["id"]))

    def count(self, status: int, after: float = 0) -> int:
        with self.lock:
            return sum(1 for when, code, _ in self.answers if code == status and when > after)


def test_the_api_answers_503_while_postgres_restarts_then_recovers_by_itself(
    own_postgres: LocalPostgres, record_scenario: RecordScenario, tmp_path: Path
) -> None:
    # Given the api process on its own PostgreSQL, and clients posting messages to it
    engine: Engine = create_engine(own_postgres.url(), pool_pre_ping=True)
    caller = make_caller(engine)
    port = free_port()
    env = {
        "DATABASE_URL": own_postgres.url(),
        "DATABASE_SSLMODE": "disable",
        "SENDER_EMAIL": SENDER,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "api.log"
    load = Load(f"http://127.0.0.1:{port}", caller)
    with herald_process("api", env, log) as api:

        def ready() -> bool:
            try:
                return httpx.get(f"{load.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_watching(ready, 60, "the api to be ready", log)
        clients = [threading.Thread(target=load.run) for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        try:
            wait_for(lambda: load.count(201) >= min(10, N), 30, "messages created before")

            # When PostgreSQL stops for a while, then starts again on the same port
            went_down = time.monotonic()
            own_postgres.stop()
            wait_for(lambda: load.count(503, went_down) >= CLIENTS, 30, "503s during the outage")
            time.sleep(DOWN_SECONDS)
            own_postgres.start()
            came_back = time.monotonic()

            # Then the same api process serves again, until N messages were created in all
            wait_for(lambda: load.count(201, came_back) >= 1, 60, "a 201 after the restart")
            recovered = time.monotonic() - came_back
            wait_for(lambda: load.count(201) >= N, 60 + N * 0.1, f"{N} messages created")
        finally:
            load.stop.set()
            for client in clients:
                client.join(timeout=REQUEST_TIMEOUT_SECONDS + 5)
        assert api.poll() is None, tail(log)

    codes = Counter(code for _, code, _ in load.answers)
    problem_types = {json.loads(text)["type"] for _, code, text in load.answers if code == 503}
    with Session(engine) as session:
        stored = set(session.scalars(select(Message.id)))
    engine.dispose()
    lost = set(load.created) - stored
    record_scenario(
        messages=len(load.created),
        requests=len(load.answers) + len(load.broken),
        status_codes={str(code): count for code, count in sorted(codes.items())},
        dropped_connections=len(load.broken),
        answered_201_but_not_stored=len(lost),
        seconds_to_first_201_after_restart=round(recovered, 3),
        down_seconds=DOWN_SECONDS,
    )
    # And every answer was a 201, or a 503 problem while the database was away
    assert set(codes) == {201, 503}, (codes, tail(log))
    assert problem_types == {"urn:herald:problem:service-unavailable"}
    # And no message the api answered 201 for was lost in the restart
    assert lost == set()
    # And every request had an answer
    assert load.broken == [], tail(log)
