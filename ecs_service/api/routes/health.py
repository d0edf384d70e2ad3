"""Liveness and readiness, for the ALB, ECS and people."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from ecs_service.api import problems
from ecs_service.api.dependencies import services_of
from ecs_service.api.schemas import Health

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


def _ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


@router.get("/readyz", summary="Readiness: the database answers", responses=problems.responses(503))
async def readyz(request: Request) -> Health:
    # Not admitted through the gate: the gate leaves one pooled connection for this.
    await run_in_threadpool(_ping, services_of(request).engine)
    return Health(status="ready")
