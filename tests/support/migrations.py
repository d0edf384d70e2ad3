"""Databases at a given migration, for the tests of a migration and of what checks them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import uuid4

from alembic import command
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from ecs_service.db.migrations import alembic_config
from herald_local.postgres import LocalPostgres


def migrate(engine: Engine, revision: str, *, down: bool = False) -> None:
    """Upgrade (or with ``down``, downgrade) ``engine``'s database to ``revision``."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


@contextmanager
def database_at(postgres: LocalPostgres, revision: str) -> Iterator[Engine]:
    """A new database on ``postgres``, migrated to ``revision``, as its owner; dropped at
    the end of the block."""
    name = f"herald_at_{revision}_{uuid4().hex[:12]}"
    postgres.ensure_database(name)
    engine = create_engine(postgres.url(name))
    try:
        migrate(engine, revision)
        yield engine
    finally:
        engine.dispose()
        postgres.psql("postgres", f'DROP DATABASE "{name}"')
