"""The service's configuration, from environment variables, validated at start-up.

The database is given in one of three ways:

- ``DATABASE_URL``: a PostgreSQL URL with its credentials;
- ``DATABASE_SECRET_ARN`` (how ECS runs it): the RDS-managed secret's ARN; the process
  reads the secret itself when it connects, and again after a rotation
  (``ecs_service.db.credentials``);
- ``DATABASE_SECRET``: the secret's JSON itself (``username``, ``password``), read once.

- ``DATABASE_AUTH=iam`` with ``DATABASE_USER`` (how the api and worker run in AWS, as
  ``herald_app``): IAM database authentication, a token signed with the task role's
  credentials for each new connection (``ecs_service.db.credentials``); no password.

The last three go with ``DATABASE_HOST``, ``DATABASE_PORT``, ``DATABASE_NAME``,
``DATABASE_SSLMODE`` and ``DATABASE_SSLROOTCERT``. Their TLS default is AWS's:
``verify-full`` against the RDS certificate bundle the image ships (``RDS_CA_BUNDLE``), so
a connection checks that the server is the instance it named. ``DATABASE_URL`` (the
local system, the tests) carries its own TLS settings, if any, in its query.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, StringConstraints, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ecs_service.db.credentials import credentials_from_secret
from shared.contracts import EmailAddress
from shared.settings import QueueUrl

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
DatabaseAuth = Literal["password", "iam"]
# Where ecs_service/Dockerfile puts the RDS global certificate bundle (every region's CAs).
RDS_CA_BUNDLE = "/etc/ssl/certs/rds-global-bundle.pem"
VERIFYING = ("verify-ca", "verify-full")
SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$")


POSTGRESQL_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
URL_SHAPE = "postgresql://USER:PASSWORD@HOST:PORT/NAME"


def _check_postgresql_url(text: str) -> None:
    """Refuse a DATABASE_URL that is not a PostgreSQL URL, without echoing its password."""
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError(f"DATABASE_URL is not a URL: expected {URL_SHAPE}") from None
    if url.drivername not in POSTGRESQL_SCHEMES:
        raise ValueError(
            f"DATABASE_URL must be a PostgreSQL URL ({URL_SHAPE}), not {url.drivername}://"
        )


class DatabaseSettings(BaseSettings):
    """Where PostgreSQL is and how many connections a process may hold."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="DATABASE_")

    url: SecretStr | None = None
    secret: SecretStr | None = None
    # Not a secret: only a role allowed to read the secret (and decrypt it) gets its value.
    secret_arn: str | None = None
    host: str | None = None
    port: int = Field(default=5432, ge=1, le=65_535)
    name: str = "herald"
    # password: DATABASE_URL or the secret; iam: DATABASE_USER logs in with IAM tokens.
    auth: DatabaseAuth = "password"
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] | None = None
    sslmode: SslMode = "verify-full"
    sslrootcert: str = RDS_CA_BUNDLE
    pool_size: int = Field(default=10, ge=1, le=100)
    max_overflow: int = Field(default=5, ge=0, le=100)
    pool_timeout_seconds: float = Field(default=5.0, gt=0)
    # A statement that runs longer than this is cancelled, so a stuck query cannot hold
    # a pooled connection (and a request) forever.
    statement_timeout_ms: int = Field(default=10_000, ge=100)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.auth == "iam":
            return self._iam_source()
        if self.user is not None:
            raise ValueError("DATABASE_USER goes with DATABASE_AUTH=iam")
        if self.url is None and self.secret is None and self.secret_arn is None:
            raise ValueError(
                "set DATABASE_URL, or DATABASE_SECRET_ARN (or DATABASE_SECRET) with DATABASE_HOST"
            )
        if self.secret_arn is not None and (self.url is not None or self.secret is not None):
            raise ValueError(
                "DATABASE_SECRET_ARN is an alternative to DATABASE_URL and DATABASE_SECRET: "
                "set only one of them"
            )
        if self.secret_arn is not None and not SECRET_ARN.match(self.secret_arn):
            raise ValueError(
                "DATABASE_SECRET_ARN must be a Secrets Manager secret's ARN "
                "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"
            )
        if self.url is None and self.host is None:
            source = "DATABASE_SECRET_ARN" if self.secret_arn is not None else "DATABASE_SECRET"
            raise ValueError(f"{source} needs DATABASE_HOST (and optionally DATABASE_PORT, _NAME)")
        if self.secret is not None:
            credentials_from_secret(self.secret.get_secret_value(), source="DATABASE_SECRET")
        if self.url is not None:
            _check_postgresql_url(self.url.get_secret_value())
        return self

    def _iam_source(self) -> Self:
        if self.url is not None or self.secret is not None or self.secret_arn is not None:
            raise ValueError(
                "DATABASE_AUTH=iam logs in with IAM tokens: set no DATABASE_URL, "
                "DATABASE_SECRET or DATABASE_SECRET_ARN"
            )
        if self.host is None or self.user is None:
            raise ValueError("DATABASE_AUTH=iam needs DATABASE_HOST and DATABASE_USER")
        return self

    @cached_property
    def sqlalchemy_url(self) -> URL:
        """The URL SQLAlchemy connects with (psycopg 3); its password is never logged.

        With ``DATABASE_SECRET_ARN`` or ``DATABASE_AUTH=iam`` it holds no user name or
        password: the engine supplies them at connect time (``ecs_service.db.credentials``).
        """
        if self.url is not None:
            url = make_url(self.url.get_secret_value())
            if url.drivername in ("postgresql", "postgres"):
                url = url.set(drivername="postgresql+psycopg")
            return url
        credentials = (
            credentials_from_secret(self.secret.get_secret_value(), source="DATABASE_SECRET")
            if self.secret is not None
            else None
        )
        return URL.create(
            "postgresql+psycopg",
            username=credentials.username if credentials else None,
            password=credentials.password if credentials else None,
            host=self.host,
            port=self.port,
            database=self.name,
            query=self.tls_query,
        )

    @property
    def tls_query(self) -> dict[str, str]:
        """libpq's TLS parameters: the mode, and the CA bundle when the server is verified."""
        if self.sslmode in VERIFYING:
            return {"sslmode": self.sslmode, "sslrootcert": self.sslrootcert}
        return {"sslmode": self.sslmode}


