"""`herald keys` on real PostgreSQL: keys created with an expiry, and a list that says for
each key when it was created, when it expires, when it was last used and whether the api
accepts it now."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ecs_service import api_keys
from ecs_service.cli import main
from ecs_service.db.models import ApiKey, Tenant

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from sqlalchemy.engine import Engine

    from herald_local.postgres import LocalPostgres


@pytest.fixture
def herald(
    postgres: LocalPostgres,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Herald:
    """The herald command against the session's database as herald_app (the role it has
    in AWS), with tenant initech."""
    monkeypatch.setenv("DATABASE_URL", postgres.app_url())
    monkeypatch.setenv("DATABASE_SSLMODE", "disable")
    command = Herald(capsys)
    command("tenants", "create", "initech")
    return command


class Herald:
    """Runs ``herald ARGS`` in-process: (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        printed = self._capsys.readouterr()
        return code, printed.out, printed.err

    def listed(self) -> list[dict[str, Any]]:
        code, out, _ = self("keys", "list", "--json")
        assert code == 0
        return [json.loads(line) for line in out.splitlines()]


def keys_in(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(ApiKey)) or 0


def test_a_key_created_with_an_expiry_is_listed_with_it(herald: Herald) -> None:
    # When a key is created to expire in 30 days
    before = datetime.now(UTC)
    code, out, err = herald("keys", "create", "initech", "--expires-in-days", "30")

    # Then it is printed once, and the note says when it expires
    assert code == 0
    assert out.startswith("hrld_")
    assert "expires 20" in err
    # And the list shows that expiry, 30 days from its creation
    (listed,) = herald.listed()
    expires_at = datetime.fromisoformat(listed["expires_at"])
    assert timedelta(days=30) - timedelta(seconds=2) <= expires_at - before
    assert expires_at - before <= timedelta(days=30, seconds=2)
    assert listed["state"] == "active"


def test_a_key_created_without_an_expiry_never_expires(herald: Herald) -> None:
    # When a key is created without the option
    code, _, err = herald("keys", "create", "initech")

    # Then it never expires
    assert code == 0
    assert "never expires" in err
    (listed,) = herald.listed()
    assert listed["expires_at"] is None


@pytest.mark.parametrize("days", ["0", "-3", "3651", "ten", "1.5", "", "9" * 5000])
def test_a_lifetime_that_is_not_1_to_3650_whole_days_is_refused_in_one_line(
    herald: Herald, engine: Engine, days: str
) -> None:
    # When a key is asked for with such a lifetime
    code, out, err = herald("keys", "create", "initech", "--expires-in-days", days)

    # Then the command stops with one line saying what it takes, and makes no key
    assert code == 2
    assert out == ""
    assert err == (
        "herald: a key's lifetime must be a whole number of days from 1 to 3650, "
        f"not {days!r} (leave the option out for no expiry)\n"
    )
    assert keys_in(engine) == 0


def test_the_list_shows_when_the_api_last_used_a_key(
    herald: Herald, client: TestClient, engine: Engine
) -> None:
    # Given a key the api has authenticated a request with, and one never used
    _, used_key, _ = herald("keys", "create", "initech", "--name", "used")
    herald("keys", "create", "initech", "--name", "unused")
    headers = {"Authorization": f"Bearer {used_key.strip()}"}
    assert client.get("/v1/messages", headers=headers).status_code == 200

    # When the keys are listed, as JSON and as a table
    listed = {key["name"]: key for key in herald.listed()}
    _, table, _ = herald("keys", "list")

    # Then the used one has its last use, the other none, and the table shows both
    assert listed["used"]["last_used_at"] is not None
    assert listed["unused"]["last_used_at"] is None
    header, *rows = table.splitlines()
    column = header.index("LAST USED")
    used_row, unused_row = rows
    assert used_row[column:].startswith(listed["used"]["last_used_at"])
    assert unused_row[column:].startswith("never ")


def test_the_list_says_which_keys_expired_or_were_revoked(herald: Herald, engine: Engine) -> None:
    # Given three keys: one active, one past its expiry, one revoked
    for name in ("active", "expired", "revoked"):
        herald("keys", "create", "initech", "--name", name, "--expires-in-days", "7")
    with Session(engine) as session, session.begin():
        session.execute(
            update(ApiKey)
            .where(ApiKey.name == "expired")
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
        revoked = session.scalar(select(ApiKey.key_id).where(ApiKey.name == "revoked"))
        assert revoked is not None
        api_keys.revoke_key(session, revoked)

    # When they are listed, as JSON and as a table
    listed = herald.listed()
    _, table, _ = herald("keys", "list")

    # Then each says whether the api accepts it now
    assert [(key["name"], key["state"]) for key in listed] == [
        ("active", "active"),
        ("expired", "expired"),
        ("revoked", "revoked"),
    ]
    header, *rows = table.splitlines()
    states = [row[header.index("STATE") :] for row in rows]
    assert states[:2] == ["active", "expired"]
    assert states[2].startswith("revoked 20")


def test_a_tenant_id_names_that_tenant_even_where_another_is_named_after_it(
    herald: Herald, engine: Engine
) -> None:
    # Given a tenant named after another tenant's id (made first), each with a key
    victim_id = uuid4()
    with Session(engine) as session, session.begin():
        impostor = api_keys.create_tenant(session, str(victim_id))
        victim = Tenant(id=victim_id, name="victim")
        session.add(victim)
        session.flush()
        api_keys.issue_key(session, impostor, "impostor's")
        api_keys.issue_key(session, victim, "victim's")

    # When the victim's keys are listed, and a key created, by its id
    code, out, _ = herald("keys", "list", str(victim_id), "--json")
    herald("keys", "create", str(victim_id), "--name", "new")

    # Then both act on the tenant with that id, not the one with that name
    assert code == 0
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["victim's"]
    with Session(engine) as session:
        owner = session.scalar(select(ApiKey.tenant_id).where(ApiKey.name == "new"))
    assert owner == victim_id
