"""API keys that expire, and the time each was last used, on real PostgreSQL: an expired key
is refused exactly as an unknown one (also while the api has it cached), and the statement
that reads a key's row stamps its use, once per cache fill."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from ecs_service import api_keys
from ecs_service.db.models import ApiKey
from tests.support.builders import key_of

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from httpx import Response
    from sqlalchemy.engine import Engine

    from tests.integration.conftest import Caller

MESSAGES = "/v1/messages"


def key_expiring(engine: Engine, caller: Caller, expires_at: datetime) -> str:
    """A new key of the caller's tenant that expires at ``expires_at``."""
    return key_of(engine, caller.tenant_id, name="expiring", expires_at=expires_at)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def last_used_at(engine: Engine, key: str) -> datetime | None:
    with Session(engine) as session:
        return session.scalar(
            select(ApiKey.last_used_at).where(ApiKey.key_id == api_keys.key_id_of(key))
        )


def refusal(response: Response) -> tuple[int, dict[str, Any], str | None]:
    """What a refused caller learns: status, problem (without its request id), challenge."""
    problem = {name: value for name, value in response.json().items() if name != "request_id"}
    return response.status_code, problem, response.headers.get("www-authenticate")


@contextmanager
def key_reads(client: TestClient) -> Iterator[list[str]]:
    """The statements touching api_keys that the api runs inside the block."""
    statements: list[str] = []
    api_engine: Engine = client.app.state.services.engine  # type: ignore[attr-defined]

    def record(*args: Any) -> None:
        if "api_keys" in args[2]:
            statements.append(args[2])

    event.listen(api_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(api_engine, "before_cursor_execute", record)


def test_an_expired_key_is_refused_exactly_like_an_unknown_one(
    client: TestClient, caller: Caller, engine: Engine
) -> None:
    # Given a key that expired a second ago, and a key nobody ever issued
    expired = key_expiring(engine, caller, datetime.now(UTC) - timedelta(seconds=1))
    unknown = f"hrld_{'Q' * 12}_{'s' * 43}"

    # When each is presented
    refused_expired = client.get(MESSAGES, headers=bearer(expired))
    refused_unknown = client.get(MESSAGES, headers=bearer(unknown))

    # Then both get the same 401 problem: nothing says the key exists but expired
    assert refused_expired.status_code == 401
    assert refusal(refused_expired) == refusal(refused_unknown)


def test_a_key_not_yet_expired_is_accepted(
    client: TestClient, caller: Caller, engine: Engine
) -> None:
    # Given a key that expires tomorrow
    key = key_expiring(engine, caller, datetime.now(UTC) + timedelta(days=1))

    # When it is presented, Then the api answers
    assert client.get(MESSAGES, headers=bearer(key)).status_code == 200


def test_a_cached_key_is_refused_from_its_expiry_without_waiting_for_the_cache(
    client: TestClient, caller: Caller, engine: Engine
) -> None:
    # Given a key that expires in two seconds, which the api has cached (the cache keeps
    # a row 60 seconds)
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    key = key_expiring(engine, caller, expires_at)
    assert client.get(MESSAGES, headers=bearer(key)).status_code == 200

    # When it is presented again after its expiry
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.05)
    with key_reads(client) as reads:
        response = client.get(MESSAGES, headers=bearer(key))

    # Then the api refuses it from its cache, as it would an unknown key
    assert reads == []
    assert response.status_code == 401
    assert response.json()["type"] == "urn:herald:problem:unauthorized"


def test_the_first_use_of_a_key_records_when_it_was_used(
    client: TestClient, caller: Caller, engine: Engine
) -> None:
    # Given a key never used
    assert last_used_at(engine, caller.key) is None

    # When the api authenticates a request with it
    before = datetime.now(UTC)
    assert client.get(MESSAGES, headers=caller.headers).status_code == 200
    after = datetime.now(UTC)

    # Then its last use is the time of that request
    used = last_used_at(engine, caller.key)
    assert used is not None
    assert before - timedelta(seconds=1) <= used <= after + timedelta(seconds=1)


def test_recording_a_use_costs_no_statement_of_its_own(client: TestClient, caller: Caller) -> None:
    # When the api reads a key it has not cached
    with key_reads(client) as reads:
        assert client.get(MESSAGES, headers=caller.headers).status_code == 200

    # Then one statement both read the key and stamped its use
    assert len(reads) == 1
    assert "last_used_at" in reads[0]


def test_a_wrong_secret_does_not_count_as_a_use(
    client: TestClient, caller: Caller, engine: Engine
) -> None:
    # Given a key's public id with a made-up secret
    forged = caller.key[:-43] + "A" * 43

    # When it is presented (and refused)
    assert client.get(MESSAGES, headers=bearer(forged)).status_code == 401

    # Then the key's last use is still never
    assert last_used_at(engine, caller.key) is None


def test_an_expired_key_presented_does_not_count_as_a_use(
    client: TestClient, caller: Caller, engine: Engine
) -> None:
    # Given an expired key
    expired = key_expiring(engine, caller, datetime.now(UTC) - timedelta(minutes=1))

    # When it is presented (and refused)
    assert client.get(MESSAGES, headers=bearer(expired)).status_code == 401

    # Then its last use is still never
    assert last_used_at(engine, expired) is None
