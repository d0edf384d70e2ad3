"""The api's limits against real PostgreSQL: body cap, security headers, per-key rate limit,
daily quota, and authentication from the key cache (with immediate revocation)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service import api_keys, tenant_limits
from ecs_service.api.app import create_app
from ecs_service.api.key_cache import MISS
from ecs_service.settings import ApiSettings, DatabaseSettings
from herald_local.postgres import free_port
from tests.integration.conftest import SENDER, Caller
from tests.support.api import assert_problem, create, email
from tests.support.waits import wait_for

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@pytest.fixture(scope="module")
def offline_client() -> Iterator[TestClient]:
    """An api whose database does not answer: whatever it answers did no database work."""
    unreachable = DatabaseSettings(url=f"postgresql://herald@127.0.0.1:{free_port()}/herald")
    with TestClient(
        create_app(ApiSettings(SENDER_EMAIL=SENDER), unreachable), raise_server_exceptions=False
    ) as client:
        yield client


@pytest.fixture
def strict_client(database_settings: DatabaseSettings, engine: Engine) -> Iterator[TestClient]:
    """An api whose keys may send 2 requests at once, then one every 10 seconds."""
    settings = ApiSettings(
        SENDER_EMAIL=SENDER, API_RATE_LIMIT_BURST=2, API_RATE_LIMIT_PER_SECOND=0.1
    )
    with TestClient(
        create_app(settings, database_settings), raise_server_exceptions=False
    ) as client:
        yield client


def test_a_body_over_the_cap_without_a_key_is_413_before_any_database_work(
    offline_client: TestClient,
) -> None:
    # When a 400 KB body comes with no key, to an api whose database is down
    response = offline_client.post(
        "/v1/messages", content=b"x" * 400_000, headers={"Content-Type": "application/json"}
    )

    # Then it is refused for its size: not a 401 (no key), not a 503 (no database)
    problem = assert_problem(response, 413, "payload-too-large")
    assert problem["detail"] == "the request body is over the maximum of 300,000 bytes"
    assert response.headers["connection"] == "close"


def test_a_streamed_body_over_the_cap_is_413_while_it_streams(offline_client: TestClient) -> None:
    # Given a body with no Content-Length, sent in pieces
    def pieces() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 10_000

    # When it passes the cap, Then it is refused
    response = offline_client.post(
        "/v1/messages", content=pieces(), headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload-too-large")


@pytest.mark.parametrize(
    ("method", "path", "authenticated"),
    [
        ("GET", "/healthz", False),
        ("GET", "/nowhere", False),
        ("GET", "/v1/messages", False),
        ("GET", "/v1/messages", True),
        ("POST", "/v1/messages", True),
    ],
    ids=["liveness", "unknown-route", "unauthorized", "list", "create"],
)
def test_every_answer_carries_the_security_headers(
    client: TestClient, caller: Caller, method: str, path: str, authenticated: bool
) -> None:
    response = client.request(
        method,
        path,
        json=email() if method == "POST" else None,
        headers=caller.headers if authenticated else {},
    )

    assert {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    if path.startswith("/v1"):
        assert response.headers["cache-control"] == "no-store"


def test_a_500_carries_the_security_headers_and_the_request_id(
    client: TestClient, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a route that fails with a bug
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("ecs_service.messages.list_messages", broken)

    # When it is called
    response = client.get("/v1/messages", headers=caller.headers)

    # Then the 500 problem has the same headers as any other answer
    assert_problem(response, 500, "internal-error")
    assert {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS


def test_allowed_requests_carry_the_rate_limit_headers(
    strict_client: TestClient, caller: Caller
) -> None:
    response = strict_client.get("/v1/messages", headers=caller.headers)

    assert response.status_code == 200
    assert response.headers["ratelimit-policy"] == '"api-key";q=2;w=20'
    assert response.headers["ratelimit"].startswith('"api-key";r=')
    assert "retry-after" not in response.headers


def test_a_key_over_its_rate_gets_429_with_retry_after(
    strict_client: TestClient, caller: Caller
) -> None:
    # Given a key that used its burst
    for _ in range(2):
        assert strict_client.get("/v1/messages", headers=caller.headers).status_code == 200

    # When it sends one more at once
    response = strict_client.get("/v1/messages", headers=caller.headers)

    # Then it is refused, told when to retry, and the headers say why
    assert_problem(response, 429, "rate-limited")
    assert 1 <= int(response.headers["retry-after"]) <= 10
    assert response.headers["ratelimit"].startswith('"api-key";r=0;')
    assert response.headers["ratelimit-policy"] == '"api-key";q=2;w=20'


def test_invalid_requests_spend_the_rate_limit_too_and_say_so(
    strict_client: TestClient, caller: Caller
) -> None:
    # When a key sends invalid bodies, one more than its burst
    answers = [
        strict_client.post("/v1/messages", json={}, headers=caller.headers) for _ in range(3)
    ]

    # Then its burst is spent on 422s, the next one is refused, and each says how it stands
    assert [answer.status_code for answer in answers] == [422, 422, 429]
    assert all(answer.headers["ratelimit-policy"] == '"api-key";q=2;w=20' for answer in answers)
    assert answers[1].headers["ratelimit"].startswith('"api-key";r=0;')
    assert_problem(answers[2], 429, "rate-limited")
    assert 1 <= int(answers[2].headers["retry-after"]) <= 10


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/nowhere", 404), ("PUT", "/v1/messages", 405)],
    ids=["unknown-route", "wrong-method"],
)
def test_a_request_no_route_takes_spends_a_token_and_carries_the_headers(
    strict_client: TestClient, caller: Caller, method: str, path: str, status: int
) -> None:
    # Given a key that spent one of its two tokens on a request no route takes
    first = strict_client.request(method, path, headers=caller.headers)

    # When it sends a valid request, one more than its burst
    second = strict_client.get("/v1/messages", headers=caller.headers)
    third = strict_client.get("/v1/messages", headers=caller.headers)

    # Then the first was answered with the headers, and counted
    assert first.status_code == status
    assert first.headers["ratelimit"].startswith('"api-key";r=')
    assert (second.status_code, third.status_code) == (200, 429)


def test_the_rate_limit_is_per_key(
    strict_client: TestClient, caller: Caller, other_caller: Caller
) -> None:
    # Given a key over its rate
    for _ in range(3):
        strict_client.get("/v1/messages", headers=caller.headers)

    # Then another tenant's key is not limited by it
    assert strict_client.get("/v1/messages", headers=other_caller.headers).status_code == 200


def test_a_tenant_over_its_daily_quota_gets_429_until_midnight(
    client: TestClient, caller: Caller, engine: Engine
) -> None:
    # Given a tenant whose daily quota is one email, and has sent it
    with Session(engine) as session, session.begin():
        tenant_limits.set_daily_quota(session, caller.tenant_id, 1)
    create(client, caller)

    # When it schedules another
    response = client.post("/v1/messages", json=email(), headers=caller.headers)

    # Then it is refused until the next UTC midnight
    problem = assert_problem(response, 429, "quota-exceeded")
    assert "daily quota of 1 emails" in problem["detail"]
    assert 1 <= int(response.headers["retry-after"]) <= 86_400


def key_lookups_of_one_request(client: TestClient, caller: Caller) -> list[str]:
    """The statements reading api_keys that one authenticated GET ran."""
    statements: list[str] = []
    api_engine: Engine = client.app.state.services.engine  # type: ignore[attr-defined]

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(api_engine, "before_cursor_execute", record)
    try:
        assert client.get("/v1/messages", headers=caller.headers).status_code == 200
    finally:
        event.remove(api_engine, "before_cursor_execute", record)
    assert statements, "the request ran no statement at all"
    return [sql for sql in statements if "api_keys" in sql]


def test_a_known_key_is_authenticated_without_reading_its_row(
    client: TestClient, caller: Caller
) -> None:
    # Given a key the api has seen
    assert client.get("/v1/messages", headers=caller.headers).status_code == 200

    # When it is used again, Then the request reads messages, not the key
    assert key_lookups_of_one_request(client, caller) == []


def test_a_revoked_key_is_refused_once_the_api_hears_the_revocation(
    client: TestClient, caller: Caller, engine: Engine
) -> None:
    # Given a key the api has in its cache
    for _ in range(2):
        assert client.get("/v1/messages", headers=caller.headers).status_code == 200
    cache = client.app.state.services.authenticator.cache  # type: ignore[attr-defined]

    # When it is revoked: the api's listener drops it about a millisecond after the
    # commit (NOTIFY is delivered then), well within the wait
    with Session(engine) as session, session.begin():
        api_keys.revoke_key(session, caller.key_id)
    wait_for(lambda: cache.lookup(caller.key_id) is MISS, 2, "the api to hear the revocation")

    # Then its next request is refused
    assert_problem(client.get("/v1/messages", headers=caller.headers), 401, "unauthorized")


def test_a_wrong_secret_for_a_cached_key_is_refused(client: TestClient, caller: Caller) -> None:
    # Given a key the api has in its cache
    assert client.get("/v1/messages", headers=caller.headers).status_code == 200

    # When its id comes with another secret, Then it is refused
    forged = caller.key[:-43] + "A" * 43
    response = client.get("/v1/messages", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "unauthorized")


def test_after_its_listener_reconnects_the_api_caches_keys_and_hears_revocations(
    client: TestClient, caller: Caller, engine: Engine
) -> None:
    # Given the api's revocation listener lost its connection (the server ended it)
    listeners = text("SELECT pid FROM pg_stat_activity WHERE application_name = 'herald-api-keys'")
    with engine.begin() as connection:
        ended = set(connection.scalars(listeners))
        connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM unnest(:p) AS pid"), {"p": list(ended)}
        )

    # When it has reconnected (a connection of its own listens): keys are authenticated
    # from the cache again. (Until the listener sees its connection end, the cache still
    # serves: a revocation then is the lost-connection case the cache cannot hear.)
    cache = client.app.state.services.authenticator.cache  # type: ignore[attr-defined]

    def listening_again() -> bool:
        with engine.connect() as connection:
            reconnected = set(connection.scalars(listeners)) - ended
        return bool(reconnected) and cache.trusted

    wait_for(listening_again, 10, "the revocation listener to listen again")
    deadline = time.monotonic() + 10
    while key_lookups_of_one_request(client, caller) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert key_lookups_of_one_request(client, caller) == [], "keys are still read every time"

    # Then a revocation reaches it (its thread drops the key about a millisecond after
    # the commit): the key's next request is refused
    with Session(engine) as session, session.begin():
        api_keys.revoke_key(session, caller.key_id)
    wait_for(lambda: cache.lookup(caller.key_id) is MISS, 2, "the api to hear the revocation")
    assert_problem(client.get("/v1/messages", headers=caller.headers), 401, "unauthorized")


@pytest.mark.parametrize(
    ("content", "status"), [(b"x" * 400_000, 413), (b"{}", 401)], ids=["too-large", "no-key"]
)
def test_early_refusals_carry_the_cors_headers_a_browser_needs_to_read_them(
    content: bytes, status: int
) -> None:
    # Given an api that allows the web app's origin (and whose database is down)
    origin = "https://app.example.com"
    unreachable = DatabaseSettings(url=f"postgresql://herald@127.0.0.1:{free_port()}/herald")
    settings = ApiSettings(SENDER_EMAIL=SENDER, CORS_ALLOWED_ORIGINS=origin)
    with TestClient(create_app(settings, unreachable), raise_server_exceptions=False) as client:
        # When the web app's request is refused before any route runs
        response = client.post(
            "/v1/messages",
            content=content,
            headers={"Origin": origin, "Content-Type": "application/json"},
        )

    # Then the browser may read the refusal, and when to retry
    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] == origin
    exposed = response.headers["access-control-expose-headers"].lower().split(", ")
    assert {"retry-after", "ratelimit", "ratelimit-policy"} <= set(exposed)


def statements_of_one_post(
    client: TestClient, caller: Caller, headers: dict[str, str]
) -> list[tuple[str, bool]]:
    """The statements writing messages that one POST ran, each with whether its connection
    was in autocommit (its own transaction: no BEGIN or COMMIT round trip)."""
    statements: list[tuple[str, bool]] = []
    api_engine: Engine = client.app.state.services.engine  # type: ignore[attr-defined]

    def record(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append((statement, bool(cursor.connection.autocommit)))

    event.listen(api_engine, "before_cursor_execute", record)
    try:
        response = client.post("/v1/messages", json=email(), headers=caller.headers | headers)
        assert response.status_code == 201
    finally:
        event.remove(api_engine, "before_cursor_execute", record)
    return [(sql, autocommit) for sql, autocommit in statements if "messages" in sql]


def test_a_post_without_a_key_is_one_statement_in_its_own_transaction(
    client: TestClient, caller: Caller
) -> None:
    # When a message is scheduled without an Idempotency-Key
    statements = statements_of_one_post(client, caller, {})

    # Then one statement checked suppressions, counted the quota and stored it, committed
    # by itself
    [(sql, autocommit)] = statements
    assert ("suppressions" in sql, "tenant_daily_usage" in sql, autocommit) == (True, True, True)


def test_a_post_with_a_key_stays_in_a_transaction(client: TestClient, caller: Caller) -> None:
    # When a message is scheduled with an Idempotency-Key
    statements = statements_of_one_post(client, caller, {"Idempotency-Key": "one-transaction"})

    # Then its statements ran in a transaction (its SAVEPOINT needs one)
    assert statements
    assert not any(autocommit for _, autocommit in statements)
