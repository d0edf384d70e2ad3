"""Herald's api as ``herald api`` builds it, behind an import string uvicorn can load in
each of several worker processes (``herald api`` runs one process and takes no
``--workers``)::

    uvicorn bench.support.herald_app:create_app --factory --workers 2 ...

Settings come from the environment, as for ``herald api`` (``DATABASE_URL``,
``SENDER_EMAIL``, ``DATABASE_POOL_SIZE``...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecs_service.api.app import create_app as build_app
from ecs_service.settings import ApiSettings, DatabaseSettings

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app() -> FastAPI:
    """The api of ``herald api``, with its settings read from the environment."""
    return build_app(ApiSettings(), DatabaseSettings())
