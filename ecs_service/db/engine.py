"""The SQLAlchemy engine and sessions of one process, sized by ``DatabaseSettings``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ecs_service.settings import DatabaseSettings


def build_engine(settings: DatabaseSettings, *, application_name: str) -> Engine:
    """An engine whose pool is sized by settings; connections are checked before use."""
    return create_engine(
        settings.sqlalchemy_url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_seconds,
        # A connection the database dropped (restart, failover) is replaced, not handed out.
        pool_pre_ping=True,
        connect_args={
            "application_name": application_name,
            "connect_timeout": 5,
            "options": f"-c statement_timeout={settings.statement_timeout_ms}",
        },
    )


def build_sessions(engine: Engine) -> sessionmaker[Session]:
    """The session factory: objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
