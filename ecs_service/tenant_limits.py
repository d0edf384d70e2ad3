"""Per-tenant limits (issue 13): each API key's request rate, and each tenant's daily quota.

Both live in PostgreSQL, the one state every api process and ECS task shares.

**Request rate.** A token bucket per API key (``RateLimitPolicy``: 50 requests/s, burst
100 by default) in the row ``api_rate_buckets[key_id]``. A process does not ask
PostgreSQL on every request: it *leases* tokens, taking up to ``max_lease`` at once with
one ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` on its own autocommit connection, and
spends them locally. Every request a process admits spent a token really taken from the
shared bucket; a token is only spent later than it was taken. So over any interval a key
gets at most what the bucket allows (burst + rate × interval) plus the tokens the api
processes held unspent at its start: **at most N × max_lease more, for N processes**
(5 per process with the defaults). A process leases what the key used there in the last
``LEASE_SECONDS`` (0.1 s), between 1 and ``max_lease`` tokens, so a quiet key holds no
tokens back and a busy one pays one round trip per lease, not per request; a refused
key is refused locally until its next token is due, so a flood costs one round trip per
process per token interval.

**Daily quota.** ``tenants.daily_quota`` emails per UTC day (default 10,000), counted in
``tenant_daily_usage`` by ``reserve_daily_quota`` in the same transaction that stores the
messages, so a rolled-back request counts nothing and the count is exact. The check reads
the committed count, so requests of one tenant in flight at the same instant can together
pass the quota by at most what the others were adding. Each connection counts in its
own row (its slot), so concurrent transactions of one tenant never wait for each other's
commit on one counter row. Rows older than ``USAGE_KEPT_DAYS`` are deleted on the fly.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from sqlalchemy import Date, cast, delete, func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from ecs_service.db.models import Tenant, TenantDailyUsage
from shared.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import date, datetime
    from uuid import UUID

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import Session
    from sqlalchemy.sql.elements import ColumnElement

RATE_POLICY_NAME: Final = "api-key"
# A process leases about this many seconds' worth of the key's recent traffic there.
LEASE_SECONDS: Final = 0.1
# Largest quota `herald tenants set-quota` accepts: PostgreSQL's integer.
MAX_DAILY_QUOTA: Final = 2_147_483_647
DEFAULT_DAILY_QUOTA: Final = 10_000
USAGE_KEPT_DAYS: Final = 7
PRUNE_EVERY_SECONDS: Final = 3600.0
# Bounds the usage rows of a tenant and day; distinct live connections rarely share one.
USAGE_SLOTS: Final = 1024
# A lease is one indexed row update: longer than this means PostgreSQL is in trouble.
LEASE_STATEMENT_TIMEOUT_MS: Final = 2000
# How the limiter's connection shows in pg_stat_activity.
LIMITER_APPLICATION: Final = "herald-rate-limiter"


@dataclass(frozen=True)
class RateLimitPolicy:
    """The token bucket every API key gets: ``burst`` at once, refilled at ``rate_per_second``."""

    rate_per_second: float = 50
    burst: int = 100

    def __post_init__(self) -> None:
        if not self.rate_per_second > 0 or not math.isfinite(self.rate_per_second):
            raise ValueError("the rate limit must be a positive number of requests per second")
        if self.burst < 1:
            raise ValueError("the rate limit's burst must be at least 1 request")

    @property
    def max_lease(self) -> int:
        """The most tokens one process takes from the shared bucket at once: a tenth of the
        burst, and no more than ``LEASE_SECONDS`` of the rate."""
        return max(1, min(self.burst // 10, math.ceil(self.rate_per_second * LEASE_SECONDS)))

    @property
    def header(self) -> str:
        """The ``RateLimit-Policy`` field: the burst refills in ``w`` seconds, so ``q``
        requests per ``w`` seconds is the sustained rate (draft-ietf-httpapi-ratelimit-headers)."""
        window = max(1, math.ceil(self.burst / self.rate_per_second))
        quota = max(self.burst, math.floor(self.rate_per_second * window))
        return f'"{RATE_POLICY_NAME}";q={quota};w={window}'


@dataclass(frozen=True)
class RateDecision:
    """Whether a request may go ahead, and what its ``RateLimit`` headers say.

    ``remaining`` is what this process knows is left (the tokens it holds plus the
    shared bucket's level at its last lease); ``reset_seconds`` is when the bucket is
    full again (at least 1 s), or, when refused, when the next token is due
    (``retry_after_seconds``, which the draft asks to be no earlier than the window's end).
    """

    allowed: bool
    remaining: int
    reset_seconds: int
    retry_after_seconds: int

    def headers(self, policy: RateLimitPolicy) -> dict[str, str]:
        """``RateLimit`` and ``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers),
        and ``Retry-After`` when refused."""
        fields = {
            "RateLimit-Policy": policy.header,
            "RateLimit": f'"{RATE_POLICY_NAME}";r={self.remaining};t={self.reset_seconds}',
        }
        if not self.allowed:
            fields["Retry-After"] = str(self.retry_after_seconds)
        return fields


class _KeyLease:
    """What one process holds of one key's bucket."""

    __slots__ = ("granted", "leased_at", "level", "lock", "refused_until", "tokens")

    def __init__(self) -> None:
        self.tokens = 0  # leased and not yet spent
        self.granted = 0  # the size of the last lease
        self.leased_at = -math.inf  # when it was taken (the limiter's clock)
        self.level = 0.0  # the shared bucket's level after it
        self.refused_until = -math.inf  # refuse locally until then
        self.lock = threading.Lock()  # one lease in flight per key


class TokenBuckets(Protocol):
    """Where the buckets every api process shares live (PostgreSQL: ``PostgresTokenBuckets``)."""

    def lease(self, key_id: str, want: int, policy: RateLimitPolicy) -> Lease | None:
        """Refill ``key_id``'s bucket for the time since its last lease, then take up to
        ``want`` whole tokens; None for a key the store does not know."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Lease:
    """Tokens taken from a shared bucket, and the bucket's level after taking them."""

    granted: int
    level: float


class RequestRateLimiter:
    """The per-key token bucket as this process applies it, shared with every other.

    Build one per process and ``close`` it on shutdown. ``take`` is thread-safe; call it
    after authentication (a key the database does not know is not limited). With
    ``engine``, the buckets are PostgreSQL's, reached over a connection of the limiter's
    own, outside the engine's pool: a request holding a pooled connection never waits for
    a second one.
    """

    def __init__(
        self,
        engine: Engine | None,
        policy: RateLimitPolicy,
        *,
        buckets: TokenBuckets | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if buckets is None:
            if engine is None:
                raise ValueError("give the engine whose database holds the buckets")
            buckets = PostgresTokenBuckets(engine)
        self.policy = policy
        self._buckets = buckets
        self._clock = clock
        self._lock = threading.Lock()  # guards _leases and every _KeyLease's counters
        self._leases: dict[str, _KeyLease] = {}

    def take(self, key_id: str) -> RateDecision:
        """Spend one token of ``key_id``'s bucket: allowed, or refused with when to retry."""
        with self._lock:
            lease = self._leases.get(key_id)
            if lease is None:
                lease = self._leases[key_id] = _KeyLease()
            decided = self._decide_locally(lease, self._clock())
        if decided is not None:
            return decided
        with lease.lock:
            with self._lock:
                # Another thread may have leased while this one waited for the key's lock.
                now = self._clock()
                decided = self._decide_locally(lease, now)
                if decided is not None:
                    return decided
                want = self._lease_size(lease, now)
            leased = self._buckets.lease(key_id, want, self.policy)
            with self._lock:
                if leased is None:  # a key PostgreSQL does not know: authentication decides
                    return RateDecision(True, self.policy.burst, 1, 0)
                now = self._clock()
                lease.tokens = lease.granted = leased.granted
                lease.level, lease.leased_at = leased.level, now
                if leased.level < 1:
                    # No whole token is left for anyone until (1 - level) / rate from now (other
                    # processes only take): once this lease is spent, refuse until then.
                    lease.refused_until = now + (1 - leased.level) / self.policy.rate_per_second
                # Tokens were granted, or refused_until lies ahead: decided either way.
                return self._decide_locally(lease, now) or RateDecision(False, 0, 1, 1)

    def take_locally(self, key_id: str) -> RateDecision | None:
        """``take`` as far as this process can decide it alone: spends a token it holds of
        ``key_id``'s bucket (allowed), or refuses while the key is known to be over its
        rate; None when a lease is due (then call ``take``, in a worker thread).

        No I/O, and never waits for a lease in flight, so the api's event loop can call it
        for every request before the request takes an admission slot or a thread.
        """
        with self._lock:
            lease = self._leases.get(key_id)
            if lease is None:
                return None
            return self._decide_locally(lease, self._clock())

    def refusal(self, key_id: str) -> RateDecision | None:
        """The refusal ``take`` would answer now without asking PostgreSQL, else None.

        Spends nothing and never blocks, so the api's event loop can turn away a key
        that is over its rate before the request takes an admission slot or a thread.
        """
        with self._lock:
            lease = self._leases.get(key_id)
            if lease is None or lease.tokens > 0:
                return None
            now = self._clock()
            if now >= lease.refused_until:
                return None
            wait = max(1, math.ceil(lease.refused_until - now))
            return RateDecision(False, 0, wait, wait)

    def close(self) -> None:
        """Close the connection to the shared buckets (the api's shutdown)."""
        self._buckets.close()

    def _decide_locally(self, lease: _KeyLease, now: float) -> RateDecision | None:
        if lease.tokens > 0:
            lease.tokens -= 1
            remaining = min(self.policy.burst, lease.tokens + math.floor(lease.level))
            refill = math.ceil((self.policy.burst - remaining) / self.policy.rate_per_second)
            return RateDecision(True, remaining, max(1, refill), 0)
        if now < lease.refused_until:
            wait = max(1, math.ceil(lease.refused_until - now))
            return RateDecision(False, 0, wait, wait)
        return None

    def _lease_size(self, lease: _KeyLease, now: float) -> int:
        # The last lease's tokens over the time they lasted: the key's recent rate here.
        lasted = max(now - lease.leased_at, 1e-6)
        wanted = math.ceil(max(lease.granted, 1) * LEASE_SECONDS / lasted)
        return max(1, min(wanted, self.policy.max_lease))


class PostgresTokenBuckets:
    """The buckets in ``api_rate_buckets``, leased over one autocommit connection.

    The connection is taken from ``engine`` once and detached from its pool; after a
    database error it is dropped and the next lease opens a new one. Once an hour it also
    deletes old ``tenant_daily_usage`` rows.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._clock = clock
        self._lock = threading.Lock()  # one statement at a time on the connection
        self._connection: Connection | None = None
        self._next_prune = -math.inf
        self.round_trips = 0  # leases asked of PostgreSQL, for tests and benchmarks

    def lease(self, key_id: str, want: int, policy: RateLimitPolicy) -> Lease | None:
        parameters = {
            "key_id": key_id,
            "want": want,
            "burst": policy.burst,
            "rate": policy.rate_per_second,
        }
        with self._lock:
            for attempt in (1, 2):
                connection = self._connect()
                try:
                    self.round_trips += 1
                    row = connection.execute(LEASE_TOKENS, parameters).one()
                    connection.commit()  # autocommit: ends SQLAlchemy's autobegun block only
                    break
                except IntegrityError:
                    connection.rollback()
                    return None  # no such key (any more)
                except DBAPIError as error:
                    self._drop_connection()
                    # A connection PostgreSQL dropped (a restart, a failover) is replaced
                    # once, as the pool's pre-ping would; otherwise this request answers
                    # 503 (the app's handler) and the next lease reconnects.
                    if not (error.connection_invalidated and attempt == 1):
                        raise
            if self._clock() >= self._next_prune:
                self._next_prune = self._clock() + PRUNE_EVERY_SECONDS
                self._prune(connection)
            return Lease(int(row.granted), float(row.tokens))

    def _prune(self, connection: Connection) -> None:
        """Housekeeping that must never fail the request it runs in: logged, retried in an hour."""
        try:
            prune_usage(connection)
            connection.commit()
        except DBAPIError as error:
            logger.warning("usage prune failed", extra={"error": str(error).splitlines()[0]})
            self._drop_connection()

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def _connect(self) -> Connection:
        if self._connection is None:
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            connection.detach()
            try:
                # Bucket rows are UNLOGGED and a lost prune is redone: no commit waits for WAL.
                connection.execute(
                    text(
                        "SELECT set_config('synchronous_commit', 'off', false), "
                        "set_config('statement_timeout', :timeout, false), "
                        "set_config('application_name', :name, false)"
                    ),
                    {"timeout": str(LEASE_STATEMENT_TIMEOUT_MS), "name": LIMITER_APPLICATION},
                )
                connection.commit()
            except DBAPIError:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _drop_connection(self) -> None:
        if self._connection is not None:
            self._connection.invalidate()
            self._connection.close()
            self._connection = None


# Refill the bucket for the time since its last lease (never above the burst), then take
# up to :want whole tokens. One statement, one short row lock, in autocommit.
LEASE_TOKENS: Final = text("""
INSERT INTO api_rate_buckets AS b (key_id, tokens, granted, refilled_at)
VALUES (:key_id, :burst - least(:want, :burst), least(:want, :burst), now())
ON CONFLICT (key_id) DO UPDATE SET (tokens, granted, refilled_at) = (
    SELECT level - least(:want, floor(level)), least(:want, floor(level)), refilled_at
    FROM (
        SELECT least(:burst, b.tokens + :rate * greatest(
                   0, extract(epoch FROM now() - b.refilled_at))) AS level,
               greatest(b.refilled_at, now()) AS refilled_at
    ) AS refill
)
RETURNING granted, tokens
""")


class DailyQuotaExceededError(Exception):
    """The tenant has scheduled its daily quota of emails; the quota renews at UTC midnight."""

    def __init__(
        self, limit: int, used: int, retry_after_seconds: int, *, requested: int = 1
    ) -> None:
        self.limit = limit
        self.used = used
        self.retry_after_seconds = retry_after_seconds
        self.requested = requested  # emails the refused request would have added
        refused = "is used up" if requested == 1 else f"has no room for {requested} more emails"
        super().__init__(
            f"the daily quota of {limit} emails {refused} ({used} scheduled today); "
            f"it renews at 00:00 UTC, in {retry_after_seconds} s"
        )


def daily_quota_ctes(*, also_when: str = "true") -> str:
    """The CTEs ``state`` (the tenant's quota and today's committed usage, UTC day by
    PostgreSQL's clock, and seconds to midnight) and ``reserved`` (when :count more fit
    and ``also_when`` holds, they are added to this connection's slot row of the day;
    one row if so). For a statement that counts emails in the same round trip as other
    work (``ecs_service.messages``' single POST)."""
    return f"""state AS (
    SELECT t.daily_quota AS quota,
           today.day,
           (SELECT coalesce(sum(u.used), 0) FROM tenant_daily_usage AS u
             WHERE u.tenant_id = t.id AND u.day = today.day) AS used,
           ceil(extract(epoch FROM today.day + 1 - (now() AT TIME ZONE 'UTC')))::int
               AS seconds_left
    FROM tenants AS t, (SELECT (now() AT TIME ZONE 'UTC')::date AS day) AS today
    WHERE t.id = :tenant_id
), reserved AS (
    INSERT INTO tenant_daily_usage AS u (tenant_id, day, slot, used)
    SELECT :tenant_id, day, pg_backend_pid() % {USAGE_SLOTS}, :count FROM state
    WHERE used + :count <= quota AND ({also_when})
    ON CONFLICT (tenant_id, day, slot) DO UPDATE SET used = u.used + excluded.used
    RETURNING 1
)"""


RESERVE_DAILY_QUOTA: Final = text(f"""
WITH {daily_quota_ctes()}
SELECT quota, used, seconds_left, EXISTS (SELECT FROM reserved) AS reserved FROM state
""")


def reserve_daily_quota(session: Session | Connection, tenant_id: UUID, count: int = 1) -> None:
    """Count ``count`` new emails against the tenant's quota of today (UTC), in the
    caller's transaction: a rollback gives them back.

    Raises
    ------
    DailyQuotaExceededError
        They do not fit: nothing was counted.
    LookupError
        No such tenant.
    """
    if count < 1:
        raise ValueError("reserve at least one email")
    row = session.execute(RESERVE_DAILY_QUOTA, {"tenant_id": tenant_id, "count": count}).first()
    if row is None:
        raise LookupError(f"no tenant {tenant_id}")
    if not row.reserved:
        raise DailyQuotaExceededError(
            int(row.quota), int(row.used), max(1, row.seconds_left), requested=count
        )


@dataclass(frozen=True)
class TenantQuota:
    """A tenant's daily quota and what it has used of it today (UTC)."""

    tenant_id: UUID
    name: str
    created_at: datetime
    daily_quota: int
    used_today: int


def set_daily_quota(session: Session, tenant_id: UUID, daily_quota: int) -> None:
    """Set the emails ``tenant_id`` may schedule per UTC day, from the next request on."""
    if not 0 <= daily_quota <= MAX_DAILY_QUOTA:
        raise ValueError(f"a daily quota is from 0 to {MAX_DAILY_QUOTA}")
    session.execute(update(Tenant).where(Tenant.id == tenant_id).values(daily_quota=daily_quota))


def quotas(session: Session, tenant_id: UUID | None = None) -> list[TenantQuota]:
    """Every tenant's (or one tenant's) quota and usage today, oldest tenant first."""
    used_today = (
        select(func.coalesce(func.sum(TenantDailyUsage.used), 0))
        .where(TenantDailyUsage.tenant_id == Tenant.id, TenantDailyUsage.day == _utc_today())
        .scalar_subquery()
    )
    query = select(
        Tenant.id, Tenant.name, Tenant.created_at, Tenant.daily_quota, used_today
    ).order_by(Tenant.created_at, Tenant.name)
    if tenant_id is not None:
        query = query.where(Tenant.id == tenant_id)
    return [TenantQuota(*row) for row in session.execute(query)]


def prune_usage(connection: Connection | Session, kept_days: int = USAGE_KEPT_DAYS) -> int:
    """Delete usage rows older than ``kept_days`` UTC days; how many went."""
    result = connection.execute(
        delete(TenantDailyUsage).where(TenantDailyUsage.day < _utc_today() - kept_days)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _utc_today() -> ColumnElement[date]:
    """Today in UTC by PostgreSQL's clock: ``(now() AT TIME ZONE 'UTC')::date``."""
    return cast(func.timezone("UTC", func.now()), Date)