class ApiSettings(BaseSettings):
    """What the api needs besides the database."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    # The ASCII form SES needs (a punycode domain), like every address the api stores.
    sender_email: EmailAddress = Field(validation_alias="SENDER_EMAIL")
    port: int = Field(default=8000, ge=1, le=65_535, validation_alias="PORT")
    host: str = Field(default="0.0.0.0", validation_alias="HOST")  # noqa: S104 - inside the container
    # Seconds the api gets after SIGTERM to finish in-flight requests (ECS stopTimeout is 30).
    graceful_shutdown_seconds: int = Field(
        default=20, ge=1, le=120, validation_alias="GRACEFUL_SHUTDOWN_SECONDS"
    )
    # Processes serving the api (uvicorn workers). One by default: a Fargate api task has
    # about one vCPU. Each process has its own connection pool, so the api holds up to
    # workers x (DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW) connections to PostgreSQL.
    workers: int = Field(default=1, ge=1, le=16, validation_alias="API_WORKERS")
    cors_allowed_origins: Annotated[
        str, StringConstraints(pattern=r"^(|https?://[^,\s]+(,https?://[^,\s]+)*)$")
    ] = Field(default="", validation_alias="CORS_ALLOWED_ORIGINS")
    # Each API key's request rate (a token bucket shared by every api process): sustained
    # requests per second, and how many may come at once.
    rate_limit_per_second: float = Field(
        default=50, gt=0, le=1_000_000, validation_alias="API_RATE_LIMIT_PER_SECOND"
    )
    rate_limit_burst: int = Field(
        default=100, ge=1, le=10_000_000, validation_alias="API_RATE_LIMIT_BURST"
    )
    # Open connections (and requests) one api process accepts; past it uvicorn answers
    # 503 at once. A backstop behind the admission gate: it bounds memory (each request
    # body is read whole, up to 300,000 bytes, before routing).
    max_connections: int = Field(
        default=512, ge=1, le=100_000, validation_alias="API_MAX_CONNECTIONS"
    )

    @property
    def cors_origins(self) -> list[str]:
        return [origin for origin in self.cors_allowed_origins.split(",") if origin]


class TenantBootstrapSettings(BaseSettings):
    """What `herald tenants bootstrap` needs besides the database: the KMS key that
    encrypts the secret holding a new tenant's API key (its ARN, alias or id)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    kms_key_id: Annotated[
        str,
        StringConstraints(
            pattern=r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_-]+"
            r"|alias/[A-Za-z0-9/_-]+|[0-9a-f]{8}-[0-9a-f-]{27})$"
        ),
    ] = Field(validation_alias="TENANT_SECRET_KMS_KEY_ID")


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
    # Most tasks in flight (queued, no result yet): a backlog waits in PostgreSQL, where the
    # relay's claim is fair across tenants, not in the task queue. 50 is 2.5 x what the task
    # runner holds at once by default (TaskRunnerMaxConcurrency 2 x TaskRunnerBatchSize 10):
    # enough to keep it busy while results come back, and a newly claimed email waits
    # behind at most 50 (about 3.5 s at SES's starting 14 emails/s). Scale it with those.
    relay_max_in_flight: int = Field(
        default=50, ge=1, le=10_000, validation_alias="RELAY_MAX_IN_FLIGHT"
    )
    # A task queued longer ago than this stops counting as in flight: its result is late
    # or lost (a runner crash, the DLQ) and must not hold the budget forever. 300 s is the
    # task queue's visibility timeout: a task not finished by then is being retried.
    relay_in_flight_expiry_seconds: float = Field(
        default=300.0, ge=10, le=3_600, validation_alias="RELAY_IN_FLIGHT_EXPIRY_SECONDS"
    )
    # SES's maximum send rate, recipients per second, which every relay together keeps to
    # (docs/ses-quota.md). 0: read it from SES (GetAccount's MaxSendRate, every 5 minutes).
    ses_max_send_rate: float = Field(
        default=0, ge=0, le=1_000_000, allow_inf_nan=False, validation_alias="SES_MAX_SEND_RATE"
    )
    # Long-poll wait of the results consumer; bounded so shutdown stays prompt.
    results_wait_seconds: int = Field(
        default=10, ge=0, le=20, validation_alias="RESULTS_WAIT_SECONDS"
    )
    # SES's delivery events (issue 14); absent or empty: the feedback loop does not run.
    feedback_queue_url: QueueUrl | None = Field(default=None, validation_alias="FEEDBACK_QUEUE_URL")
    # Finished messages older than this many days are deleted (ecs_service.worker.retention);
    # 0 keeps them forever. At most 100 years: a larger interval overflows PostgreSQL's.
    message_retention_days: int = Field(
        default=0, ge=0, le=36_500, validation_alias="MESSAGE_RETENTION_DAYS"
    )
    # The pause between retention passes while nothing more is expired (a pass that
    # deleted a full batch is followed by the next one sooner, to catch up).
    message_retention_interval_seconds: float = Field(
        default=300.0, ge=1, le=86_400, validation_alias="MESSAGE_RETENTION_INTERVAL_SECONDS"
    )

    @field_validator("feedback_queue_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value
