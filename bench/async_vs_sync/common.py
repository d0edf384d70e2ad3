"""What the sync and async apps share: the table, the request and response models, the pool.

The table mirrors Herald's messages table: a uuid primary key, the tenant, a status, the
send time, the email as jsonb, a server-side creation time and an index on
``(tenant_id, created_at, id)``.
"""

import os
import uuid
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field
from sqlalchemy import DateTime, Index, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DATABASE_URL_VARIABLE = "HERALD_BENCH_DATABASE_URL"
# The same pool for both apps: 10 connections kept, up to 10 more under load.
POOL_SIZE = 10
MAX_OVERFLOW = 10
POOL_TIMEOUT_SECONDS = 30.0


def database_url() -> str:
    """The SQLAlchemy URL (``postgresql+psycopg://...``) the orchestrator passes in."""
    return os.environ[DATABASE_URL_VARIABLE]


class Base(DeclarativeBase):
    pass


class Item(Base):
    """One scheduled email, like a row of Herald's messages table."""

    __tablename__ = "items"
    __table_args__ = (Index("items_tenant_created_id", "tenant_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID]
    status: Mapped[str] = mapped_column(Text)
    send_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # Filled in by the server and read back in the INSERT's RETURNING (no second query).
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ItemIn(BaseModel):
    """The body of ``POST /items``: an email to send later (about 500 bytes of JSON)."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: uuid.UUID
    send_at: AwareDatetime
    sender: EmailStr
    to: list[EmailStr] = Field(min_length=1, max_length=50)
    subject: str = Field(min_length=1, max_length=998)
    text: str = Field(min_length=1, max_length=100_000)


class ItemOut(BaseModel):
    """A stored item, as both endpoints return it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    tenant_id: uuid.UUID
    status: str
    send_at: datetime
    payload: dict[str, Any]
    created_at: datetime


def new_item(body: ItemIn) -> Item:
    """The row for a validated ``POST /items`` body (no I/O)."""
    email = body.model_dump(mode="json", include={"sender", "to", "subject", "text"})
    return Item(
        id=uuid.uuid4(),
        tenant_id=body.tenant_id,
        status="scheduled",
        send_at=body.send_at,
        payload=email,
    )
