"""The stamp of a key's last use under load and clock skew, on real PostgreSQL: it never
makes one request wait for another's, is written at most once per
``api_keys.STAMP_INTERVAL_SECONDS`` however often the key's row is read, and agrees with
the api's decision to accept the key (the api's clock decides both)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, select, text

from ecs_service import api_keys
from ecs_service.api.key_cache import Authenticator, KeyCache
from ecs_service.api_keys import Principal
from ecs_service.db.models import ApiKey
from tests.support.builders import key_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from herald_local.postgres import LocalPostgres
    from tests.integration.conftest import Caller


def api(engine: Engine, wall_clock: Callable[[], datetime]) -> Authenticator:
    """An api process's authenticator whose cache is not listening (at start, or with its
    listener's connection lost): every request reads its key's row."""
    return Authenticator(KeyCache(), engine, wall_clock=wall_clock)


def key_expiring(engine: Engine, caller: Caller, expires_at: datetime) -> str:
    """A new key of the caller's tenant that expires at ``expires_at``."""
    return key_of(engine, caller.tenant_id, name="expiring", expires_at=expires_at)


def row_of(engine: Engine, key: str) -> tuple[datetime | None, str]:
    """The key's last use, and its row version (xmin: changes with every UPDATE)."""
    with engine.connect() as connection:
        last_used_at, version = connection.execute(
            select(ApiKey.last_used_at, text("xmin::text")).where(
                ApiKey.key_id == api_keys.key_id_of(key)
            )
        ).one()
    return last_used_at, version


def test_a_key_whose_row_another_request_is_stamping_is_read_without_waiting(
    engine: Engine, owner_engine: Engine, caller: Caller
) -> None:
    # Given another transaction holding the key's row, as a concurrent request's stamp
    # does until it commits (a WAL flush)
    authenticator = api(engine, lambda: datetime.now(UTC))
    pool = ThreadPoolExecutor(max_workers=1)
    holder = owner_engine.connect()
    transaction = holder.begin()
    holder.execute(
        text("SELECT 1 FROM api_keys WHERE key_id = :key_id FOR UPDATE"),
        {"key_id": caller.key_id},
    )
    try:
        # When the api reads the key
        pending = pool.submit(authenticator.from_database, caller.key)
        answered, _ = wait([pending], timeout=2.0)
    finally:
        transaction.rollback()
        holder.close()
        pool.shutdown()

    # Then it accepts it at once instead of queueing behind the other request
    assert answered
    assert pending.result() == Principal(caller.tenant_id, caller.key_id)


def test_reading_a_key_again_and_again_writes_its_row_once(engine: Engine, caller: Caller) -> None:
    # Given an api whose every request reads the key's row, which it just stamped
    now = datetime.now(UTC)
    authenticator = api(engine, lambda: now)
    assert authenticator.from_database(caller.key) is not None
    stamped = row_of(engine, caller.key)

    # When 20 more requests read it at the same time
    for _ in range(20):
        assert authenticator.from_database(caller.key) is not None

    # Then the row was not written again (its version is the first stamp's)
    assert row_of(engine, caller.key) == stamped


def test_a_read_past_the_interval_stamps_the_use_again(engine: Engine, caller: Caller) -> None:
    # Given a key an api read (and stamped) a while ago
    clock = [datetime.now(UTC)]
    authenticator = api(engine, lambda: clock[0])
    assert authenticator.from_database(caller.key) is not None

    # When it reads the key again just past the stamp interval
    clock[0] += timedelta(seconds=api_keys.STAMP_INTERVAL_SECONDS, microseconds=1)
    assert authenticator.from_database(caller.key) is not None

    # Then the use is stamped at that time
    assert row_of(engine, caller.key)[0] == clock[0]


def test_a_key_the_api_refuses_as_expired_by_its_clock_is_not_stamped_used(
    engine: Engine, caller: Caller
) -> None:
    # Given a key expiring in an hour by the database's clock, and an api process whose
    # clock is two hours ahead of it
    key = key_expiring(engine, caller, datetime.now(UTC) + timedelta(hours=1))
    authenticator = api(engine, lambda: datetime.now(UTC) + timedelta(hours=2))

    # When the key is presented with its right secret
    principal = authenticator.from_database(key)

    # Then the api refuses it, and its last use is still never
    assert principal is None
    assert row_of(engine, key)[0] is None


def test_a_key_the_api_accepts_by_its_clock_is_stamped_at_that_time(
    engine: Engine, caller: Caller
) -> None:
    # Given a key that expired an hour ago by the database's clock, and an api process
    # whose clock is two hours behind it
    key = key_expiring(engine, caller, datetime.now(UTC) - timedelta(hours=1))
    api_now = datetime.now(UTC) - timedelta(hours=2)
    authenticator = api(engine, lambda: api_now)

    # When the key is presented with its right secret
    principal = authenticator.from_database(key)

    # Then the api accepts it, and records the use at the time it decided by
    assert principal is not None
    assert row_of(engine, key)[0] == api_now


def test_a_key_that_expires_while_its_read_waits_for_a_connection_is_refused(
    postgres: LocalPostgres, caller: Caller, engine: Engine
) -> None:
    # Given an api whose one pooled connection is busy for a second, and a key that
    # expires half a second from now
    key = key_expiring(engine, caller, datetime.now(UTC) + timedelta(seconds=0.5))
    busy_pool = create_engine(postgres.app_url(), pool_size=1, max_overflow=0)
    authenticator = api(busy_pool, lambda: datetime.now(UTC))
    pool = ThreadPoolExecutor(max_workers=1)
    busy = busy_pool.connect()
    try:
        # When the key is presented then, its read waiting for the connection
        pending = pool.submit(authenticator.from_database, key)
        time.sleep(1.0)
        busy.close()
        principal = pending.result(timeout=10)
    finally:
        pool.shutdown()
        busy_pool.dispose()

    # Then the api refuses it: it decides by the time it reads the key, not when it asked
    assert principal is None
    assert row_of(engine, key)[0] is None
