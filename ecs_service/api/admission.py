"""The admission gate: how many requests of this process may use the database at once.

A request is admitted before it goes to a worker thread, and holds its slot until its
work (and its commit) is done. The gate has as many slots as the connection pool has
connections, and the worker threads outnumber them, so an admitted request never waits
for a thread or a connection: the pool can no longer deadlock (issue 13), and a full
gate answers at once instead of queueing requests for seconds.

Fairness: one party (a tenant, or the unauthenticated requests whose key must be looked
up) holds at most its share of the slots, so the rest stay free for everyone else. A
request that finds no slot it may take waits at most ``wait_seconds`` for one, then is
refused (``OverloadedError``: a 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Final

# How long a request may wait for a slot: past it, a quick 503 serves the client (and
# the other tenants) better than a queue.
ADMISSION_WAIT_SECONDS = 0.1
# The part of the slots one tenant may hold; the rest is kept for the others.
TENANT_SHARE = 0.75
# The part the unauthenticated may hold (keys not in the cache, looked up in the database).
UNAUTHENTICATED_SHARE = 0.25
# A tenant is a UUID: never equal to this string.
UNAUTHENTICATED: Final = "unauthenticated"


class OverloadedError(Exception):
    """No slot came free in time."""


class AdmissionGate:
    """``capacity`` slots; each party at most its share; waiters served first come first,
    skipping those whose party is at its share. Used from one event loop only."""

    def __init__(
        self,
        capacity: int,
        *,
        tenant_share: float = TENANT_SHARE,
        unauthenticated_share: float = UNAUTHENTICATED_SHARE,
        wait_seconds: float = ADMISSION_WAIT_SECONDS,
    ) -> None:
        if capacity < 1:
            raise ValueError("the gate needs at least one slot")
        self.capacity = capacity
        self.tenant_limit = max(1, math.ceil(capacity * tenant_share))
        self.unauthenticated_limit = max(1, math.floor(capacity * unauthenticated_share))
        self.wait_seconds = wait_seconds
        self.in_flight = 0
        self._by_party: Counter[Hashable] = Counter()
        self._waiters: deque[tuple[Hashable, asyncio.Future[None]]] = deque()

    def holding(self, party: Hashable) -> int:
        """How many slots ``party`` holds now."""
        return self._by_party[party]

    @asynccontextmanager
    async def admitted(self, party: Hashable) -> AsyncIterator[None]:
        """Hold a slot for ``party`` for the block; ``OverloadedError`` if none came free."""
        await self._acquire(party)
        try:
            yield
        finally:
            self._release(party)

    def _limit(self, party: Hashable) -> int:
        return self.unauthenticated_limit if party == UNAUTHENTICATED else self.tenant_limit

    def _may_take(self, party: Hashable) -> bool:
        return self.in_flight < self.capacity and self._by_party[party] < self._limit(party)

    def _take(self, party: Hashable) -> None:
        self.in_flight += 1
        self._by_party[party] += 1

    async def _acquire(self, party: Hashable) -> None:
        # No waiter can be ahead of a request that may take a slot: a slot that comes free
        # goes to the first waiter that may take it, at once.
        if self._may_take(party):
            self._take(party)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((party, granted))
        try:
            await asyncio.wait_for(asyncio.shield(granted), self.wait_seconds)
        except TimeoutError:
            if granted.done():
                return  # granted as the wait ran out: the slot is ours
            self._forget(party, granted)
            raise OverloadedError from None
        except asyncio.CancelledError:
            if granted.done():
                self._release(party)
            else:
                self._forget(party, granted)
            raise

    def _forget(self, party: Hashable, granted: asyncio.Future[None]) -> None:
        granted.cancel()
        self._waiters.remove((party, granted))

    def _release(self, party: Hashable) -> None:
        self.in_flight -= 1
        self._by_party[party] -= 1
        if not self._by_party[party]:
            del self._by_party[party]
        for waiter in list(self._waiters):
            if self.in_flight >= self.capacity:
                break
            waiting_party, granted = waiter
            if self._may_take(waiting_party):
                self._waiters.remove(waiter)
                self._take(waiting_party)
                granted.set_result(None)
