"""Migration 0011 on the real PostgreSQL: ``herald_app``, the role the api, worker and CLI
log in as, changes Herald's rows and nothing else (issue 18's least-privilege access).

That every query the code runs is granted is proven by the rest of the suite, which runs
the api, worker and CLI as ``herald_app``; here, what the role must not do, the exact
grants, and the migration's life on a server where the role exists already."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ProgrammingError

from herald_local.postgres import APP_USER, EPHEMERAL_SETTINGS, LocalPostgres
from tests.support.migrations import migrate

# What each table's code does with it (ecs_service's data-access modules); a new table's
# grant must be decided here too.
EXPECTED_GRANTS = {
    "api_keys": {"SELECT", "INSERT", "UPDATE"},
    "api_rate_buckets": {"SELECT", "INSERT", "UPDATE"},
    "message_events": {"SELECT", "INSERT"},
    "message_recipients": {"SELECT", "INSERT", "UPDATE"},
    "messages": {"SELECT", "INSERT", "UPDATE", "DELETE"},
    "send_rate_buckets": {"SELECT", "INSERT", "UPDATE"},
    "suppressions": {"SELECT", "INSERT", "DELETE"},
    "tenant_daily_usage": {"SELECT", "INSERT", "UPDATE", "DELETE"},
    "tenants": {"SELECT", "INSERT", "UPDATE"},
}
GRANTS = text(
    "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
    "WHERE grantee = :role AND table_schema = 'public'"
)
SCHEMA_CHANGES = {
    "create a table": "CREATE TABLE intruder (id int)",
    "add a column": "ALTER TABLE messages ADD COLUMN intruder int",
    "drop a table": "DROP TABLE suppressions",
    "truncate a table": "TRUNCATE messages CASCADE",
    "create a function": "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "drop the notify trigger": "DROP TRIGGER messages_due_notify ON messages",
}
ALEMBIC_VERSION = {
    "read it": "SELECT version_num FROM alembic_version",
    "move it": "UPDATE alembic_version SET version_num = '0001'",
    "empty it": "DELETE FROM alembic_version",
}


def grants_of(engine: Engine, role: str = APP_USER) -> dict[str, set[str]]:
    with engine.connect() as connection:
        rows = connection.execute(GRANTS, {"role": role}).all()
    granted: dict[str, set[str]] = {}
    for table, privilege in rows:
        granted.setdefault(table, set()).add(privilege)
    return granted


def refused(engine: Engine, statement: str) -> bool:
    """Whether PostgreSQL refuses ``statement`` for lack of privilege (rolled back anyway)."""
    with engine.connect() as connection:
        try:
            connection.execute(text(statement))
        except ProgrammingError as error:
            return isinstance(error.orig, psycopg.errors.InsufficientPrivilege)
        finally:
            connection.rollback()
    return False


@pytest.fixture(scope="module")
def as_app(postgres: LocalPostgres) -> Iterator[Engine]:
    """The session's database as ``herald_app``."""
    engine = create_engine(postgres.app_url())
    yield engine
    engine.dispose()


@pytest.fixture
def second_database(postgres: LocalPostgres) -> Iterator[tuple[str, Engine]]:
    """A new database on the session's server, where ``herald_app`` exists already."""
    name = f"herald_role_{uuid4().hex[:12]}"
    postgres.ensure_database(name)
    owner = create_engine(postgres.url(name))
    yield name, owner
    owner.dispose()
    postgres.psql("postgres", f'DROP DATABASE "{name}"')


def test_the_application_role_has_exactly_the_dml_the_code_needs(
    postgres: LocalPostgres,
) -> None:
    # Given the session's database, migrated to the head by its owner
    owner = create_engine(postgres.url())

    # When herald_app's table privileges are read
    granted = grants_of(owner)
    owner.dispose()

    # Then they are the expected DML, table by table, and nothing on alembic_version
    assert granted == EXPECTED_GRANTS


