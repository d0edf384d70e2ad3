"""``herald suppressions``: a tenant's suppression list from the shell."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.support.cli import help_of, run_cli
from tests.support.feedback import suppress

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from sqlalchemy.engine import Engine

    from herald_local.postgres import LocalPostgres
    from tests.integration.conftest import Caller

BOB, CY = "bob@example.org", "cy@example.org"


@pytest.fixture
def admin_env(postgres: LocalPostgres, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres.url())
    monkeypatch.setenv("DATABASE_SSLMODE", "disable")


def test_list_prints_a_tenants_suppressions_as_a_table_and_as_json_lines(
    admin_env: None,
    client: TestClient,
    engine: Engine,
    caller: Caller,
    other_caller: Caller,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a bounced and a complaining address of one tenant, and one of another tenant
    bounce_message = suppress(client, engine, caller, BOB)
    suppress(client, engine, caller, CY, reason="complaint")
    suppress(client, engine, other_caller, "someone@example.org")
    capsys.readouterr()  # the api's metrics lines

    # When the first tenant's list is printed, as a table and as JSON
    code, table, _ = run_cli(capsys, "suppressions", "list", "--tenant", "acme")
    _, lines, _ = run_cli(capsys, "suppressions", "list", "--tenant", "acme", "--json")

    # Then the table has a header and its two addresses, newest first, in aligned columns
    assert code == 0
    header, *rows = table.splitlines()
    assert header.split() == ["ADDRESS", "REASON", "SINCE", "MESSAGE", "ID", "DETAIL"]
    assert [row.split()[0] for row in rows] == [CY, BOB]
    column = header.index("REASON")
    assert [row[column:].split()[0] for row in rows] == ["complaint", "bounce"]
    # And the JSON lines carry every field
    first, second = (json.loads(line) for line in lines.splitlines())
    assert first["address"] == CY
    assert second == {
        "address": BOB,
        "reason": "bounce",
        "message_id": str(bounce_message),
        "detail": "smtp; 550 5.1.1 user unknown",
        "created_at": second["created_at"],
    }


def test_list_of_a_tenant_with_none_prints_the_header_only(
    admin_env: None, caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    code, table, _ = run_cli(capsys, "suppressions", "list", "--tenant", "acme")
    assert (code, len(table.splitlines())) == (0, 1)


def test_remove_takes_an_address_off_whatever_its_case(
    admin_env: None,
    client: TestClient,
    engine: Engine,
    caller: Caller,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a suppressed address
    suppress(client, engine, caller, BOB)
    capsys.readouterr()  # the api's metrics lines

    # When it is removed, written in another case
    code, out, _ = run_cli(capsys, "suppressions", "remove", "--tenant", "acme", "Bob@Example.org")

    # Then it says so, and the list is empty
    assert (code, out) == (0, f"removed {BOB} from acme's suppression list\n")
    assert run_cli(capsys, "suppressions", "list", "--tenant", "acme", "--json")[1] == ""


def test_remove_of_an_address_not_on_the_list_is_one_line(
    admin_env: None, caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, error = run_cli(capsys, "suppressions", "remove", "--tenant", "acme", BOB)
    assert (code, error) == (1, f"herald: {BOB} is not on acme's suppression list\n")


def test_remove_of_something_that_is_not_an_address_is_one_line(
    admin_env: None, caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, error = run_cli(capsys, "suppressions", "remove", "--tenant", "acme", "bob")
    assert code == 2
    assert error.startswith("herald: 'bob' is not an email address: ")
    assert error.count("\n") == 1


def test_an_unknown_tenant_is_one_line(admin_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, error = run_cli(capsys, "suppressions", "list", "--tenant", "nosuch")
    assert code == 1
    assert error.startswith("herald: ")
    assert "nosuch" in error
    assert error.count("\n") == 1


def test_suppressions_help_says_what_the_list_is() -> None:
    # Given / When
    shown = help_of("suppressions")

    # Then it names both commands and why an address is listed
    assert "list" in shown
    assert "remove" in shown
    assert "permanent bounce" in shown
