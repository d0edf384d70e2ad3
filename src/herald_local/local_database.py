"""The database side of a local run: the schema, a demo tenant and its key, stranded tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from ecs_service import api_keys
from ecs_service.db.migrations import upgrade_to_head
from ecs_service.db.models import Message, Tenant
from ecs_service.messages import task_of
from shared.contracts import MessageStatus

if TYPE_CHECKING:
    from ecs_service.api_keys import IssuedKey
    from shared.ports import TaskProducer

DEMO_TENANT = "demo"
DEMO_KEY_NAME = "herald-local"


def prepare_database(database_url: str) -> IssuedKey:
    """Migrate, make sure the demo tenant exists, and issue it a key.

    A fresh key per run: only keys' hashes are stored, so last run's key cannot be shown
    again. Older demo keys stay valid until revoked (``herald keys revoke``).
    """
    engine = create_engine(database_url)
    try:
        upgrade_to_head(engine)
        with Session(engine) as session, session.begin():
            tenant = session.scalar(select(Tenant).where(Tenant.name == DEMO_TENANT))
            if tenant is None:
                tenant = api_keys.create_tenant(session, DEMO_TENANT)
            return api_keys.issue_key(session, tenant, DEMO_KEY_NAME)
    finally:
        engine.dispose()


def resend_stranded_tasks(database_url: str, producer: TaskProducer) -> int:
    """Send again the tasks of messages a previous run left ``queued``; return how many.

    PostgreSQL keeps its data between runs but the local AWS endpoint starts empty, so a
    task still in the old task queue (waiting for a retry, say) is gone while its
    message says ``queued``. Sending the task again, with the same task id, finishes it.
    The status does not move back: it only ever moves forward. The idempotency table
    starts empty too, so if the old run had sent the email but not yet applied its
    result, the email goes out once more, to the equally fresh local mailbox.
    """
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.scalars(
                select(Message).where(Message.status == MessageStatus.QUEUED.value)
            ).all()
        tasks = []
        for row in rows:
            try:
                tasks.append(task_of(row))
            except ValidationError:
                continue  # the relay could not have queued it; nothing to finish
        if tasks:
            producer.send(tasks)
        return len(tasks)
    finally:
        engine.dispose()
