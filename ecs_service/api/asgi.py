"""The api as uvicorn loads it in each of its processes: ``ecs_service.api.asgi:create_app``.

``herald api`` runs uvicorn with this import string and ``factory=True``, so that every
worker process (``API_WORKERS``) builds its own app from the environment, as the one
process did before: Datadog tracing started before the app is imported, its own engine
and pool, its own metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecs_service.settings import ApiSettings, DatabaseSettings
from ecs_service.startup import read_settings, start_tracing

if TYPE_CHECKING:
    from fastapi import FastAPI

APP_FACTORY = f"{__name__}:create_app"


def create_app() -> FastAPI:
    """The api, with its settings read from the environment; tracing when DD_TRACE_ENABLED."""
    tracing = start_tracing()
    from ecs_service.api.app import create_app as build_app

    return build_app(read_settings(ApiSettings), read_settings(DatabaseSettings), tracing=tracing)
