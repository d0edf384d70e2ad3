"""Liveness and readiness, for the ALB, ECS and people."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from ecs_service.api import problems
from ecs_service.api.dependencies import services_of
from ecs_service.api.schemas import Health

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from sqlalchemy.engine import Engine

router = APIRouter(tags=["health"])

# How long a ping's outcome answers /readyz: a flood of /readyz (it is public) costs at
# most one connection and one thread a second, and a recovered database is seen within it.
READINESS_CACHE_SECONDS = 1.0


class Readiness:
    """The outcome of ``ping`` (run in a worker thread), shared by every caller: at most one
    ping at a time (callers that come while it runs await it), and its outcome reused for
    ``cache_seconds`` after it ends. One event loop only."""

    def __init__(
        self,
        ping: Callable[[], None],
        *,
        cache_seconds: float = READINESS_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ping = ping
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._pinging: asyncio.Task[None] | None = None
        self._ended_at = -float("inf")
        self._error: Exception | None = None
        self._error_traceback: TracebackType | None = None

    async def check(self) -> None:
        """Return if the last ping (or the one now running) succeeded; else raise its error."""
        if self._clock() - self._ended_at >= self._cache_seconds:
            if self._pinging is None:
                self._pinging = asyncio.create_task(self._run_ping())
            # Shielded: a caller that goes away does not cancel the ping the others await.
            await asyncio.shield(self._pinging)
        if self._error is not None:
            # Each caller raises the one error afresh (its traceback would grow otherwise),
            # for the app's handlers to answer: 503 for a database that cannot be reached.
            raise self._error.with_traceback(self._error_traceback)

    async def _run_ping(self) -> None:
        try:
            await run_in_threadpool(self._ping)
            self._error, self._error_traceback = None, None
        except Exception as error:
            self._error, self._error_traceback = error, error.__traceback__
        finally:
            self._ended_at = self._clock()
            self._pinging = None


def _ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def readiness_of(request: Request) -> Readiness:
    """The app's ``Readiness`` of its engine, made by the first /readyz of each lifespan
    (each has its own engine)."""
    engine = services_of(request).engine
    known: tuple[Engine, Readiness] | None = getattr(request.app.state, "readiness", None)
    if known is None or known[0] is not engine:
        known = engine, Readiness(functools.partial(_ping, engine))
        request.app.state.readiness = known
    return known[1]


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", summary="Readiness: the database answers", responses=problems.responses(503))
async def readyz(request: Request) -> Health:
    # Not admitted through the gate: the gate leaves one pooled connection for this, and
    # ``Readiness`` never pings twice at once.
    await readiness_of(request).check()
    return Health(status="ready")
