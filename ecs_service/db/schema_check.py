"""`herald db check`: is this database's schema the image's, and what does it hold?

The restore drill (`make restore-drill`, docs/restore.md) runs it as a one-off ECS task
against the restored copy: the schema's Alembic revision must be the image's head, and
each table's row count is printed for the person comparing it with the source. It reads
only: counts and the revision, never a row's content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, table, text

from ecs_service.db.migrations import alembic_config

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

# The line's marker, so a reader of the task's log finds it among the others.
CHECK_MARKER = "herald-db-check"
ALEMBIC_TABLE = "alembic_version"


@dataclass(frozen=True)
class SchemaReport:
    """A database's schema revision, the image's head revision, and rows per table."""

    revision: str | None
    head: str
    rows: dict[str, int]

    @property
    def current(self) -> bool:
        """Whether the schema is exactly the image's (its revision is the head)."""
        return self.revision == self.head

    def to_json(self) -> str:
        """One JSON line: what the drill reads back from the task's log."""
        return json.dumps(
            {
                "check": CHECK_MARKER,
                "revision": self.revision,
                "head": self.head,
                "current": self.current,
                "rows": self.rows,
            },
            sort_keys=True,
        )


def head_revision() -> str:
    """The newest migration this image ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its migrations
        raise RuntimeError("no Alembic revisions are shipped with this image")
    return head


def check_schema(engine: Engine) -> SchemaReport:
    """Read the schema's revision and count every table's rows (exactly, however long)."""
    with engine.connect() as connection:
        # An exact count of a large table may outlast the pool's statement timeout.
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        revision = MigrationContext.configure(connection).get_current_revision()
        names = sorted(set(inspect(connection).get_table_names()) - {ALEMBIC_TABLE})
        rows = {
            name: int(connection.scalar(select(func.count()).select_from(table(name))) or 0)
            for name in names
        }
        connection.rollback()
    return SchemaReport(revision=revision, head=head_revision(), rows=rows)
