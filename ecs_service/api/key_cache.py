"""Authentication without a database round trip for a key this process saw recently.

``KeyCache`` keeps the rows of recently presented keys for ``ttl_seconds``: active ones
(up to ``max_keys``), and apart from them, so that made-up key ids never push a real key
out, the key ids that are not active (up to ``max_absent``). A presented key is still
hashed and compared in constant time against the cached hash on every request, and the
cached row's expiry (``StoredKey.expires_at``) is checked against the wall clock then too:
an expiring key stops working at its instant, not when its cached row ages out.

Reading a key's row (a miss) stamps its ``last_used_at`` in the same statement
(``api_keys.find_key_recording_use``, one round trip on an autocommit connection), so a
key's last use is known to within ``ttl_seconds`` for each api process, for free.

It also remembers, for longer, which tenant each active key id it read belongs to
(``tenant_of``). That never authenticates anyone: it only tells admission whose share
of the slots a key's database lookup takes, so a real key whose row is not cached (it
expired, the listener reconnected) is looked up as its tenant, not among the
unauthenticated that a flood of made-up keys fills.

Revocation is immediate: ``revoke_key`` notifies ``REVOKED_CHANNEL`` when its transaction
commits, and ``RevocationListener`` (one thread and one connection per process) drops
that key from the cache as the notification arrives. The cache is trusted only while
the listener is connected and listening: until it is (at start, after a lost
connection) every request reads its key from the database, and each (re)connection
empties the cache, so a revocation missed while disconnected is never served from it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TypeVar

from psycopg import sql

from ecs_service.api_keys import (
    REVOKED_CHANNEL,
    Principal,
    StoredKey,
    check_key,
    find_key_recording_use,
    key_id_of,
)
from shared.backoff import Backoff
from shared.observability import logger

if TYPE_CHECKING:
    from uuid import UUID

    from sqlalchemy.engine import Engine

_T = TypeVar("_T")

CACHE_TTL_SECONDS = 60.0
CACHE_MAX_KEYS = 10_000
# Key ids read that are not active keys (mostly made-up ones): a small LRU of their own.
CACHE_MAX_ABSENT = 1_000
# Active key ids whose tenant admission remembers: about 5 MB when full (measured).
MAX_KNOWN_TENANTS = 20_000
# How often an idle listener checks that its connection still works.
HEARTBEAT_SECONDS = 10.0
MAX_RECONNECT_SECONDS = 5.0


class _Miss:
    """The key's row is not in the cache: read it from the database."""


MISS: Final = _Miss()


@dataclass(frozen=True)
class _Entry:
    stored: StoredKey | None  # None: no unrevoked key has this id
    expires_at: float


def _keep(entries: OrderedDict[str, _T], key_id: str, value: _T, limit: int) -> None:
    entries[key_id] = value
    entries.move_to_end(key_id)
    while len(entries) > limit:
        entries.popitem(last=False)


