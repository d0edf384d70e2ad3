"""The service's configuration, from environment variables, validated at start-up.

The database is given either as ``DATABASE_URL``, or as ECS injects an RDS-managed
secret: ``DATABASE_SECRET`` (the secret's JSON, with ``username`` and ``password``)
plus ``DATABASE_HOST``, ``DATABASE_PORT``, ``DATABASE_NAME`` and ``DATABASE_SSLMODE``.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Annotated, Literal, Self

from pydantic import EmailStr, Field, SecretStr, StringConstraints, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from shared.settings import QueueUrl

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class DatabaseSettings(BaseSettings):
    """Where PostgreSQL is and how many connections a process may hold."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="DATABASE_")

    url: SecretStr | None = None
    secret: SecretStr | None = None
    host: str | None = None
    port: int = Field(default=5432, ge=1, le=65_535)
    name: str = "herald"
    sslmode: SslMode = "require"
    pool_size: int = Field(default=10, ge=1, le=100)
    max_overflow: int = Field(default=5, ge=0, le=100)
    pool_timeout_seconds: float = Field(default=5.0, gt=0)
    # A statement that runs longer than this is cancelled, so a stuck query cannot hold
    # a pooled connection (and a request) forever.
    statement_timeout_ms: int = Field(default=10_000, ge=100)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.url is None and self.secret is None:
            raise ValueError("set DATABASE_URL, or DATABASE_SECRET with DATABASE_HOST")
        if self.url is None and self.host is None:
            raise ValueError(
                "DATABASE_SECRET needs DATABASE_HOST (and optionally DATABASE_PORT, _NAME)"
            )
        if self.secret is not None:
            parsed = _parse_secret(self.secret.get_secret_value())
            if not parsed.get("username") or not parsed.get("password"):
                raise ValueError("DATABASE_SECRET must be JSON with 'username' and 'password'")
        return self

    @cached_property
    def sqlalchemy_url(self) -> URL:
        """The URL SQLAlchemy connects with (psycopg 3); its password is never logged."""
        if self.url is not None:
            url = make_url(self.url.get_secret_value())
            if url.drivername in ("postgresql", "postgres"):
                url = url.set(drivername="postgresql+psycopg")
            return url
        assert self.secret is not None  # checked by _one_source
        secret = _parse_secret(self.secret.get_secret_value())
        return URL.create(
            "postgresql+psycopg",
            username=str(secret["username"]),
            password=str(secret["password"]),
            host=self.host,
            port=self.port,
            database=self.name,
            query={"sslmode": self.sslmode},
        )


def _parse_secret(raw: str) -> dict[str, object]:
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError("DATABASE_SECRET is not JSON") from error
    if not isinstance(parsed, dict):
        raise ValueError("DATABASE_SECRET must be a JSON object")
    return parsed


class ApiSettings(BaseSettings):
    """What the api needs besides the database."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    sender_email: EmailStr = Field(validation_alias="SENDER_EMAIL")
    port: int = Field(default=8000, ge=1, le=65_535, validation_alias="PORT")
    host: str = Field(default="0.0.0.0", validation_alias="HOST")  # noqa: S104 - inside the container
    # Seconds the api gets after SIGTERM to finish in-flight requests (ECS stopTimeout is 30).
    graceful_shutdown_seconds: int = Field(
        default=20, ge=1, le=120, validation_alias="GRACEFUL_SHUTDOWN_SECONDS"
    )
    cors_allowed_origins: Annotated[
        str, StringConstraints(pattern=r"^(|https?://[^,\s]+(,https?://[^,\s]+)*)$")
    ] = Field(default="", validation_alias="CORS_ALLOWED_ORIGINS")

    @property
    def cors_origins(self) -> list[str]:
        return [origin for origin in self.cors_allowed_origins.split(",") if origin]


class WorkerSettings(BaseSettings):
    """What the worker needs besides the database: its queues and its pacing."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    task_queue_url: QueueUrl = Field(validation_alias="TASK_QUEUE_URL")
    result_queue_url: QueueUrl = Field(validation_alias="RESULT_QUEUE_URL")
    # Rows claimed per relay transaction; sent to SQS in batches of 10.
    relay_claim_size: int = Field(default=50, ge=1, le=500, validation_alias="RELAY_CLAIM_SIZE")
    # The longest the relay sleeps when nothing is due and no NOTIFY arrives.
    relay_poll_seconds: float = Field(
        default=5.0, gt=0, le=60, validation_alias="RELAY_POLL_SECONDS"
    )
    relay_max_backoff_seconds: float = Field(
        default=30.0, gt=0, validation_alias="RELAY_MAX_BACKOFF_SECONDS"
    )
    # Long-poll wait of the results consumer; bounded so shutdown stays prompt.
    results_wait_seconds: int = Field(
        default=10, ge=0, le=20, validation_alias="RESULTS_WAIT_SECONDS"
    )
