"""Per-tenant limits on the real PostgreSQL: the request-rate bucket every api process shares,
the daily email quota, and the CLI that sets and shows quotas."""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ecs_service import messages
from ecs_service.api.app import create_app
from ecs_service.db.models import Message, TenantDailyUsage
from ecs_service.settings import ApiSettings
from ecs_service.tenant_limits import (
    LIMITER_APPLICATION,
    USAGE_SLOTS,
    DailyQuotaExceededError,
    PostgresTokenBuckets,
    RateLimitPolicy,
    RequestRateLimiter,
    TenantQuota,
    prune_usage,
    quotas,
    reserve_daily_quota,
    set_daily_quota,
)
from shared.contracts import EmailPayload
from tests.integration.conftest import SENDER
from tests.support.api import assert_problem
from tests.support.cli import run_cli

if TYPE_CHECKING:
    from collections.abc import Iterator
    from uuid import UUID

    from sqlalchemy.engine import Connection, Engine

    from ecs_service.settings import DatabaseSettings
    from herald_local.postgres import LocalPostgres
    from tests.integration.conftest import Caller

EMAIL = EmailPayload(sender="herald@example.com", to=["ada@example.org"], subject="Hi", text="x")
EMAIL_BODY = {"to": ["ada@example.org"], "subject": "Hi", "text": "x"}


@pytest.fixture
def limiters(engine: Engine) -> Iterator[list[RequestRateLimiter]]:
    """Limiters made by a test; each is closed (its connection too) when the test ends."""
    made: list[RequestRateLimiter] = []
    yield made
    for limiter in made:
        limiter.close()


def new_limiter(
    engine: Engine, policy: RateLimitPolicy, made: list[RequestRateLimiter]
) -> tuple[RequestRateLimiter, PostgresTokenBuckets]:
    """One api process's limiter, with its own connection to the shared buckets."""
    buckets = PostgresTokenBuckets(engine)
    limiter = RequestRateLimiter(engine, policy, buckets=buckets)
    made.append(limiter)
    return limiter, buckets


