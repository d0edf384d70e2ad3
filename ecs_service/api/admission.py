"""The admission gate: how many requests of this process may use the database at once.

A request is admitted before it goes to a worker thread, and holds its slot until its
work (and its commit) is done. The gate has one slot fewer than the connection pool has
connections: the one left over is for /readyz, which is not admitted but pings at most
once at a time (``ecs_service.api.routes.health``). So admitted requests never hold more
connections than the pool has, and the pool cannot deadlock (issue 13); the worker
threads outnumber the slots by a margin, so an admitted request does not wait for a
thread unless more than that margin is busy outside the gate. (Inside, it can still wait:
for a row lock, or the rate limiter's connection.) A full gate answers at once instead of
queueing requests for seconds.

Fairness: a party is a tenant, or the unauthenticated requests whose key must be looked
up. A party that holds no slot may take any free one; a party that holds one or more may
take another only while ``reserved`` slots stay free after it (a quarter of them: 3 of
14). One party alone holds at most ``capacity - reserved``, and however many parties are
busy, the reserved slots go to parties that hold none: two floods cannot shut out a
third tenant. The unauthenticated hold at most ``unauthenticated_limit`` besides. A slot
that comes free goes to the waiter whose party holds the fewest slots (first come first
among equals), so busy parties even out and a newcomer goes ahead of them. A request that
finds no slot it may take waits at most ``wait_seconds`` for one, then is refused
(``OverloadedError``: a 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Hashable
from typing import Final

# How long a request may wait for a slot: past it, a 503 serves the client (and the other
# tenants) better than a longer queue. Not shorter: a refusal costs the api about as much
# CPU as the work it refuses (parsing, middleware, the log line), and clients that retry
# at once (wrk does; Retry-After is ignored) turn a short wait into a flood of refusals.
# bench.api, c=256, one tenant: 0.1 s refused 3,713 requests in 5 s and kept 0.55 x the
# c=32 goodput; 0.5 s refused 308 and kept 0.97 x (p99 under overload 0.7 -> 1.0 s).
ADMISSION_WAIT_SECONDS = 0.5
# The part of the slots one tenant may hold while no other holds any; the rest is kept
# free for parties that hold none (see ``AdmissionGate.reserved``).
TENANT_SHARE = 0.75
# The part the unauthenticated may hold (keys not in the cache, looked up in the database).
UNAUTHENTICATED_SHARE = 0.25
# A tenant is a UUID: never equal to this string.
UNAUTHENTICATED: Final = "unauthenticated"


class OverloadedError(Exception):
    """No slot came free in time."""


class _Admitted:
    """``AdmissionGate.admitted``'s block: a class, not ``@asynccontextmanager``, whose
    generator cost 4 us of every request (5.8 -> 1.6 us a block, measured alone)."""

    __slots__ = ("gate", "party")

    def __init__(self, gate: AdmissionGate, party: Hashable) -> None:
        self.gate = gate
        self.party = party

    async def __aenter__(self) -> None:
        await self.gate._acquire(self.party)  # noqa: SLF001 - the gate's own block

    async def __aexit__(self, *_: object) -> None:
        self.gate._release(self.party)  # noqa: SLF001


class AdmissionGate:
    """``capacity`` slots, ``reserved`` of them kept free for parties that hold none; a
    freed slot goes to the waiter whose party holds the fewest. One event loop only."""

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
        # The most one party can hold: its share, but never every slot of a gate of two
        # or more, so that at least one stays free for another party.
        self.tenant_limit = max(1, min(capacity - 1, math.ceil(capacity * tenant_share)))
        # The slots a party that holds one already may not take: 3 of 14, 1 of 4.
        self.reserved = capacity - self.tenant_limit
        self.unauthenticated_limit = max(1, math.floor(capacity * unauthenticated_share))
        self.wait_seconds = wait_seconds
        self.in_flight = 0
        self._by_party: Counter[Hashable] = Counter()
        # Each waiter's party and the future its slot is handed over by, in arrival order.
        self._waiters: list[tuple[Hashable, asyncio.Future[None]]] = []

    def holding(self, party: Hashable) -> int:
        """How many slots ``party`` holds now."""
        return self._by_party[party]

    def admitted(self, party: Hashable) -> _Admitted:
        """Hold a slot for ``party`` for the block (``async with``); ``OverloadedError`` if
        none came free."""
        return _Admitted(self, party)

    def _may_take(self, party: Hashable) -> bool:
        held = self._by_party[party]
        if held == 0:
            return self.in_flight < self.capacity
        if party == UNAUTHENTICATED and held >= self.unauthenticated_limit:
            return False
        return self.in_flight + 1 + self.reserved <= self.capacity

    def _take(self, party: Hashable) -> None:
        self.in_flight += 1
        self._by_party[party] += 1

    async def _acquire(self, party: Hashable) -> None:
        # No waiter may take a slot between two calls (``_hand_over`` gives each free slot
        # a waiter that may take it, at once): one that may take a slot now is ahead of none.
        if self._may_take(party):
            self._take(party)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((party, granted))
        try:
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a
            # cancellation that arrives as the slot is granted, and the cancelled request
            # would go on holding the slot.
            async with asyncio.timeout(self.wait_seconds):
                await asyncio.shield(granted)
        except TimeoutError:
            if granted.done():
                return  # granted as the wait ran out: the slot is ours
            self._forget(party, granted)
            raise OverloadedError from None
        except asyncio.CancelledError:
            if granted.done():
                self._release(party)  # granted, then cancelled: the slot goes on
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
        self._hand_over()

    def _hand_over(self) -> None:
        """Free slots to waiters that may take them, fewest held first, first come among equals."""
        while self._waiters and self.in_flight < self.capacity:
            eligible = [waiter for waiter in self._waiters if self._may_take(waiter[0])]
            if not eligible:
                return
            # min() keeps the first of equals, and the list is in arrival order.
            waiter = min(eligible, key=lambda waiting: self._by_party[waiting[0]])
            self._waiters.remove(waiter)
            party, granted = waiter
            self._take(party)
            granted.set_result(None)
