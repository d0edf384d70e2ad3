"""Migration 0004 on the real PostgreSQL: rows out of send_at's bounds are repaired, then
the database refuses them for good (issue 13: one BC send_at halted every relay pass)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from herald_local.postgres import LocalPostgres
from tests.support.builders import insert_raw_message as insert_message
from tests.support.migrations import database_at, migrate


@pytest.fixture
def database_at_0003(postgres: LocalPostgres) -> Iterator[Engine]:
    """A new database on the session's server, migrated to the revision before 0004."""
    with database_at(postgres, "0003") as engine:
        yield engine


def read_message(engine: Engine, message_id: UUID) -> dict[str, Any]:
    """The row as the api and the relay load it (psycopg fails on a BC timestamp)."""
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT status, send_at, created_at, finished_at, error "
                "FROM messages WHERE id = :id"
            ),
            {"id": message_id},
        ).one()
    return dict(row._mapping)  # noqa: SLF001 - SQLAlchemy's public mapping view of a row


@pytest.mark.parametrize(
    "send_at",
    [
        "0001-01-01 00:00:00+14",  # the reproduction: a BC time in UTC
        "1970-01-01 00:00:00+00",
        "2027-06-03 12:00:00+00",  # 367 days after creation
    ],
    ids=["bc", "1970", "over-a-year"],
)
def test_scheduled_row_out_of_bounds_fails_with_a_reason_and_a_send_at_readers_can_load(
    database_at_0003: Engine, send_at: str
) -> None:
    # Given a scheduled row whose send_at is out of the bounds, written before 0004
    message_id = insert_message(database_at_0003, status="scheduled", send_at=send_at)

    # When the database is migrated
    migrate(database_at_0003, "0004")

    # Then the row failed, says why, and its send_at is its created_at (loadable)
    row = read_message(database_at_0003, message_id)
    assert row["status"] == "failed"
    assert "send_at was outside the accepted range" in row["error"]
    assert row["send_at"] == row["created_at"]
    assert row["finished_at"] is not None


@pytest.mark.parametrize("status", ["queued", "sent", "failed", "canceled"])
def test_finished_or_queued_row_out_of_bounds_keeps_its_status_and_gets_a_loadable_send_at(
    database_at_0003: Engine, status: str
) -> None:
    # Given a row past the scheduled state, with a BC send_at
    message_id = insert_message(database_at_0003, status=status, send_at="0001-01-01 00:00:00+14")

    # When the database is migrated
    migrate(database_at_0003, "0004")

    # Then it keeps its status (a queued row still takes its result) and loads
    row = read_message(database_at_0003, message_id)
    assert row["status"] == status
    assert row["send_at"] == row["created_at"]


@pytest.mark.parametrize(
    "send_at",
    ["2026-05-31 12:00:00+00", "2026-06-01 12:00:00+00", "2027-06-02 12:00:00+00"],
    ids=["one-day-before", "at-creation", "366-days-after"],
)
def test_scheduled_row_within_bounds_is_untouched(database_at_0003: Engine, send_at: str) -> None:
    # Given a scheduled row at the edge of the bounds, or inside them
    message_id = insert_message(database_at_0003, status="scheduled", send_at=send_at)

    # When the database is migrated
    migrate(database_at_0003, "0004")

    # Then it is still scheduled for the time it was given
    row = read_message(database_at_0003, message_id)
    assert row["status"] == "scheduled"
    assert row["error"] is None
    assert row["send_at"] == datetime.fromisoformat(send_at)


def test_downgrade_drops_the_bound_and_upgrade_restores_it(database_at_0003: Engine) -> None:
    # Given a database migrated through 0004, then back to 0003
    migrate(database_at_0003, "0004")
    migrate(database_at_0003, "0003", down=True)

    # When a row out of bounds is written, Then 0003 takes it as it always did
    message_id = insert_message(
        database_at_0003, status="scheduled", send_at="1970-01-01 00:00:00+00"
    )

    # and upgrading again repairs it and refuses the next one
    migrate(database_at_0003, "0004")
    assert read_message(database_at_0003, message_id)["status"] == "failed"
    with pytest.raises(IntegrityError, match="ck_messages_send_at_bounds"):
        insert_message(database_at_0003, status="scheduled", send_at="1970-01-01 00:00:00+00")