def schedule(engine: Engine, tenant_id: UUID, key: str | None = None) -> messages.Created:
    """One POST /v1/messages: create_message in its own committed transaction."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        return messages.create_message(
            session,
            tenant_id=tenant_id,
            email=EMAIL,
            send_at=datetime.now(UTC) + timedelta(hours=1),
            idempotency_key=key,
            request_hash="same-body" if key else None,
        )


def used_today(engine: Engine, tenant_id: UUID) -> int:
    with Session(engine) as session:
        (quota,) = quotas(session, tenant_id)
        return quota.used_today


def set_quota(engine: Engine, tenant_id: UUID, daily_quota: int) -> None:
    with Session(engine) as session, session.begin():
        set_daily_quota(session, tenant_id, daily_quota)


def seconds_to_utc_midnight() -> float:
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (midnight - now).total_seconds()


# The request-rate bucket


def test_bucket_refuses_past_the_burst_then_refills_at_the_rate(
    engine: Engine, caller: Caller, limiters: list[RequestRateLimiter]
) -> None:
    # Given a key's bucket of 10, refilled at 20 tokens/s
    policy = RateLimitPolicy(rate_per_second=20, burst=10)
    limiter, _ = new_limiter(engine, policy, limiters)

    # When 11 requests arrive at once
    burst = [limiter.take(caller.key_id) for _ in range(11)]
    drained = time.monotonic()

    # Then 10 go through and the 11th is refused, told to retry in a second
    assert [decision.allowed for decision in burst] == [True] * 10 + [False]
    assert burst[10].headers(policy) == {
        "RateLimit-Policy": '"api-key";q=20;w=1',
        "RateLimit": '"api-key";r=0;t=1',
        "Retry-After": "1",
    }

    # When a quarter of a second passes and 10 more arrive at once
    time.sleep(0.25)
    started = time.monotonic()
    allowed = sum(limiter.take(caller.key_id).allowed for _ in range(10))
    ended = time.monotonic()

    # Then what refilled in that time (20/s), and no more, goes through
    assert int(20 * (started - drained)) - 1 <= allowed <= int(20 * (ended - drained)) + 1
    assert allowed < 10


def test_a_drained_bucket_is_drained_for_every_process(
    engine: Engine, caller: Caller, limiters: list[RequestRateLimiter]
) -> None:
    # Given one api process spent the key's whole burst (1 token every 10 s)
    policy = RateLimitPolicy(rate_per_second=0.1, burst=5)
    first, _ = new_limiter(engine, policy, limiters)
    assert all(first.take(caller.key_id).allowed for _ in range(5))

    # When another process sees its first request of that key
    second, _ = new_limiter(engine, policy, limiters)
    decision = second.take(caller.key_id)

    # Then it is refused too, with the time the next token is due
    assert not decision.allowed
    assert 9 <= decision.retry_after_seconds <= 10


def test_keys_have_their_own_buckets(
    engine: Engine, caller: Caller, other_caller: Caller, limiters: list[RequestRateLimiter]
) -> None:
    # Given one key spent its burst
    limiter, _ = new_limiter(engine, RateLimitPolicy(rate_per_second=0.1, burst=3), limiters)
    for _ in range(4):
        limiter.take(caller.key_id)

    # When / Then another tenant's key still has all of its own
    assert all(limiter.take(other_caller.key_id).allowed for _ in range(3))


def test_two_processes_hammering_one_key_stay_within_the_documented_bound(
    engine: Engine, caller: Caller, limiters: list[RequestRateLimiter]
) -> None:
    # Given two api processes (two limiters, two connections) and one key: 200/s, burst 40
    policy = RateLimitPolicy(rate_per_second=200, burst=40)
    processes = [new_limiter(engine, policy, limiters)[0] for _ in range(2)]
    allowed = [0, 0]
    started = time.monotonic()

    def hammer(index: int) -> None:
        deadline = time.monotonic() + 1.0
        for _ in range(20_000):  # bounded in count and in time
            if time.monotonic() >= deadline:
                return
            allowed[index] += processes[index].take(caller.key_id).allowed
            time.sleep(0.0002)

    # When both take for one second at once
    threads = [threading.Thread(target=hammer, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    elapsed = time.monotonic() - started

    # Then together they admitted at most burst + rate x time + processes x max_lease
    # (the documented bound), and the bucket was really used, not refused throughout
    bound = policy.burst + policy.rate_per_second * elapsed + 2 * policy.max_lease
    assert sum(allowed) <= bound
    assert sum(allowed) >= policy.burst + policy.rate_per_second * 1.0 / 2
    assert min(allowed) > 0


def test_a_busy_key_pays_a_round_trip_per_lease_not_per_request(
    engine: Engine, caller: Caller, limiters: list[RequestRateLimiter]
) -> None:
    # Given a generous policy (the benchmark's tenant)
    limiter, buckets = new_limiter(
        engine, RateLimitPolicy(rate_per_second=100_000, burst=200_000), limiters
    )

    # When 5,000 requests arrive as fast as this process takes them
    assert all(limiter.take(caller.key_id).allowed for _ in range(5000))

    # Then PostgreSQL was asked about once per lease: a few times, not 5,000
    assert buckets.round_trips <= 50


def test_a_limiter_whose_connection_postgresql_dropped_reconnects_without_failing_a_request(
    engine: Engine, caller: Caller, limiters: list[RequestRateLimiter]
) -> None:
    # Given an api process that has leased (one token at a time)
    limiter, buckets = new_limiter(engine, RateLimitPolicy(rate_per_second=1000, burst=1), limiters)
    assert limiter.take(caller.key_id).allowed

    # When PostgreSQL ends the limiters' connections (a restart, a failover), and a token
    # is due again
    with engine.begin() as admin:
        ended = admin.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": LIMITER_APPLICATION},
        ).scalars()
        assert True in list(ended)
    time.sleep(0.05)

    # Then the next request is still answered: the lease ran again on a new connection
    assert limiter.take(caller.key_id).allowed
    assert buckets.round_trips == 3


# The daily quota


def test_quota_refuses_the_email_past_it_until_utc_midnight(engine: Engine, caller: Caller) -> None:
    # Given a tenant allowed 3 emails a day, which has scheduled 3
    set_quota(engine, caller.tenant_id, 3)
    for _ in range(3):
        schedule(engine, caller.tenant_id)

    # When it schedules a 4th
    with pytest.raises(DailyQuotaExceededError) as refused:
        schedule(engine, caller.tenant_id)

    # Then it is refused until the next UTC midnight, and nothing more is stored or counted
    assert (refused.value.limit, refused.value.used) == (3, 3)
    assert abs(refused.value.retry_after_seconds - seconds_to_utc_midnight()) <= 5
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 3
    assert used_today(engine, caller.tenant_id) == 3


def test_keyed_email_past_the_quota_is_refused_and_its_key_stays_free(
    engine: Engine, caller: Caller
) -> None:
    # Given a tenant whose quota of 1 is used
    set_quota(engine, caller.tenant_id, 1)
    schedule(engine, caller.tenant_id)

    # When it schedules with an Idempotency-Key
    with pytest.raises(DailyQuotaExceededError):
        schedule(engine, caller.tenant_id, key="campaign-7")

    # Then the key was not taken: after a raise, the same request creates the message
    set_quota(engine, caller.tenant_id, 2)
    assert schedule(engine, caller.tenant_id, key="campaign-7").created


def test_idempotent_replays_do_not_count(engine: Engine, caller: Caller) -> None:
    # Given a tenant allowed one email a day, which scheduled it with an Idempotency-Key
    set_quota(engine, caller.tenant_id, 1)
    first = schedule(engine, caller.tenant_id, key="order-42")

    # When the same request is replayed three times
    replays = [schedule(engine, caller.tenant_id, key="order-42") for _ in range(3)]

    # Then each replay answers with the first message, and the day counts one email
    assert [replay.created for replay in replays] == [False] * 3
    assert {replay.message.id for replay in replays} == {first.message.id}
    assert used_today(engine, caller.tenant_id) == 1


def test_another_tenant_is_unaffected_by_a_used_up_quota(
    engine: Engine, caller: Caller, other_caller: Caller
) -> None:
    # Given one tenant has used up its quota
    set_quota(engine, caller.tenant_id, 1)
    schedule(engine, caller.tenant_id)
    with pytest.raises(DailyQuotaExceededError):
        schedule(engine, caller.tenant_id)

    # When another tenant schedules
    created = schedule(engine, other_caller.tenant_id)

    # Then it is stored, and counted against its own quota only
    assert created.created
    assert used_today(engine, other_caller.tenant_id) == 1
    assert used_today(engine, caller.tenant_id) == 1


def test_a_rolled_back_request_gives_its_email_back(engine: Engine, caller: Caller) -> None:
    # Given a request that creates a message, then fails before its commit
    with Session(engine) as session:
        messages.create_message(
            session,
            tenant_id=caller.tenant_id,
            email=EMAIL,
            send_at=datetime.now(UTC) + timedelta(hours=1),
        )
        # When its transaction rolls back
        session.rollback()

    # Then the day counts nothing
    assert used_today(engine, caller.tenant_id) == 0


def test_a_canceled_email_still_counts(engine: Engine, caller: Caller) -> None:
    # Given a scheduled email
    created = schedule(engine, caller.tenant_id)

    # When it is canceled
    with Session(engine) as session, session.begin():
        messages.cancel_message(session, tenant_id=caller.tenant_id, message_id=created.message.id)

    # Then it still counts against the day's quota
    assert used_today(engine, caller.tenant_id) == 1


def test_concurrent_requests_of_one_tenant_never_wait_for_each_others_count(
    engine: Engine, caller: Caller
) -> None:
    # Given one request of the tenant has counted its email and not committed yet
    with two_connections_counting_in_different_slots(engine) as (first, second):
        reserve_daily_quota(first, caller.tenant_id)

        # When a second request of the same tenant counts one, allowed to wait 200 ms at most
        second.execute(text("SET LOCAL lock_timeout = '200ms'"))
        reserve_daily_quota(second, caller.tenant_id)

        # Then it did not wait for the first's commit (no lock timeout), and both count
        first.commit()
        second.commit()
    assert used_today(engine, caller.tenant_id) == 2


@contextmanager
def two_connections_counting_in_different_slots(
    engine: Engine,
) -> Iterator[tuple[Connection, Connection]]:
    """Two connections whose backends count in different slots (pid % USAGE_SLOTS), as
    two live connections almost always do (the odds of sharing one are 1 in 1,024)."""
    with ExitStack() as stack:
        opened: dict[int, Connection] = {}
        while len(opened) < 2:
            connection = stack.enter_context(engine.connect())
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            opened.setdefault(pid % USAGE_SLOTS, connection)
            connection.commit()
        first, second = opened.values()
        yield first, second


def test_a_batch_counts_all_its_emails_or_none(engine: Engine, caller: Caller) -> None:
    # Given a tenant with 5 emails a day, 3 of them used
    set_quota(engine, caller.tenant_id, 5)
    with Session(engine) as session, session.begin():
        reserve_daily_quota(session, caller.tenant_id, 3)

    # When a batch of 3 more asks
    with Session(engine) as session, session.begin(), pytest.raises(DailyQuotaExceededError):
        reserve_daily_quota(session, caller.tenant_id, 3)

    # Then none of them counted; a batch of 2 still fits
    assert used_today(engine, caller.tenant_id) == 3
    with Session(engine) as session, session.begin():
        reserve_daily_quota(session, caller.tenant_id, 2)
    assert used_today(engine, caller.tenant_id) == 5


def test_usage_older_than_a_week_is_pruned(engine: Engine, caller: Caller) -> None:
    # Given usage rows of 8 days ago, 7 days ago and today
    today = datetime.now(UTC).date()
    with Session(engine) as session, session.begin():
        for days_ago in (8, 7, 0):
            session.add(
                TenantDailyUsage(
                    tenant_id=caller.tenant_id,
                    day=today - timedelta(days=days_ago),
                    slot=0,
                    used=1,
                )
            )

    # When old usage is pruned
    with Session(engine) as session, session.begin():
        pruned = prune_usage(session)

    # Then only the row older than a week went
    with Session(engine) as session:
        days = session.scalars(select(TenantDailyUsage.day).order_by(TenantDailyUsage.day))
        assert list(days) == [today - timedelta(days=7), today]
    assert pruned == 1


def test_an_api_process_prunes_old_usage_when_it_first_leases(
    engine: Engine, caller: Caller, limiters: list[RequestRateLimiter]
) -> None:
    # Given usage rows of 30 days ago and today
    today = datetime.now(UTC).date()
    with Session(engine) as session, session.begin():
        for days_ago in (30, 0):
            day = today - timedelta(days=days_ago)
            session.add(TenantDailyUsage(tenant_id=caller.tenant_id, day=day, slot=0, used=1))

    # When an api process starts and takes its first request
    limiter, _ = new_limiter(engine, RateLimitPolicy(), limiters)
    limiter.take(caller.key_id)

    # Then the old row is gone (it prunes hourly from then on), today's is kept
    with Session(engine) as session:
        assert list(session.scalars(select(TenantDailyUsage.day))) == [today]


# Over HTTP


def test_a_post_past_the_daily_quota_is_a_429_that_says_when_it_renews(
    engine: Engine, client: TestClient, caller: Caller
) -> None:
    # Given a tenant allowed one email a day, which has scheduled it with a key
    set_quota(engine, caller.tenant_id, 1)
    keyed = {**caller.headers, "Idempotency-Key": "welcome-1"}
    assert client.post("/v1/messages", json=EMAIL_BODY, headers=keyed).status_code == 201

    # When it posts another
    refused = client.post("/v1/messages", json=EMAIL_BODY, headers=caller.headers)

    # Then the answer is a quota-exceeded problem, to retry at the next UTC midnight
    problem = assert_problem(refused, 429, "quota-exceeded")
    assert "daily quota of 1 emails is used up" in problem["detail"]
    assert abs(int(refused.headers["retry-after"]) - seconds_to_utc_midnight()) <= 5
    # And a replay of the first request is still answered as before
    replay = client.post("/v1/messages", json=EMAIL_BODY, headers=keyed)
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (200, "true")


def test_a_key_over_its_request_rate_gets_a_429_with_ratelimit_headers(
    database_settings: DatabaseSettings, caller: Caller, other_caller: Caller
) -> None:
    # Given an api whose keys may make 2 requests at once, then one every 10 s
    settings = ApiSettings(
        SENDER_EMAIL=SENDER, API_RATE_LIMIT_PER_SECOND=0.1, API_RATE_LIMIT_BURST=2
    )
    with TestClient(create_app(settings, database_settings)) as api:
        # When one key makes 3 requests at once
        answers = [api.get("/v1/messages", headers=caller.headers) for _ in range(3)]

        # Then the third is refused with when to retry, and every answer says what is left
        assert [answer.status_code for answer in answers[:2]] == [200, 200]
        assert_problem(answers[2], 429, "rate-limited")
        assert 9 <= int(answers[2].headers["retry-after"]) <= 10
        assert [answer.headers["ratelimit"] for answer in answers] == [
            '"api-key";r=1;t=10',
            '"api-key";r=0;t=20',
            f'"api-key";r=0;t={answers[2].headers["retry-after"]}',
        ]
        assert answers[0].headers["ratelimit-policy"] == '"api-key";q=2;w=20'
        # And another tenant's key is not held back
        assert api.get("/v1/messages", headers=other_caller.headers).status_code == 200


# The CLI


@pytest.fixture
def admin_env(postgres: LocalPostgres, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres.url())
    monkeypatch.setenv("DATABASE_SSLMODE", "disable")


def test_set_quota_then_list_shows_each_tenants_quota_and_todays_usage(
    admin_env: None, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two tenants, one of which scheduled an email today
    run_cli(capsys, "tenants", "create", "initech")
    run_cli(capsys, "tenants", "create", "umbrella-corporation")
    (initech,) = [q for q in quotas_of(engine) if q.name == "initech"]
    schedule(engine, initech.tenant_id)

    # When initech's quota is set
    code, out, _ = run_cli(capsys, "tenants", "set-quota", "initech", "250")

    # Then the command confirms it with today's usage
    assert (code, out) == (0, "initech: 250 emails per UTC day (1 used today)\n")

    # When the tenants are listed, as a table and as JSON lines
    _, table, _ = run_cli(capsys, "tenants", "list")
    _, lines, _ = run_cli(capsys, "tenants", "list", "--json")

    # Then the table has a header and aligned columns with the quota and today's usage
    header, *rows = table.splitlines()
    assert header.split("  ")[0] == "TENANT ID"
    assert "DAILY QUOTA" in header
    assert len(rows) == 2
    quota_column, used_column = header.index("DAILY QUOTA"), header.index("USED TODAY")
    assert [row[quota_column:].split()[0] for row in rows] == ["250", "10000"]
    assert [row[used_column:].strip() for row in rows] == ["1", "0"]
    listed = [json.loads(line) for line in lines.splitlines()]
    assert [(t["name"], t["daily_quota"], t["used_today"]) for t in listed] == [
        ("initech", 250, 1),
        ("umbrella-corporation", 10_000, 0),
    ]


@pytest.mark.parametrize("value", ["-1", "ten", "1.5", "1e3", "2147483648", ""])
def test_set_quota_refuses_anything_but_a_whole_number_of_emails(
    admin_env: None, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    # Given a tenant
    run_cli(capsys, "tenants", "create", "initech")

    # When its quota is set to something that is not a whole number of emails
    code, _, error = run_cli(capsys, "tenants", "set-quota", "initech", value)

    # Then one line says what is accepted, and the quota is unchanged
    assert (code, error) == (
        2,
        "herald: the daily quota must be a whole number of emails from 0 to 2147483647, "
        f"not {value!r}\n",
    )
    assert "10000" in run_cli(capsys, "tenants", "list")[1]


def test_set_quota_of_an_unknown_tenant_names_it(
    admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # When / Then
    code, _, error = run_cli(capsys, "tenants", "set-quota", "nosuch", "5")
    assert (code, error) == (1, "herald: no tenant 'nosuch'\n")


def quotas_of(engine: Engine) -> list[TenantQuota]:
    with Session(engine) as session:
        return quotas(session)
