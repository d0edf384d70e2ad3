"""Database credentials from Secrets Manager (moto), and the connect hook that retries a
refused password once with fresh ones."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import psycopg
import pytest
from moto import mock_aws
from mypy_boto3_secretsmanager import SecretsManagerClient

from ecs_service.db.credentials import (
    CredentialsUnavailableError,
    DatabaseCredentials,
    RdsIamCredentials,
    SecretsManagerCredentials,
    connect_with_credentials,
)
from shared.observability import logger

FIRST = DatabaseCredentials("herald", "first-p@ss")
SECOND = DatabaseCredentials("herald", "second-p@ss")
REFUSED = (
    'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
    'FATAL:  password authentication failed for user "herald"'
)


def secret_json(credentials: DatabaseCredentials) -> str:
    return json.dumps(
        {"username": credentials.username, "password": credentials.password, "engine": "postgres"}
    )


class CountingClient:
    """The moto client, counting the secret reads."""

    def __init__(self, client: SecretsManagerClient) -> None:
        self.client = client
        self.reads = 0

    def get_secret_value(self, **kwargs: Any) -> Any:
        self.reads += 1
        return self.client.get_secret_value(**kwargs)


@pytest.fixture
def secrets() -> Iterator[SecretsManagerClient]:
    with mock_aws():
        yield boto3.client("secretsmanager")


@pytest.fixture
def secret_arn(secrets: SecretsManagerClient) -> str:
    return secrets.create_secret(Name="rds!db-herald", SecretString=secret_json(FIRST))["ARN"]


@pytest.fixture
def counting(secrets: SecretsManagerClient) -> CountingClient:
    return CountingClient(secrets)


def source(arn: str, client: CountingClient) -> SecretsManagerCredentials:
    return SecretsManagerCredentials(arn, client)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the secret


def test_secret_is_read_once_and_kept(secret_arn: str, counting: CountingClient) -> None:
    # Given credentials from the secret
    credentials = source(secret_arn, counting)

    # When they are asked for many times
    answers = {credentials.current() for _ in range(5)}

    # Then the secret was read once
    assert answers == {FIRST}
    assert counting.reads == 1


def test_a_rotation_is_seen_only_after_a_refusal(
    secrets: SecretsManagerClient, secret_arn: str, counting: CountingClient
) -> None:
    # Given credentials read before the secret is rotated
    credentials = source(secret_arn, counting)
    assert credentials.current() == FIRST
    secrets.put_secret_value(SecretId=secret_arn, SecretString=secret_json(SECOND))

    # Then the kept ones are used until PostgreSQL refuses them
    assert credentials.current() == FIRST
    # When it does, Then the new version is read and kept
    assert credentials.refresh(FIRST) == SECOND
    assert credentials.current() == SECOND
    assert counting.reads == 2


def test_many_refusals_of_the_same_password_read_the_secret_once(
    secrets: SecretsManagerClient, secret_arn: str, counting: CountingClient
) -> None:
    # Given a rotation that refuses every connection of the pool at once
    credentials = source(secret_arn, counting)
    credentials.current()
    secrets.put_secret_value(SecretId=secret_arn, SecretString=secret_json(SECOND))

    # When each of them asks for fresh credentials
    answers = {credentials.refresh(FIRST) for _ in range(10)}

    # Then the first read the secret, the others got what it read
    assert answers == {SECOND}
    assert counting.reads == 2


def test_refresh_logs_that_it_happened_but_never_the_password(
    secrets: SecretsManagerClient,
    secret_arn: str,
    counting: CountingClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a rotated secret
    credentials = source(secret_arn, counting)
    credentials.current()
    secrets.put_secret_value(SecretId=secret_arn, SecretString=secret_json(SECOND))

    # When the refused credentials are refreshed
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        credentials.refresh(FIRST)

    # Then one line says so, with the secret's ARN and no password
    [record] = [record for record in caplog.records if record.name == logger.name]
    logged = f"{record.getMessage()} {vars(record)}"
    assert "read the secret again" in logged
    assert secret_arn in logged
    assert FIRST.password not in logged
    assert SECOND.password not in logged


def test_a_missing_secret_is_reported_as_unavailable_credentials(
    secrets: SecretsManagerClient,
) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-secret-AbCdEf"
    credentials = SecretsManagerCredentials(arn, secrets)

    with pytest.raises(CredentialsUnavailableError, match="cannot read the database secret"):
        credentials.current()


@pytest.mark.parametrize(
    ("secret_string", "message"),
    [
        ("not json", "is not JSON"),
        ('["herald"]', "must be a JSON object"),
        ('{"username": "herald"}', "'username' and 'password'"),
    ],
)
def test_a_secret_without_user_and_password_is_reported_by_its_arn(
    secrets: SecretsManagerClient, secret_string: str, message: str
) -> None:
    arn = secrets.create_secret(Name="not-rds", SecretString=secret_string)["ARN"]

    with pytest.raises(CredentialsUnavailableError, match=message) as raised:
        SecretsManagerCredentials(arn, secrets).current()

    assert arn in str(raised.value)


def test_credentials_never_show_their_password() -> None:
    assert FIRST.password not in repr(FIRST)
    assert FIRST.password not in str(FIRST)


# ------------------------------------------------------------ IAM authentication

RDS_HOST = "herald.abc.us-east-1.rds.amazonaws.com"


class CountingSigner:
    """boto3's RDS client (its real SigV4 signer), counting the tokens it signs."""

    def __init__(self) -> None:
        # A session of its own: the default one keeps the credentials it found first.
        self.client = boto3.session.Session().client("rds", region_name="us-east-1")
        self.signed = 0

    def generate_db_auth_token(
        self, DBHostname: str, Port: int, DBUsername: str, Region: str | None = None
    ) -> str:
        self.signed += 1
        token: str = self.client.generate_db_auth_token(
            DBHostname=DBHostname, Port=Port, DBUsername=DBUsername, Region=Region
        )
        return token


