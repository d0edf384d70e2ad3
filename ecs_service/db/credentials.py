"""Database credentials read from Secrets Manager at connect time, so rotation needs no restart.

RDS rotates its managed master-user secret every 7 days. A password read once when a task
starts (ECS's ``secrets:`` injection) goes stale then, and every new connection the running
task opens — pool growth, ``pool_pre_ping`` replacing a dropped connection, the worker's
LISTEN reconnect — is refused until the task is replaced. Here the engine asks for the
credentials each time it connects: they are read from the secret once and kept, and when
PostgreSQL refuses the password the secret is read again and that connection retried once.

With IAM database authentication (``DATABASE_AUTH=iam``, how the api and worker log in as
``herald_app`` in AWS) there is no password at all: each new connection signs a fresh
token with the task role's credentials (``RdsIamCredentials``). A token is valid for 15
minutes and only for opening a connection; signing it is local (SigV4, no request to AWS).

``supply_credentials_on_connect`` hooks a ``CredentialsSource`` into an engine;
``SecretsManagerCredentials`` is the source for ``DATABASE_SECRET_ARN``,
``RdsIamCredentials`` the one for ``DATABASE_AUTH=iam``. Nothing here logs or shows a
password or a token.

The secret is not read through Powertools' parameters utility: its cache expires on a
timer, while this one is read again only when PostgreSQL refuses the password, one thread
reading for all.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import event

from shared.errors import TransientError
from shared.observability import logger

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mypy_boto3_secretsmanager import SecretsManagerClient
    from sqlalchemy.engine import Dialect, Engine
    from sqlalchemy.engine.interfaces import DBAPIConnection

INVALID_PASSWORD = "28P01"


@dataclass(frozen=True)
class DatabaseCredentials:
    """A PostgreSQL user and its password; the password never shows in a repr."""

    username: str
    password: str = field(repr=False)


class CredentialsUnavailableError(TransientError):
    """The secret could not be read, or it holds no user name and password."""


class CredentialsSource(Protocol):
    """Where an engine gets the credentials it connects with."""

    def current(self) -> DatabaseCredentials:
        """The credentials to connect with now."""
        ...

    def refresh(self, refused: DatabaseCredentials) -> DatabaseCredentials:
        """Credentials to retry with after PostgreSQL refused ``refused``."""
        ...


def credentials_from_secret(raw: str, *, source: str) -> DatabaseCredentials:
    """Parse an RDS secret's JSON (``username``, ``password``); ``source`` names it in errors.

    Raises
    ------
    ValueError
        The text is not a JSON object with a non-empty ``username`` and ``password``.
    """
    try:
        parsed: Any = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not JSON") from error
    if not isinstance(parsed, dict):
        raise ValueError(f"{source} must be a JSON object")
    if not parsed.get("username") or not parsed.get("password"):
        raise ValueError(f"{source} must be JSON with 'username' and 'password'")
    return DatabaseCredentials(str(parsed["username"]), str(parsed["password"]))


class SecretsManagerCredentials:
    """The credentials in a Secrets Manager secret: read on first use, kept, re-read on refusal.

    Thread-safe: when many connections are refused at once after a rotation, the first
    caller reads the secret and the others get what it read.

    Parameters
    ----------
    secret_arn
        The RDS-managed secret (``DATABASE_SECRET_ARN``).
    client
        A Secrets Manager client; its endpoint and credentials are boto3's own configuration.
    """

    def __init__(self, secret_arn: str, client: SecretsManagerClient) -> None:
        self._secret_arn = secret_arn
        self._client = client
        self._lock = threading.Lock()
        self._cached: DatabaseCredentials | None = None

    def current(self) -> DatabaseCredentials:
        with self._lock:
            if self._cached is None:
                self._cached = self._read()
            return self._cached

    def refresh(self, refused: DatabaseCredentials) -> DatabaseCredentials:
        with self._lock:
            if self._cached is None or self._cached == refused:
                self._cached = self._read()
                logger.info(
                    "database password refused: read the secret again",
                    extra={"secret_arn": self._secret_arn, "changed": self._cached != refused},
                )
            return self._cached

    def _read(self) -> DatabaseCredentials:
        try:
            response = self._client.get_secret_value(SecretId=self._secret_arn)
        except (ClientError, BotoCoreError) as error:
            raise CredentialsUnavailableError(
                f"cannot read the database secret {self._secret_arn}: {error}"
            ) from error
        try:
            return credentials_from_secret(
                response.get("SecretString", ""), source=f"the secret {self._secret_arn}"
            )
        except ValueError as error:
            raise CredentialsUnavailableError(str(error)) from error


class AuthTokenSigner(Protocol):
    """What ``RdsIamCredentials`` needs of boto3's RDS client."""

    def generate_db_auth_token(
        self, DBHostname: str, Port: int, DBUsername: str, Region: str | None = None
    ) -> str: ...


