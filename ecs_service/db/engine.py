"""The SQLAlchemy engine and sessions of one process, sized by ``DatabaseSettings``."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import boto3
from botocore.config import Config
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from ecs_service.db.credentials import (
    RdsIamCredentials,
    SecretsManagerCredentials,
    supply_credentials_on_connect,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ecs_service.db.credentials import AuthTokenSigner, CredentialsSource
    from ecs_service.settings import DatabaseSettings

# A new connection waits for the secret, so reading it must fail in seconds, not minutes.
SECRETS_MANAGER_CONFIG = Config(
    connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
)


# Without pre-ping, no pooled connection is older than this (a failover's stale ones, idle
# timeouts of anything between the api and the database).
POOL_RECYCLE_SECONDS = 1800


def build_engine(
    settings: DatabaseSettings,
    *,
    application_name: str,
    credentials: CredentialsSource | None = None,
    pooled: bool = True,
    pre_ping: bool = True,
) -> Engine:
    """An engine whose pool is sized by settings; connections are checked before use.

    With ``DATABASE_SECRET_ARN`` every new connection logs in with the credentials of that
    secret, read through boto3 (its own configuration: region, ``AWS_ENDPOINT_URL``); with
    ``DATABASE_AUTH=iam`` as ``DATABASE_USER`` with a new IAM token; unless ``credentials``
    are given.

    ``pooled=False``: no pool, for a process's one long-lived connection (a LISTEN): each
    connection is opened for its user and closed with it.

    ``pre_ping=False`` (the api): no ``SELECT 1`` round trip before each checkout. A pooled
    connection the database dropped then fails the one statement that finds it: SQLAlchemy
    reports a disconnect (``connection_invalidated``, which the api answers as a 503 to
    retry) and invalidates the whole pool, so every other connection older than that moment
    is replaced at its next checkout instead of failing in turn; TCP keepalives find a peer
    that vanished silently, and ``POOL_RECYCLE_SECONDS`` bounds any connection's age. The
    worker keeps the ping: its loops must not drop a batch on a stale connection.
    """
    connect_args: dict[str, object] = {
        "application_name": application_name,
        "connect_timeout": 5,
        "options": f"-c statement_timeout={settings.statement_timeout_ms}",
        # TCP keepalives on every connection: one that sits idle (the api's revocation
        # listener, the rate limiter's connection, a LISTEN) notices within ~25 s a peer
        # that went away without a reset (a failover), instead of trusting it for hours.
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    if pooled:
        engine = create_engine(
            settings.sqlalchemy_url,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout_seconds,
            # A connection the database dropped (restart, failover) is replaced, not handed
            # out; without the ping, the first statement on it finds out (see above).
            pool_pre_ping=pre_ping,
            pool_recycle=-1 if pre_ping else POOL_RECYCLE_SECONDS,
            connect_args=connect_args,
        )
    else:
        engine = create_engine(
            settings.sqlalchemy_url, poolclass=NullPool, connect_args=connect_args
        )
    if credentials is None:
        credentials = credentials_of(settings)
    if credentials is not None:
        supply_credentials_on_connect(engine, credentials)
    return engine


def build_sessions(engine: Engine) -> sessionmaker[Session]:
    """The session factory: objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def credentials_of(settings: DatabaseSettings) -> CredentialsSource | None:
    """Where the settings' connections get their credentials at connect time; None: from
    the URL itself."""
    if settings.auth == "iam" and settings.host is not None and settings.user is not None:
        signer = cast("AuthTokenSigner", boto3.client("rds"))
        return RdsIamCredentials(settings.host, settings.port, settings.user, signer)
    if settings.secret_arn is not None:
        return SecretsManagerCredentials(
            settings.secret_arn, boto3.client("secretsmanager", config=SECRETS_MANAGER_CONFIG)
        )
    return None