def test_an_iam_token_is_signed_for_the_instance_the_user_and_the_region() -> None:
    # Given IAM authentication as herald_app, with the task role's credentials
    credentials = RdsIamCredentials(RDS_HOST, 5432, "herald_app", CountingSigner())

    # When a connection asks for its credentials
    current = credentials.current()

    # Then the user is herald_app and the password a connect token for this endpoint,
    # signed for rds-db in the region, valid 15 minutes
    token = urlsplit(f"https://{current.password}")
    query = parse_qs(token.query)
    assert current.username == "herald_app"
    assert (token.hostname, token.port) == (RDS_HOST, 5432)
    assert query["Action"] == ["connect"]
    assert query["DBUser"] == ["herald_app"]
    assert query["X-Amz-Credential"][0].endswith("/us-east-1/rds-db/aws4_request")
    assert query["X-Amz-Expires"] == ["900"]
    assert len(query["X-Amz-Signature"][0]) == 64


def test_each_new_connection_logs_in_with_a_token_signed_for_it() -> None:
    # Given IAM authentication, and a database that accepts any token
    signer = CountingSigner()
    credentials = RdsIamCredentials(RDS_HOST, 5432, "herald_app", signer)

    # When the engine opens two connections
    for _ in range(2):
        connect_with_credentials(AnyPassword(), [], CPARAMS, credentials)  # type: ignore[arg-type]

    # Then each signed its own token: none is kept past its 15 minutes
    assert signer.signed == 2


def test_no_aws_credentials_is_a_token_that_cannot_be_signed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # Given a process without AWS credentials (no task role, no keys, no profile)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    credentials = RdsIamCredentials(RDS_HOST, 5432, "herald_app", CountingSigner())

    # When a connection asks for its credentials, Then it is told why there are none
    with pytest.raises(CredentialsUnavailableError, match="cannot sign an IAM database"):
        credentials.current()


# ---------------------------------------------------------------- the connect hook


