"""The herald command's errors and help: one line naming the cause and the variable."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

import pytest

from herald_local.postgres import free_port
from tests.conftest import require_tool
from tests.integration.conftest import REPO_ROOT
from tests.support.cli import help_of, run_cli

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from herald_local.postgres import LocalPostgres


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://herald:secret-pw@db.example.org/herald",
            "herald: invalid configuration: DATABASE_URL must be a PostgreSQL URL "
            "(postgresql://USER:PASSWORD@HOST:PORT/NAME), not mysql://",
        ),
        (
            "notaurl",
            "herald: invalid configuration: DATABASE_URL is not a URL: "
            "expected postgresql://USER:PASSWORD@HOST:PORT/NAME",
        ),
    ],
)
def test_a_database_url_that_is_not_postgresql_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, message: str
) -> None:
    # Given a DATABASE_URL of another database, or no URL at all
    monkeypatch.setenv("DATABASE_URL", url)

    # When an admin command starts
    code, _, error = run_cli(capsys, "tenants", "list")

    # Then it stops with one line that names the variable and never shows the password
    assert (code, error) == (1, message)
    assert "secret-pw" not in error


def test_an_unreachable_database_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a DATABASE_URL where nothing listens
    port = free_port()
    monkeypatch.setenv("DATABASE_URL", f"postgresql://herald:pw@127.0.0.1:{port}/herald")
    monkeypatch.setenv("DATABASE_SSLMODE", "disable")

    # When the migrations run
    code, _, error = run_cli(capsys, "migrate")

    # Then one line says which setting and why, not a traceback
    assert code == 1
    assert error.startswith("herald: cannot use the database set by DATABASE_URL")
    assert f"port {port} failed: Connection refused" in error
    assert "\n" not in error


def test_keys_list_prints_an_aligned_table_and_json_lines(
    postgres: LocalPostgres,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given two keys of a tenant
    monkeypatch.setenv("DATABASE_URL", postgres.url())
    monkeypatch.setenv("DATABASE_SSLMODE", "disable")
    run_cli(capsys, "tenants", "create", "initech")
    run_cli(capsys, "keys", "create", "initech", "--name", "billing")
    run_cli(capsys, "keys", "create", "initech", "--name", "marketing-site")

    # When they are listed, as a table and as JSON
    _, table, _ = run_cli(capsys, "keys", "list")
    _, lines, _ = run_cli(capsys, "keys", "list", "--json")

    # Then the table has a header and every column starts at the same place
    header, *rows = table.splitlines()
    assert header.startswith("KEY ID")
    assert len(rows) == 2
    column = header.index("TENANT")
    assert all(row[column:].startswith("initech ") for row in rows)
    # And the JSON lines carry the same keys, never a secret
    keys = [json.loads(line) for line in lines.splitlines()]
    assert [key["name"] for key in keys] == ["billing", "marketing-site"]
    assert all(key["revoked_at"] is None for key in keys)
    assert "hrld_" not in lines


def test_api_help_lists_its_environment_variables_with_defaults() -> None:
    # Given / When
    shown = help_of("api")

    # Then the variables it reads are there, with their defaults
    assert "SENDER_EMAIL" in shown
    assert "DATABASE_URL" in shown
    assert "API_WORKERS                        default 1" in shown


def test_herald_local_names_a_bad_port_and_its_flag() -> None:
    # Given / When
    run = subprocess.run(
        [require_tool("herald-local"), "run", "--api-port", "abc"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )

    # Then
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "herald-local run: error: argument --api-port: 'abc' is not a TCP port (1-65535)"
    )