class RdsIamCredentials:
    """A new IAM authentication token for every connection (``rds-db:connect``).

    A token is signed locally with the credentials boto3 finds (the ECS task role's), for
    this host, port and user, in the client's region; it expires 15 minutes later, so it
    is never kept: ``current`` signs one each time a connection is opened.

    Parameters
    ----------
    host, port
        The instance's endpoint, as the connection names it (the token is bound to it).
    user
        The PostgreSQL role granted ``rds_iam`` (``DATABASE_USER``: ``herald_app``).
    client
        boto3's RDS client; only ``generate_db_auth_token`` is used.
    """

    def __init__(self, host: str, port: int, user: str, client: AuthTokenSigner) -> None:
        self._host = host
        self._port = port
        self._user = user
        self._client = client

    def current(self) -> DatabaseCredentials:
        try:
            token = self._client.generate_db_auth_token(
                DBHostname=self._host, Port=self._port, DBUsername=self._user
            )
        except (ClientError, BotoCoreError) as error:
            raise CredentialsUnavailableError(
                f"cannot sign an IAM database authentication token for {self._user}: {error}"
            ) from error
        return DatabaseCredentials(self._user, token)

    def refresh(self, refused: DatabaseCredentials) -> DatabaseCredentials:
        # Not called for RDS's refusal of a token ("PAM authentication failed", not a
        # refused password): a fresh token cannot mend a missing grant or policy.
        return self.current()


def refused_the_password(error: psycopg.Error) -> bool:
    """Whether PostgreSQL refused the password (SQLSTATE 28P01).

    psycopg raises a plain ``OperationalError`` without a SQLSTATE when a connection cannot
    be made (libpq keeps only the server's message), so there the message is the signal.
    """
    return (
        isinstance(error, psycopg.errors.InvalidPassword)
        or error.sqlstate == INVALID_PASSWORD
        or "password authentication failed" in str(error)
    )


def connect_with_credentials(
    dialect: Dialect,
    cargs: Sequence[Any],
    cparams: Mapping[str, Any],
    credentials: CredentialsSource,
) -> DBAPIConnection:
    """Open one DBAPI connection with ``credentials``; retry once if the password is refused.

    A credentials source that cannot answer becomes a psycopg ``OperationalError``, so that
    every caller sees what it is: a connection that could not be made (the api answers 503,
    the worker backs off and tries again).
    """
    try:
        used = credentials.current()
        try:
            return dialect.connect(*cargs, **_with(cparams, used))
        except psycopg.OperationalError as error:
            if not refused_the_password(error):
                raise
        return dialect.connect(*cargs, **_with(cparams, credentials.refresh(used)))
    except CredentialsUnavailableError as error:
        raise psycopg.OperationalError(str(error)) from error


def supply_credentials_on_connect(engine: Engine, credentials: CredentialsSource) -> None:
    """Make every new connection of ``engine`` log in with ``credentials``.

    Its URL then carries no user name or password; the pool, ``pool_pre_ping`` and
    ``Engine.raw_connection`` all connect through this hook.
    """

    @event.listens_for(engine, "do_connect")
    def _connect(
        dialect: Dialect, _record: object, cargs: list[Any], cparams: dict[str, Any]
    ) -> DBAPIConnection:
        return connect_with_credentials(dialect, cargs, cparams, credentials)


def _with(cparams: Mapping[str, Any], credentials: DatabaseCredentials) -> dict[str, Any]:
    # A copy: SQLAlchemy hands every connect the same dict, which must never hold a password.
    return {**cparams, "user": credentials.username, "password": credentials.password}