class FakeCredentials:
    """Hands out ``first`` until refreshed, then ``fresh``."""

    def __init__(self, first: DatabaseCredentials, fresh: DatabaseCredentials) -> None:
        self.first, self.fresh = first, fresh
        self.refreshed: list[DatabaseCredentials] = []

    def current(self) -> DatabaseCredentials:
        return self.fresh if self.refreshed else self.first

    def refresh(self, refused: DatabaseCredentials) -> DatabaseCredentials:
        self.refreshed.append(refused)
        return self.fresh


class UnavailableCredentials(FakeCredentials):
    def current(self) -> DatabaseCredentials:
        raise CredentialsUnavailableError("cannot read the database secret arn:…: throttled")


class FakeDialect:
    """Records each connect; accepts only ``password``, or fails with ``error``."""

    def __init__(self, password: str, error: str = REFUSED) -> None:
        self.password = password
        self.error = error
        self.attempts: list[dict[str, Any]] = []

    def connect(self, *_: Any, **cparams: Any) -> str:
        self.attempts.append(cparams)
        if cparams["password"] != self.password:
            raise psycopg.OperationalError(self.error)
        return f"connection as {cparams['user']}"


CPARAMS = {"host": "db", "dbname": "herald", "sslmode": "require"}


class AnyPassword(FakeDialect):
    """Accepts every password (a token it cannot check)."""

    def __init__(self) -> None:
        super().__init__("")

    def connect(self, *_: Any, **cparams: Any) -> str:
        self.attempts.append(cparams)
        return f"connection as {cparams['user']}"


def connect(dialect: FakeDialect, credentials: FakeCredentials) -> Any:
    return connect_with_credentials(dialect, [], CPARAMS, credentials)  # type: ignore[arg-type]


def test_a_connection_logs_in_with_the_current_credentials() -> None:
    # Given a database that accepts the current password
    dialect, credentials = FakeDialect(FIRST.password), FakeCredentials(FIRST, SECOND)

    # When the engine connects
    connection = connect(dialect, credentials)

    # Then it logged in at once, and the engine's own parameters never held the password
    assert connection == "connection as herald"
    assert dialect.attempts == [CPARAMS | {"user": "herald", "password": FIRST.password}]
    assert credentials.refreshed == []
    assert "password" not in CPARAMS


def test_a_refused_password_is_refreshed_and_the_connection_retried_once() -> None:
    # Given a database whose password was rotated since the credentials were read
    dialect, credentials = FakeDialect(SECOND.password), FakeCredentials(FIRST, SECOND)

    # When the engine connects
    connection = connect(dialect, credentials)

    # Then the refused credentials were refreshed and the retry logged in
    assert connection == "connection as herald"
    assert credentials.refreshed == [FIRST]
    assert [attempt["password"] for attempt in dialect.attempts] == [
        FIRST.password,
        SECOND.password,
    ]


def test_a_password_refused_again_after_the_refresh_fails_the_connection() -> None:
    dialect = FakeDialect("neither")
    credentials = FakeCredentials(FIRST, SECOND)

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(dialect, credentials)

    assert len(dialect.attempts) == 2
    assert credentials.refreshed == [FIRST]


def test_other_connection_failures_do_not_read_the_secret_again() -> None:
    unreachable = 'connection failed: connection to server at "10.0.0.5" failed: timeout expired'
    dialect = FakeDialect("neither", error=unreachable)
    credentials = FakeCredentials(FIRST, SECOND)

    with pytest.raises(psycopg.OperationalError, match="timeout expired"):
        connect(dialect, credentials)

    assert len(dialect.attempts) == 1
    assert credentials.refreshed == []


def test_unavailable_credentials_are_a_connection_that_could_not_be_made() -> None:
    # Given a secret that cannot be read (throttled, no permission, endpoint unreachable)
    dialect = FakeDialect(FIRST.password)

    # When the engine connects, Then it fails as a failed connection does (SQLAlchemy turns
    # that into OperationalError: the api answers 503, the worker backs off)
    with pytest.raises(psycopg.OperationalError, match="throttled") as raised:
        connect(dialect, UnavailableCredentials(FIRST, SECOND))

    assert isinstance(raised.value.__cause__, CredentialsUnavailableError)
    assert dialect.attempts == []
