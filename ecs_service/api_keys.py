"""Tenants and their API keys: creation, revocation, and checking a presented key.

A key reads ``hrld_<key_id>_<secret>``. Only the SHA-256 of the whole key is stored
(the key has 256 bits of randomness, so a plain hash is enough — no slow KDF needed);
the public ``key_id`` finds the row, and the hashes are compared in constant time.

Revoking a key notifies ``REVOKED_CHANNEL`` (PostgreSQL NOTIFY, delivered at commit), so
the api processes, which keep known keys in memory for a short while
(``ecs_service.api.key_cache``), forget it at once.

A key may expire (``expires_at``, from ``herald keys create --expires-in-days``): from
that instant it is refused exactly as an unknown or revoked key is. The expiry travels
with the row into the api's cache and is checked on every request, so a cached key stops
working on time, not up to a cache age later.

``last_used_at`` is stamped by the statement that reads the row to authenticate a
request (``find_key_recording_use``), not by a statement of its own: a key the api has
cached is used without touching the database, so the time is accurate to the cache's
age bound (``key_cache.CACHE_TTL_SECONDS``, 60 s) per api process, at no extra round
trip. Only a presentation the api accepts (the right secret, of a key not expired by the
api's clock, which also gives the time stamped) stamps it; never more than once in
``STAMP_INTERVAL_SECONDS``, and never by waiting for another request's stamp.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from sqlalchemy import func, select, text, update

from ecs_service.db.models import ApiKey, Tenant

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

KEY_PREFIX = "hrld"
KEY_PATTERN = re.compile(r"^hrld_(?P<key_id>[A-Za-z0-9]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
# NOTIFY channel of revocations; the payload is the revoked key's public key_id.
REVOKED_CHANNEL = "herald_api_key_revoked"
# The longest lifetime ``herald keys create --expires-in-days`` gives a key (ten years);
# a key that should outlive it is created without an expiry.
MAX_KEY_LIFETIME_DAYS = 3650

# A key's last use is written at most once this often, however often its row is read (at
# start, or while the api's revocation listener is disconnected, every request reads it).
STAMP_INTERVAL_SECONDS = 5

# One statement, one round trip: read the unrevoked key, and stamp its use when the
# presented key is it (hashes compared: comparing SHA-256 digests leaks nothing useful
# about a 256-bit key) and it has not expired, both at the api's :now (the clock that
# accepts or refuses the key). The stamp skips a row another request is writing (SKIP
# LOCKED: a stamp holds the row through its commit's WAL flush, and concurrent readers of
# one key would queue behind each other) and one stamped less than STAMP_INTERVAL_SECONDS
# ago (checked on the row's newest version). A data-modifying CTE runs whether or not the
# outer query reads it.
FIND_KEY_RECORDING_USE = text(
    """
    WITH found AS (
        SELECT id, key_hash, tenant_id, expires_at FROM api_keys
        WHERE key_id = :key_id AND revoked_at IS NULL
    ), used AS (
        UPDATE api_keys SET last_used_at = :now
        WHERE id = (
            SELECT api_keys.id FROM api_keys JOIN found ON found.id = api_keys.id
            WHERE found.key_hash = :presented_hash
              AND (found.expires_at IS NULL OR found.expires_at > :now)
              AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at <= :stamped_before)
            FOR UPDATE OF api_keys SKIP LOCKED
        )
    )
    SELECT key_hash, tenant_id, expires_at FROM found
    """
)


class TenantExistsError(ValueError):
    """A tenant of that name exists already."""


class NotFoundError(LookupError):
    """No tenant or key matches."""


class InvalidExpiryError(ValueError):
    """A key's lifetime is not a whole number of days from 1 to ``MAX_KEY_LIFETIME_DAYS``."""


