"""/readyz's database ping: one at a time, whatever the number of callers, and its outcome
kept for a second."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ecs_service.api.routes.health import Readiness


class Database:
    """A ping that counts its calls, fails while ``down``, and can be held in flight."""

    def __init__(self) -> None:
        self.pings = 0
        self.down = False
        self.answer = threading.Event()
        self.answer.set()

    def ping(self) -> None:
        self.pings += 1
        self.answer.wait(timeout=5)
        if self.down:
            raise ConnectionRefusedError("the database does not answer")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_fifty_concurrent_checks_share_one_ping() -> None:
    async def scenario() -> tuple[int, int]:
        # Given a database whose ping is slow to answer
        database = Database()
        database.answer.clear()
        readiness = Readiness(database.ping)

        # When 50 callers check readiness while the first ping is in flight
        checks = [asyncio.create_task(readiness.check()) for _ in range(50)]
        await asyncio.sleep(0.05)
        database.answer.set()
        outcomes = await asyncio.gather(*checks, return_exceptions=True)
        return database.pings, outcomes.count(None)

    # Then one ping answered them all
    assert asyncio.run(scenario()) == (1, 50)


def test_a_failing_database_fails_every_check_within_the_cache_window_with_one_ping() -> None:
    async def scenario() -> int:
        # Given a database that does not answer
        database, clock = Database(), Clock()
        database.down = True
        readiness = Readiness(database.ping, cache_seconds=1.0, clock=clock)

        # When it is checked, and again 0.9 s later
        with pytest.raises(ConnectionRefusedError):
            await readiness.check()
        clock.now += 0.9
        with pytest.raises(ConnectionRefusedError):
            await readiness.check()
        return database.pings

    # Then both checks failed on the one ping
    assert asyncio.run(scenario()) == 1


def test_a_recovered_database_is_ready_once_the_cache_window_has_passed() -> None:
    async def scenario() -> int:
        # Given a failed check, and the database back a moment later
        database, clock = Database(), Clock()
        database.down = True
        readiness = Readiness(database.ping, cache_seconds=1.0, clock=clock)
        with pytest.raises(ConnectionRefusedError):
            await readiness.check()
        database.down = False

        # When it is checked 1 s after the failed ping
        clock.now += 1.0
        await readiness.check()
        return database.pings

    # Then a new ping found it ready
    assert asyncio.run(scenario()) == 2


def test_a_caller_that_goes_away_does_not_cancel_the_ping_others_await() -> None:
    async def scenario() -> int:
        # Given two callers awaiting one slow ping
        database = Database()
        database.answer.clear()
        readiness = Readiness(database.ping)
        leaving = asyncio.create_task(readiness.check())
        staying = asyncio.create_task(readiness.check())
        await asyncio.sleep(0.01)

        # When the first goes away before the ping answers
        leaving.cancel()
        await asyncio.gather(leaving, return_exceptions=True)
        database.answer.set()

        # Then the second still has the ping's answer (ready), and no second ping ran
        await staying
        return database.pings

    assert asyncio.run(scenario()) == 1
