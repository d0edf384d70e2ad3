"""Herald's tables: tenants, their API keys, messages (the outbox the relay drains) and
the messages' delivery feedback (recipients, events, each tenant's suppression list)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import (
    CHAR,
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.contracts import MessageStatus

# Stable constraint names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
STATUSES = ", ".join(f"'{status.value}'" for status in MessageStatus)
# A recipient's delivery state (issue 14), strongest first; see ecs_service.feedback_store.
RECIPIENT_STATES = ("complained", "bounced", "rejected", "delivered", "delayed")
SUPPRESSION_REASONS = ("bounce", "complaint")
MESSAGES_DUE_CHANNEL = "herald_messages_due"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Tenant(Base):
    """A customer of Herald; every message and key belongs to exactly one."""

    __tablename__ = "tenants"

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Emails the tenant may schedule per UTC day (issue 13); ``herald tenants set-quota``.
    daily_quota: Mapped[int] = mapped_column(
        Integer, CheckConstraint("daily_quota >= 0", name="daily_quota_not_negative"),
        server_default=text("10000"),
    )  # fmt: skip


class ApiKey(Base):
    """A bearer key of a tenant. Only its SHA-256 is stored; ``key_id`` finds it."""

    __tablename__ = "api_keys"

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    tenant_id: Mapped[UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    # The public part of the key (``hrld_<key_id>_<secret>``), looked up before the hash
    # is compared in constant time.
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None]
    # None: never expires. From this instant the key is refused (migration 0010).
    expires_at: Mapped[datetime | None]
    # When the api last read the row to authenticate a request: accurate to its key
    # cache's age bound (ecs_service.api.key_cache), at no extra round trip a request.
    last_used_at: Mapped[datetime | None]


class Message(Base):
    """One email and its life: scheduled -> queued -> sent | failed, or canceled."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(f"status IN ({STATUSES})", name="status"),
        CheckConstraint(
            "(idempotency_key IS NULL) = (request_hash IS NULL)", name="idempotency_pair"
        ),
        # Wider than the api's window (5 minutes ago to 365 days ahead), so clock skew
        # never trips it; no send_at a reader cannot load (migration 0004).
        CheckConstraint(
            "send_at BETWEEN created_at - interval '1 day' AND created_at + interval '366 days'",
            name="send_at_bounds",
        ),
        # The relay's claim: due scheduled rows in send_at order.
        Index("ix_messages_due", "send_at", postgresql_where=text("status = 'scheduled'")),
        # The relay's fair claim: each tenant's due rows in send_at order (migration 0006).
        Index(
            "ix_messages_tenant_due",
            "tenant_id",
            "send_at",
            "id",
            postgresql_include=["created_at"],
            postgresql_where=text("status = 'scheduled'"),
        ),
        # The relay's in-flight count: the few queued rows, by when (migration 0006).
        Index("ix_messages_in_flight", "queued_at", postgresql_where=text("status = 'queued'")),
        # Retention's passes: finished messages, oldest first (migration 0009).
        Index(
            "ix_messages_finished",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
        # Delivery feedback without Herald's tags finds its message by SES's id (0007).
        Index(
            "ix_messages_provider_message_id",
            "provider_message_id",
            postgresql_where=text("provider_message_id IS NOT NULL"),
        ),
        # Listing: a tenant's messages, newest first, optionally by status (keyset pages).
        Index("ix_messages_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_messages_tenant_status_created", "tenant_id", "status", "created_at", "id"),
        Index(
            "uq_messages_tenant_idempotency_key",
            "tenant_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )
    # An INSERT (or ORM UPDATE) returns the server-generated columns (created_at,
    # updated_at) with RETURNING instead of a SELECT after it.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.SCHEDULED.value)
    # The email, as the task contract's EmailPayload.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    send_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    queued_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # The creating request's trace context (Datadog propagation headers), when Datadog is
    # on: the relay sends it with the task, so the email's send joins the request's trace.
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSONB)


class TenantDailyUsage(Base):
    """Emails a tenant scheduled on one UTC day, counted by ``ecs_service.tenant_limits``.

    One row per counting connection (``slot``), so concurrent transactions of one tenant
    never wait for each other's row; the day's usage is the sum of its rows.
    """

    __tablename__ = "tenant_daily_usage"

    tenant_id: Mapped[UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(primary_key=True, index=True)
    slot: Mapped[int] = mapped_column(primary_key=True)
    used: Mapped[int] = mapped_column(CheckConstraint("used >= 0", name="used_not_negative"))


class ApiRateBucket(Base):
    """The token bucket of one API key, shared by every api process (UNLOGGED: lost in a
    crash, which only refills it). ``granted`` is the last lease's size."""

    __tablename__ = "api_rate_buckets"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    key_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("api_keys.key_id", ondelete="CASCADE"), primary_key=True
    )
    tokens: Mapped[float] = mapped_column(Double)
    granted: Mapped[int]
    refilled_at: Mapped[datetime]


class SendRateBucket(Base):
    """The SES send-rate bucket every relay takes from (``ecs_service.worker.send_rate``;
    UNLOGGED: lost in a crash, which only refills it). ``tokens`` are recipients; negative
    while an email larger than the burst is paid off. ``granted`` is the last take's size."""

    __tablename__ = "send_rate_buckets"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    tokens: Mapped[float] = mapped_column(Double)
    granted: Mapped[int]
    refilled_at: Mapped[datetime]


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class MessageRecipient(Base):
    """What SES last said of one recipient of a message (``ecs_service.feedback_store``).

    A recipient with no feedback yet has no row. ``address`` is the suppression key
    (``shared.contracts.suppression_key``); ``updated_at`` is the time of the event.
    """

    __tablename__ = "message_recipients"
    __table_args__ = (CheckConstraint(_one_of("status", RECIPIENT_STATES), name="status"),)

    message_id: Mapped[UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    address: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[UUID]
    status: Mapped[str] = mapped_column(String(16))
    bounce_type: Mapped[str | None] = mapped_column(Text)  # Permanent, Transient, Undetermined
    bounce_subtype: Mapped[str | None] = mapped_column(Text)
    diagnostic: Mapped[str | None] = mapped_column(Text)  # at most 1,000 characters
    updated_at: Mapped[datetime]


class MessageEvent(Base):
    """One SES event of a message, as applied (``ecs_service.feedback_store``).

    ``digest`` is the SHA-256 of the SES event's canonical JSON: an event delivered again
    is recognised and applied once. ``detail`` holds the event's few per-type fields.
    """

    __tablename__ = "message_events"
    __table_args__ = (Index("ix_message_events_message", "message_id", "occurred_at", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    message_id: Mapped[UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    tenant_id: Mapped[UUID]
    event_type: Mapped[str] = mapped_column(Text)
    recipient: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime]
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB)
    digest: Mapped[str] = mapped_column(CHAR(64), unique=True)


class Suppression(Base):
    """An address a tenant may no longer send to: it bounced for good or complained.

    Per tenant, because SES's own account-level list is shared by every tenant.
    ``address`` is the suppression key (``shared.contracts.suppression_key``).
    """

    __tablename__ = "suppressions"
    __table_args__ = (
        CheckConstraint(_one_of("reason", SUPPRESSION_REASONS), name="reason"),
        # The list, newest first (keyset pages).
        Index("ix_suppressions_tenant_created", "tenant_id", "created_at", "address"),
    )

    tenant_id: Mapped[UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    address: Mapped[str] = mapped_column(Text, primary_key=True)
    reason: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[UUID | None]  # the message whose feedback added it; no FK: it may go
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