@dataclass(frozen=True)
class IssuedKey:
    """A new key: ``plaintext`` is shown once and never stored."""

    id: UUID
    tenant_id: UUID
    key_id: str
    plaintext: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the tenant, and the public id of the key it presented."""

    tenant_id: UUID
    key_id: str


@dataclass(frozen=True)
class StoredKey:
    """What checking a presented key needs of its row (an unrevoked key, maybe expired)."""

    key_id: str
    key_hash: str
    tenant_id: UUID
    expires_at: datetime | None = None  # None: never expires

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


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
    """The tenant with this id, else the one with this name (an id never means a tenant
    that another is merely named after)."""
    tenant = None
    with contextlib.suppress(ValueError):
        tenant = session.get(Tenant, UUID(name_or_id))
    if tenant is None:
        tenant = session.scalar(select(Tenant).where(Tenant.name == name_or_id))
    if tenant is None:
        raise NotFoundError(f"no tenant {name_or_id!r}")
    return tenant


def expiry_in_days(days: str, now: datetime) -> datetime:
    """The instant a key created at ``now`` expires, ``days`` (a whole number from 1 to
    ``MAX_KEY_LIFETIME_DAYS``, as typed) after it.

    Raises
    ------
    InvalidExpiryError
        ``days`` is not such a number; the message says what is.
    """
    # The length first: int() refuses strings of more than 4,300 digits with a ValueError.
    digits = days.lstrip("0")
    whole = days.isascii() and days.isdigit() and len(digits) <= len(str(MAX_KEY_LIFETIME_DAYS))
    if not (whole and 1 <= int(digits or "0") <= MAX_KEY_LIFETIME_DAYS):
        raise InvalidExpiryError(
            f"a key's lifetime must be a whole number of days from 1 to "
            f"{MAX_KEY_LIFETIME_DAYS}, not {days!r} (leave the option out for no expiry)"
        )
    return now + timedelta(days=int(digits))


def issue_key(
    session: Session, tenant: Tenant, name: str, *, expires_at: datetime | None = None
) -> IssuedKey:
    """Create a key for ``tenant``, valid until ``expires_at`` (None: until revoked); the
    plaintext is returned once."""
    key_id = "".join(
        secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789")
        for _ in range(12)
    )
    plaintext = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        tenant_id=tenant.id,
        key_id=key_id,
        key_hash=hash_key(plaintext),
        name=name,
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    return IssuedKey(
        id=key.id,
        tenant_id=tenant.id,
        key_id=key_id,
        plaintext=plaintext,
        expires_at=expires_at,
    )


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


def find_key_recording_use(
    connection: Connection | Session, key_id: str, presented: str, now: datetime
) -> StoredKey | None:
    """The unrevoked key with this public id (None: unknown or revoked), in one statement
    that also sets its ``last_used_at`` to ``now`` when ``presented`` is that key and has
    not expired at ``now`` (``check_key``'s decision at the same ``now``), unless another
    request is stamping it or it was stamped less than ``STAMP_INTERVAL_SECONDS`` before.
    Commit for the stamp to last (on an autocommit connection it does)."""
    row = connection.execute(
        FIND_KEY_RECORDING_USE,
        {
            "key_id": key_id,
            "presented_hash": hash_key(presented),
            "now": now,
            "stamped_before": now - timedelta(seconds=STAMP_INTERVAL_SECONDS),
        },
    ).one_or_none()
    if row is None:
        return None
    return StoredKey(key_id, row.key_hash, row.tenant_id, row.expires_at)


def check_key(stored: StoredKey | None, presented: str, now: datetime) -> Principal | None:
    """The principal of ``presented`` if it is the stored key and has not expired at
    ``now``, or None — in the same time whatever is wrong."""
    # Compare even when nothing was found, so timing does not tell which part was wrong.
    expected = stored.key_hash if stored is not None else hash_key("")
    matches = hmac.compare_digest(expected, hash_key(presented))
    if matches and stored is not None and not stored.expired(now):
        return Principal(tenant_id=stored.tenant_id, key_id=stored.key_id)
    return None
