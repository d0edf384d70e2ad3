"""Migration 0010 on real PostgreSQL: api keys gain their expiry and last use, as the models
declare them, and existing keys keep working (never expire, never used)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError

from ecs_service.cli import main
from ecs_service.db.models import Base
from tests.support.migrations import database_at, migrate

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from herald_local.postgres import LocalPostgres

NEW_COLUMNS = {"expires_at", "last_used_at"}
# How long 0010 waits for its lock on api_keys.
LOCK_TIMEOUT_SECONDS = 5


def api_key_columns(engine: Engine) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns("api_keys")}


@pytest.fixture
def database_at_0009(postgres: LocalPostgres) -> Iterator[Engine]:
    """A new database on the session's server, migrated to the revision before 0010, with
    one tenant and one key."""
    with database_at(postgres, "0009") as engine:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "WITH tenant AS (INSERT INTO tenants (id, name)"
                    " VALUES (gen_random_uuid(), 'a') RETURNING id)"
                    " INSERT INTO api_keys (id, tenant_id, key_id, key_hash, name)"
                    " SELECT gen_random_uuid(), id, 'AbCdEfGhJkMn', repeat('0', 64), 'old'"
                    " FROM tenant"
                )
            )
        yield engine


def test_the_columns_match_the_models_and_an_existing_key_never_expires(
    database_at_0009: Engine,
) -> None:
    # When the database is migrated to 0010
    migrate(database_at_0009, "0010")

    # Then api_keys matches the model exactly (other revisions' tables are not this test's)
    with database_at_0009.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        existing = connection.execute(text("SELECT expires_at, last_used_at FROM api_keys")).one()
    assert [difference for difference in differences if "api_keys" in repr(difference)] == []
    assert api_key_columns(database_at_0009) >= NEW_COLUMNS
    # And the key made before it never expires and was never used
    assert tuple(existing) == (None, None)


def test_the_downgrade_drops_the_columns(database_at_0009: Engine) -> None:
    # Given the database at 0010
    migrate(database_at_0009, "0010")

    # When it is downgraded to 0009
    migrate(database_at_0009, "0009", down=True)

    # Then the columns are gone and the key is still there
    assert not api_key_columns(database_at_0009) & NEW_COLUMNS
    with database_at_0009.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM api_keys")) == 1


def test_the_upgrade_gives_up_instead_of_queueing_the_api_behind_a_long_transaction(
    database_at_0009: Engine,
) -> None:
    # Given a transaction that read api_keys and stays open (a psql session, say): adding
    # the columns must wait for it, and every api read of a key would queue behind the
    # waiting ALTER TABLE
    holder = database_at_0009.connect()
    transaction = holder.begin()
    holder.execute(text("SELECT count(*) FROM api_keys"))
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        # When the database is migrated to 0010
        pending = pool.submit(migrate, database_at_0009, "0010")
        finished, _ = wait([pending], timeout=LOCK_TIMEOUT_SECONDS + 10)
    finally:
        transaction.rollback()
        holder.close()
        pool.shutdown()

    # Then the migration stops on its lock timeout (to be run again) instead of waiting
    assert finished
    with pytest.raises(OperationalError, match="lock timeout"):
        pending.result()
    assert not api_key_columns(database_at_0009) & NEW_COLUMNS


def test_herald_migrate_says_a_lock_timeout_is_a_lock_to_wait_for(
    database_at_0009: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given herald migrate's database at 0009, with a transaction holding api_keys
    monkeypatch.setenv("DATABASE_URL", database_at_0009.url.render_as_string(False))
    monkeypatch.setenv("DATABASE_SSLMODE", "disable")
    holder = database_at_0009.connect()
    transaction = holder.begin()
    holder.execute(text("SELECT count(*) FROM api_keys"))
    try:
        # When herald migrate runs
        with pytest.raises(SystemExit) as stopped:
            main(["migrate"])
    finally:
        transaction.rollback()
        holder.close()

    # Then it stops with one line that says to run it again, not that the database is
    # unreachable
    message = str(stopped.value)
    assert message.startswith("herald: the migration waited too long for a table lock")
    assert "run herald migrate again" in message
    assert "\n" not in message
