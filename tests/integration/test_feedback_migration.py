"""Migration 0007 (delivery feedback) on the real PostgreSQL: existing rows stay valid, the
new statuses and tables arrive, and a downgrade takes them away again."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from ecs_service.db.models import Base
from herald_local.postgres import LocalPostgres
from tests.support.builders import insert_raw_message as insert_message
from tests.support.migrations import database_at, migrate

FEEDBACK_TABLES = {"message_recipients", "message_events", "suppressions"}
OURS = {*FEEDBACK_TABLES, "ix_messages_provider_message_id"}
SEND_AT = "2026-06-01 12:00:00+00"


@pytest.fixture
def database_at_0006(postgres: LocalPostgres) -> Iterator[Engine]:
    """A new database on the session's server, migrated to the revision before 0007."""
    with database_at(postgres, "0006") as engine:
        yield engine


def status_of(engine: Engine, message_id: UUID) -> str:
    with engine.connect() as connection:
        status: str = connection.execute(
            text("SELECT status FROM messages WHERE id = :id"), {"id": message_id}
        ).scalar_one()
    return status


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


@pytest.mark.parametrize("status", ["scheduled", "queued", "sent", "failed", "canceled"])
def test_existing_rows_of_every_status_stay_valid(database_at_0006: Engine, status: str) -> None:
    # Given a message of each status written before 0007
    message_id = insert_message(database_at_0006, status=status, send_at=SEND_AT)

    # When the database is migrated (the widened CHECK is validated against every row)
    migrate(database_at_0006, "0007")

    # Then the row is as it was
    assert status_of(database_at_0006, message_id) == status


def test_0007_takes_the_summary_statuses_and_still_refuses_others(
    database_at_0006: Engine,
) -> None:
    # Given the database at 0007
    migrate(database_at_0006, "0007")

    # When messages of the new statuses are written, Then they are stored
    for status in ("delivered", "bounced", "complained"):
        message_id = insert_message(database_at_0006, status=status, send_at=SEND_AT)
        assert status_of(database_at_0006, message_id) == status

    # and a status no one defined is still refused
    with pytest.raises(IntegrityError, match="ck_messages_status"):
        insert_message(database_at_0006, status="opened", send_at=SEND_AT)


def test_0007_creates_the_schema_the_models_describe(database_at_0006: Engine) -> None:
    # Given the database at 0007
    migrate(database_at_0006, "0007")

    # When the models are compared with it
    with database_at_0006.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)

    # Then the feedback tables and the provider-id index match the models exactly (other
    # revisions' tables may differ: they are not this test's)
    ours = [
        difference
        for difference in differences
        if any(f"'{name}'" in repr(difference) for name in OURS)
    ]
    assert tables(database_at_0006) >= FEEDBACK_TABLES
    assert ours == []


def test_downgrade_returns_summarised_messages_to_sent_and_drops_the_tables(
    database_at_0006: Engine,
) -> None:
    # Given a database at 0007 with a delivered message, its feedback and a suppression
    migrate(database_at_0006, "0007")
    message_id = insert_message(database_at_0006, status="delivered", send_at=SEND_AT)
    with database_at_0006.begin() as connection:
        tenant_id = connection.execute(
            text("SELECT tenant_id FROM messages WHERE id = :id"), {"id": message_id}
        ).scalar_one()
        connection.execute(
            text(
                "INSERT INTO message_recipients (message_id, address, tenant_id, status, "
                "updated_at) VALUES (:m, 'reader@example.org', :t, 'delivered', now())"
            ),
            {"m": message_id, "t": tenant_id},
        )
        connection.execute(
            text(
                "INSERT INTO suppressions (tenant_id, address, reason) "
                "VALUES (:t, 'gone@example.org', 'bounce')"
            ),
            {"t": tenant_id},
        )

    # When the database is downgraded to 0006
    migrate(database_at_0006, "0006", down=True)

    # Then the message is sent again (the old CHECK holds), the feedback tables are gone,
    # and the new statuses are refused
    assert status_of(database_at_0006, message_id) == "sent"
    assert not tables(database_at_0006) & FEEDBACK_TABLES
    with pytest.raises(IntegrityError, match="ck_messages_status"):
        insert_message(database_at_0006, status="delivered", send_at=SEND_AT)


def test_upgrade_after_a_downgrade_restores_0007(database_at_0006: Engine) -> None:
    # Given a database migrated to 0007, then back to 0006
    migrate(database_at_0006, "0007")
    migrate(database_at_0006, "0006", down=True)

    # When it is upgraded again
    migrate(database_at_0006, "0007")

    # Then the feedback tables and statuses are back
    assert tables(database_at_0006) >= FEEDBACK_TABLES
    message_id = insert_message(database_at_0006, status="complained", send_at=SEND_AT)
    assert status_of(database_at_0006, message_id) == "complained"