@pytest.mark.parametrize("statement", SCHEMA_CHANGES.values(), ids=SCHEMA_CHANGES.keys())
def test_the_application_role_cannot_change_the_schema(as_app: Engine, statement: str) -> None:
    # Given the session's database as herald_app
    # When it tries to change the schema, Then PostgreSQL refuses
    assert refused(as_app, statement)


@pytest.mark.parametrize("statement", ALEMBIC_VERSION.values(), ids=ALEMBIC_VERSION.keys())
def test_the_application_role_cannot_touch_the_schema_revision(
    as_app: Engine, statement: str
) -> None:
    # Given the session's database as herald_app
    # When it reads or changes alembic_version, Then PostgreSQL refuses
    assert refused(as_app, statement)


def test_the_application_role_cannot_create_roles_or_databases(as_app: Engine) -> None:
    # Given the session's database as herald_app
    with as_app.connect() as connection:
        # When its role attributes are read
        attributes = connection.execute(
            text(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin "
                "FROM pg_roles WHERE rolname = current_user"
            )
        ).one()

    # Then it may log in and nothing more
    assert tuple(attributes) == (False, False, False, False, True)


def test_the_migration_grants_again_where_the_role_exists_already(
    second_database: tuple[str, Engine], postgres: LocalPostgres
) -> None:
    # Given a new database on a server where herald_app exists (the session's database)
    name, owner = second_database

    # When it is migrated to the head
    migrate(owner, "head")

    # Then herald_app gets the same grants there, and can use them
    assert grants_of(owner) == EXPECTED_GRANTS
    app = create_engine(postgres.app_url(name))
    with app.begin() as connection:
        connection.execute(text("INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 'a')"))
    app.dispose()


def test_tables_a_later_migration_creates_are_granted_to_the_application_role(
    second_database: tuple[str, Engine], postgres: LocalPostgres
) -> None:
    # Given a database at the head
    name, owner = second_database
    migrate(owner, "head")

    # When the migration user creates a table, as a later migration would
    with owner.begin() as connection:
        connection.execute(text("CREATE TABLE later_table (id bigserial PRIMARY KEY, note text)"))

    # Then herald_app may write and read its rows, its sequence included
    app = create_engine(postgres.app_url(name))
    with app.begin() as connection:
        connection.execute(text("INSERT INTO later_table (note) VALUES ('granted')"))
        assert connection.scalar(text("SELECT note FROM later_table")) == "granted"
    app.dispose()


def test_a_downgrade_revokes_everything_and_keeps_a_role_another_database_uses(
    second_database: tuple[str, Engine], postgres: LocalPostgres
) -> None:
    # Given a database at the head beside the session's, which also grants herald_app
    name, owner = second_database
    migrate(owner, "head")

    # When it is downgraded to 0010
    migrate(owner, "0010", down=True)

    # Then herald_app holds nothing there, and still logs in to the session's database
    assert grants_of(owner) == {}
    app = create_engine(postgres.app_url())
    with app.connect() as connection:
        assert connection.scalar(text("SELECT current_user")) == APP_USER
    app.dispose()


def test_a_downgrade_on_a_server_of_its_own_drops_the_role() -> None:
    # Given a server of its own (under the system's temp folder, which its account can
    # traverse), migrated to the head: herald_app exists there
    folder = Path(tempfile.mkdtemp(prefix="herald-role-"))
    server = LocalPostgres(folder / "data", settings=EPHEMERAL_SETTINGS).start()
    owner = create_engine(server.url())
    try:
        migrate(owner, "head")
        roles = text("SELECT count(*) FROM pg_roles WHERE rolname = :role")
        with owner.connect() as connection:
            assert connection.scalar(roles, {"role": APP_USER}) == 1

        # When it is downgraded to 0010
        migrate(owner, "0010", down=True)

        # Then the role is gone
        with owner.connect() as connection:
            assert connection.scalar(roles, {"role": APP_USER}) == 0
    finally:
        owner.dispose()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
