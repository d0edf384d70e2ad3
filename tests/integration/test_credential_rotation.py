"""A rotated database password, on real PostgreSQL and the moto server's Secrets Manager:
running engines and the worker's LISTEN connection pick it up without a restart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from uuid import uuid4

import boto3
import psycopg
import pytest
from mypy_boto3_secretsmanager import SecretsManagerClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from ecs_service.cli import main
from ecs_service.db.engine import build_engine
from ecs_service.db.models import MESSAGES_DUE_CHANNEL
from ecs_service.settings import DatabaseSettings
from ecs_service.worker.process import DueWaiter
from herald_local.postgres import DATABASE_USER, LocalPostgres
from tests.support.waits import wait_for

ROLE = "herald_rotating"
FIRST_PASSWORD = "first-Pa55word"
SECOND_PASSWORD = "second-Pa55word"
# The session's server trusts every local login; this role alone must give its password.
PASSWORD_RULE = f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n"


@dataclass(frozen=True)
class RotatingDatabase:
    """A PostgreSQL role that logs in with a password, and the secret that holds it."""

    postgres: LocalPostgres
    admin: Engine
    secrets: SecretsManagerClient
    secret_arn: str

    def settings(self) -> DatabaseSettings:
        return DatabaseSettings(
            secret_arn=self.secret_arn,
            host="127.0.0.1",
            port=self.postgres.port,
            name=DATABASE_USER,
            sslmode="disable",
            pool_size=3,
            max_overflow=0,
        )

    def rotate(self, password: str) -> None:
        """Change the password as RDS rotation does: in PostgreSQL, then in the secret."""
        with self.admin.begin() as connection:
            connection.execute(text(f"ALTER ROLE {ROLE} PASSWORD '{password}'"))
        self.secrets.put_secret_value(SecretId=self.secret_arn, SecretString=secret(password))

    def drop_connections(self) -> int:
        """End every session of the role, as a failover or an idle timeout would."""
        with self.admin.begin() as connection:
            ended = connection.scalar(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE usename = :role"
                ),
                {"role": ROLE},
            )
        return int(ended or 0)

    def logs_in(self, password: str) -> bool:
        try:
            psycopg.connect(
                host="127.0.0.1",
                port=self.postgres.port,
                dbname=DATABASE_USER,
                user=ROLE,
                password=password,
                connect_timeout=5,
            ).close()
        except psycopg.OperationalError:
            return False
        return True


def secret(password: str) -> str:
    return json.dumps({"username": ROLE, "password": password})


@pytest.fixture
def rotating(
    postgres: LocalPostgres,
    owner_engine: Engine,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RotatingDatabase]:
    engine = owner_engine  # creating roles and reloading the server's settings is the owner's
    # boto3's own configuration leads the engine's Secrets Manager client to the moto server
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    secrets = boto3.client("secretsmanager", endpoint_url=moto_endpoint)
    arn = secrets.create_secret(
        Name=f"rds!db-{uuid4().hex[:12]}", SecretString=secret(FIRST_PASSWORD)
    )["ARN"]
    with engine.begin() as connection:
        connection.execute(text(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{FIRST_PASSWORD}'"))
        connection.execute(text(f"GRANT SELECT ON messages, alembic_version TO {ROLE}"))
    hba = postgres.pgdata / "pg_hba.conf"
    trusting = hba.read_text()
    hba.write_text(PASSWORD_RULE + trusting)
    database = RotatingDatabase(postgres, engine, secrets, arn)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_reload_conf()"))
    wait_for(lambda: not database.logs_in("wrong"), 10, "PostgreSQL to ask for the password")
    yield database
    hba.write_text(trusting)
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_reload_conf()"))
    database.drop_connections()
    with engine.begin() as connection:
        connection.execute(text(f"DROP OWNED BY {ROLE}"))
        connection.execute(text(f"DROP ROLE {ROLE}"))


def test_an_engine_connects_again_after_a_rotation_without_a_restart(
    rotating: RotatingDatabase,
) -> None:
    # Given an engine configured as ECS runs it (DATABASE_SECRET_ARN), its pool filled
    engine = build_engine(rotating.settings(), application_name="herald-rotation-test")
    try:
        connections = [engine.connect() for _ in range(3)]
        assert {c.scalar(text("SELECT current_user")) for c in connections} == {ROLE}
        for connection in connections:
            connection.close()

        # When the password is rotated and every connection of the pool is dropped
        rotating.rotate(SECOND_PASSWORD)
        assert rotating.drop_connections() == 3
        assert not rotating.logs_in(FIRST_PASSWORD)

        # Then the next queries succeed on new connections, with the new password
        connections = [engine.connect() for _ in range(3)]
        assert {c.scalar(text("SELECT current_user")) for c in connections} == {ROLE}
        for connection in connections:
            connection.close()
    finally:
        engine.dispose()


def test_the_worker_listens_again_after_a_rotation(rotating: RotatingDatabase) -> None:
    # Given the worker's waiter, listening through an engine configured by the secret's ARN
    engine = build_engine(rotating.settings(), application_name="herald-rotation-test")
    waiter = DueWaiter(engine, poll_seconds=30, stop=threading.Event())
    try:
        assert woken_by_notify(waiter, rotating.admin)

        # When the password is rotated and the LISTEN connection dropped with the others
        rotating.rotate(SECOND_PASSWORD)
        assert rotating.drop_connections() >= 1

        # Then the waiter listens again on a new connection and a NOTIFY still wakes it
        assert woken_by_notify(waiter, rotating.admin)
    finally:
        waiter.close()
        engine.dispose()


def woken_by_notify(waiter: DueWaiter, admin: Engine) -> bool:
    """Whether a NOTIFY wakes the waiter well before its 30 s poll would (it may first have
    to reconnect: NOTIFY is sent until it wakes)."""
    woke = threading.Event()

    def wait() -> None:
        waiter.wait()
        woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    deadline = time.monotonic() + 10
    while not woke.is_set() and time.monotonic() < deadline:
        with admin.begin() as connection:
            connection.execute(text(f"NOTIFY {MESSAGES_DUE_CHANNEL}"))
        woke.wait(0.2)
    woken = woke.is_set()
    thread.join(timeout=35)
    return woken


def test_herald_commands_read_the_secret_arn_from_the_environment(
    rotating: RotatingDatabase,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the environment ECS gives the migration task, after a rotation
    rotating.rotate(SECOND_PASSWORD)
    for name in ("DATABASE_URL", "DATABASE_SECRET"):
        monkeypatch.delenv(name, raising=False)
    environment = {
        "DATABASE_SECRET_ARN": rotating.secret_arn,
        "DATABASE_HOST": "127.0.0.1",
        "DATABASE_PORT": str(rotating.postgres.port),
        "DATABASE_NAME": DATABASE_USER,
        "DATABASE_SSLMODE": "disable",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    # When herald migrate runs, Then it logs in with the secret's current password
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out == "herald: database schema is up to date\n"
