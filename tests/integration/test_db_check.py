"""`herald db check`, the restore drill's check, on the real PostgreSQL: a schema at the
image's head passes with each table's rows counted; one behind it fails, naming both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from ecs_service.cli import main
from ecs_service.db.schema_check import head_revision
from tests.support.builders import insert_messages
from tests.support.migrations import database_at

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from herald_local.postgres import LocalPostgres
    from tests.integration.conftest import Caller


def db_check(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, object], str]:
    """Run `herald db check` against `url`; return its exit code, JSON line and stderr."""
    monkeypatch.setenv("DATABASE_URL", url)
    code = main(["db", "check"])
    printed = capsys.readouterr()
    return code, json.loads(printed.out), printed.err


@pytest.fixture
def database_at_0008(postgres: LocalPostgres) -> Iterator[str]:
    """A new database on the session's server, one revision behind the head."""
    with database_at(postgres, "0008") as engine:
        yield engine.url.render_as_string(hide_password=False)


def test_a_schema_at_the_head_passes_with_every_tables_rows_counted(
    postgres: LocalPostgres,
    engine: Engine,
    caller: Caller,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the session's database at the head, holding a tenant, its key and 3 messages
    insert_messages(engine, caller.tenant_id, 3)

    # When it is checked
    code, report, _ = db_check(postgres.url(), monkeypatch, capsys)

    # Then it passes, and the line names the revision and counts each table's rows
    assert code == 0
    assert report["check"] == "herald-db-check"
    assert report["revision"] == report["head"] == head_revision()
    rows = report["rows"]
    assert isinstance(rows, dict)
    assert (rows["tenants"], rows["api_keys"], rows["messages"]) == (1, 1, 3)
    assert "alembic_version" not in rows


def test_a_schema_behind_the_head_fails_naming_both_revisions(
    database_at_0008: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a database one migration behind this image

    # When it is checked
    code, report, error = db_check(database_at_0008, monkeypatch, capsys)

    # Then it fails, and says where the schema is and where the image is
    assert code == 1
    assert (report["revision"], report["current"]) == ("0008", False)
    assert error == (
        f"herald: the schema is at revision 0008, not this image's {head_revision()}\n"
    )


@pytest.mark.parametrize("command", [["db", "check"], ["migrate"]])
def test_the_application_role_is_told_in_one_line_to_run_as_the_schema_owner(
    command: list[str], postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the CLI logs in as herald_app, which may change rows but not read the schema
    monkeypatch.setenv("DATABASE_URL", postgres.app_url())

    # When an operator runs a schema command with it
    with pytest.raises(SystemExit) as refused:
        main(command)

    # Then one line says why and who may, not a traceback
    message = str(refused.value.code)
    assert message.startswith(f"herald: herald {' '.join(command)} runs as the schema's owner")
    assert "\n" not in message
