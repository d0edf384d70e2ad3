"""Tenants and their API keys: creation, revocation, and checking a presented key.

A key reads ``hrld_<key_id>_<secret>``. Only the SHA-256 of the whole key is stored
(the key has 256 bits of randomness, so a plain hash is enough — no slow KDF needed);
the public ``key_id`` finds the row, and the hashes are compared in constant time.

Revoking a key notifies ``REVOKED_CHANNEL`` (PostgreSQL NOTIFY, delivered at commit), so
the api processes, which keep known keys in memory for a short while
(``ecs_service.api.key_cache``), forget it at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

from sqlalchemy import func, select, update

from ecs_service.db.models import ApiKey, Tenant

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

KEY_PREFIX = "hrld"
KEY_PATTERN = re.compile(r"^hrld_(?P<key_id>[A-Za-z0-9]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
# NOTIFY channel of revocations; the payload is the revoked key's public key_id.
REVOKED_CHANNEL = "herald_api_key_revoked"


class TenantExistsError(ValueError):
    """A tenant of that name exists already."""


class NotFoundError(LookupError):
    """No tenant or key matches."""


@dataclass(frozen=True)
class IssuedKey:
    """A new key: ``plaintext`` is shown once and never stored."""

    id: UUID
    tenant_id: UUID
    key_id: str
    plaintext: str


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the tenant, and the public id of the key it presented."""

    tenant_id: UUID
    key_id: str


@dataclass(frozen=True)
class StoredKey:
    """What checking a presented key needs of its row (an active key)."""

    key_id: str
    key_hash: str
    tenant_id: UUID


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_tenant(session: Session, name: str) -> Tenant:
    """Create a tenant named ``name`` (unique)."""
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise TenantExistsError(f"a tenant named {name!r} exists already")
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def find_tenant(session: Session, name_or_id: str) -> Tenant:
    """The tenant with this name, or this id."""
    condition = Tenant.name == name_or_id
    with contextlib.suppress(ValueError):
        condition = condition | (Tenant.id == UUID(name_or_id))
    tenant = session.scalar(select(Tenant).where(condition))
    if tenant is None:
        raise NotFoundError(f"no tenant {name_or_id!r}")
    return tenant


def issue_key(session: Session, tenant: Tenant, name: str) -> IssuedKey:
    """Create a key for ``tenant``; the plaintext is returned once."""
    key_id = "".join(
        secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789")
        for _ in range(12)
    )
    plaintext = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(tenant_id=tenant.id, key_id=key_id, key_hash=hash_key(plaintext), name=name)
    session.add(key)
    session.flush()
    return IssuedKey(id=key.id, tenant_id=tenant.id, key_id=key_id, plaintext=plaintext)


def revoke_key(session: Session, key_id: str) -> None:
    """Revoke the key whose public id is ``key_id``; it stops working at once."""
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFoundError(f"no active key {key_id!r}")
    # Delivered when the transaction commits (not at all if it rolls back).
    session.execute(select(func.pg_notify(REVOKED_CHANNEL, key_id)))


def key_id_of(presented: str) -> str | None:
    """The public key id of a well-formed key, or None."""
    match = KEY_PATTERN.match(presented)
    return match["key_id"] if match else None


def find_active_key(connection: Connection | Session, key_id: str) -> StoredKey | None:
    """The active key with this public id, or None (unknown or revoked)."""
    row = connection.execute(
        select(ApiKey.key_hash, ApiKey.tenant_id).where(
            ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None)
        )
    ).one_or_none()
    return StoredKey(key_id, row.key_hash, row.tenant_id) if row is not None else None


def check_key(stored: StoredKey | None, presented: str) -> Principal | None:
    """The principal of ``presented`` if it is the stored key, or None — in the same time
    whatever is wrong."""
    # Compare even when nothing was found, so timing does not tell which part was wrong.
    expected = stored.key_hash if stored is not None else hash_key("")
    if hmac.compare_digest(expected, hash_key(presented)) and stored is not None:
        return Principal(tenant_id=stored.tenant_id, key_id=stored.key_id)
    return None
