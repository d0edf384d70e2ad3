"""Liveness and readiness, for the ALB, ECS and people."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from ecs_service.api import problems
from ecs_service.api.dependencies import SessionDep
from ecs_service.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", summary="Readiness: the database answers", responses=problems.responses(503))
def readyz(session: SessionDep) -> Health:
    session.execute(text("SELECT 1"))
    return Health(status="ready")
