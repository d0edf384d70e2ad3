"""Tenants and their API keys: creation, revocation, and checking a presented key.

A key reads ``hrld_<key_id>_<secret>``. Only the SHA-256 of the whole key is stored
(the key has 256 bits of randomness, so a plain hash is enough — no slow KDF needed);
the public ``key_id`` finds the row, and the hashes are compared in constant time.
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

from sqlalchemy import select, update

from ecs_service.db.models import ApiKey, Tenant

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

KEY_PREFIX = "hrld"
KEY_PATTERN = re.compile(r"^hrld_(?P<key_id>[A-Za-z0-9]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")


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


def authenticate(session: Session, presented: str) -> UUID | None:
    """The tenant id of an active key, or None — in the same time whatever is wrong."""
    match = KEY_PATTERN.match(presented)
    key = (
        session.scalar(
            select(ApiKey).where(ApiKey.key_id == match["key_id"], ApiKey.revoked_at.is_(None))
        )
        if match
        else None
    )
    # Compare even when nothing was found, so timing does not tell which part was wrong.
    expected = key.key_hash if key is not None else hash_key("")
    if hmac.compare_digest(expected, hash_key(presented)) and key is not None:
        return key.tenant_id
    return None