class KeyCache:
    """Rows of recently presented keys by key id, thread-safe, bounded in size and age;
    and the tenant of each active key id read, kept across expiries and reconnections."""

    def __init__(
        self,
        ttl_seconds: float = CACHE_TTL_SECONDS,
        max_keys: int = CACHE_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_absent: int = CACHE_MAX_ABSENT,
        max_tenants: int = MAX_KNOWN_TENANTS,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_keys = max_keys
        self.max_absent = max_absent
        self.max_tenants = max_tenants
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # active keys' rows
        self._absent: OrderedDict[str, _Entry] = OrderedDict()  # ids of no active key
        self._tenants: OrderedDict[str, UUID] = OrderedDict()
        # Bumped by every invalidation: a row read from the database before one is not
        # remembered after it (it may be the revoked key's, read before the revocation).
        self._generation = 0
        self._trusted = False

    def lookup(self, key_id: str) -> StoredKey | None | _Miss:
        """The cached row of ``key_id`` (None: not an active key), or ``MISS``."""
        with self._lock:
            if not self._trusted:
                return MISS
            for entries in (self._entries, self._absent):
                entry = entries.get(key_id)
                if entry is None:
                    continue
                # Expiry counts from the read, not the last use: it bounds how old a row
                # served may be, whatever the listener heard.
                if entry.expires_at <= self._clock():
                    del entries[key_id]
                    return MISS
                entries.move_to_end(key_id)
                return entry.stored
            return MISS

    def tenant_of(self, key_id: str) -> UUID | None:
        """The tenant of ``key_id`` when this process last read it active, else None. Not
        authentication (the key may be revoked since, the secret wrong): only whose share
        of the slots its lookup takes."""
        with self._lock:
            tenant_id = self._tenants.get(key_id)
            if tenant_id is not None:
                self._tenants.move_to_end(key_id)
            return tenant_id

    def generation(self) -> int:
        """Read before a database lookup, and given back to ``remember``."""
        with self._lock:
            return self._generation

    def remember(self, key_id: str, stored: StoredKey | None, generation: int) -> None:
        """Keep a row read from the database, unless an invalidation came in between
        (the key's tenant is remembered even while the cache is not listening)."""
        with self._lock:
            if stored is None:
                self._tenants.pop(key_id, None)
            if generation != self._generation:
                return
            if stored is not None:
                _keep(self._tenants, key_id, stored.tenant_id, self.max_tenants)
            if not self._trusted:
                return
            entry = _Entry(stored, self._clock() + self.ttl_seconds)
            if stored is None:
                self._entries.pop(key_id, None)
                _keep(self._absent, key_id, entry, self.max_absent)
            else:
                self._absent.pop(key_id, None)
                _keep(self._entries, key_id, entry, self.max_keys)

    def forget(self, key_id: str) -> None:
        """A key was revoked."""
        with self._lock:
            self._entries.pop(key_id, None)
            self._tenants.pop(key_id, None)
            self._generation += 1

    @property
    def trusted(self) -> bool:
        """Whether the cache serves keys (its listener is listening)."""
        return self._trusted

    def trust(self, trusted: bool) -> None:
        """The listener (re)connected (True) or lost its connection (False): start empty
        (but for the tenants of key ids, which authenticate nobody)."""
        with self._lock:
            self._entries.clear()
            self._absent.clear()
            self._generation += 1
            self._trusted = trusted


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Authenticator:
    """Checks presented keys against the cache, or the database on a miss; ``wall_clock``
    decides whether a key has expired."""

    def __init__(
        self, cache: KeyCache, engine: Engine, *, wall_clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self.cache = cache
        self.engine = engine
        # A miss is one statement (it stamps last_used_at): no BEGIN or COMMIT around it.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._wall_clock = wall_clock

    def from_cache(self, presented: str) -> Principal | None | _Miss:
        """The principal (None: refused) from memory only, or ``MISS``; no I/O."""
        key_id = key_id_of(presented)
        if key_id is None:
            return check_key(None, presented, self._wall_clock())
        stored = self.cache.lookup(key_id)
        if isinstance(stored, _Miss):
            return MISS
        return check_key(stored, presented, self._wall_clock())

    def from_database(self, presented: str) -> Principal | None:
        """The principal (None: refused), reading the key's row; remembers it. Blocking:
        run it in a worker thread. Holds a pooled connection only while it reads."""
        key_id = key_id_of(presented)
        if key_id is None:
            return check_key(None, presented, self._wall_clock())
        generation = self.cache.generation()
        with self._autocommit.connect() as connection:
            # One instant, read once a connection is held (not before a wait for one),
            # decides acceptance and is the use stamped: the stamp never says a key was
            # used at a time this process would have refused it.
            now = self._wall_clock()
            stored = find_key_recording_use(connection, key_id, presented, now)
            connection.commit()  # autocommit: ends SQLAlchemy's autobegun block only
        self.cache.remember(key_id, stored, generation)
        return check_key(stored, presented, now)


class RevocationListener:
    """A thread that LISTENs for revocations on its own connection and drops each revoked
    key from ``cache``; it reconnects (with back-off) whenever the connection is lost."""

    def __init__(
        self,
        engine: Engine,
        cache: KeyCache,
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        max_reconnect_seconds: float = MAX_RECONNECT_SECONDS,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.heartbeat_seconds = heartbeat_seconds
        self._backoff = Backoff(max_reconnect_seconds, first=0.1)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="key-revocations", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except Exception as error:  # noqa: BLE001 - whatever failed: reconnect, never die
                first_line = (str(error) or repr(error)).splitlines()[0]
                pause = self._backoff.failed()
                logger.warning(
                    "key revocation listener disconnected; keys are read from the database "
                    "until it reconnects",
                    extra={"error": first_line, "retry_in_seconds": pause},
                )
                self._stopping.wait(pause)

    def _listen(self) -> None:
        raw = self.engine.raw_connection()
        try:
            connection = raw.driver_connection
            assert connection is not None
            connection.rollback()
            connection.autocommit = True
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(REVOKED_CHANNEL)))
            self.cache.trust(True)
            self._backoff.succeeded()
            last_heartbeat = time.monotonic()
            while not self._stopping.is_set():
                for notification in connection.notifies(timeout=0.5):
                    self.cache.forget(notification.payload)
                if time.monotonic() - last_heartbeat >= self.heartbeat_seconds:
                    connection.execute("SELECT 1")  # a dead connection raises here
                    last_heartbeat = time.monotonic()
        finally:
            self.cache.trust(False)
            raw.close()
