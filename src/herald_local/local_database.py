"""The database side of a local run: the schema, a demo tenant and its key, stranded tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from ecs_service import api_keys
from ecs_service.db.migrations import upgrade_to_head
from ecs_service.db.models import ApiKey, Tenant
from ecs_service.messages import queued_messages, task_of

if TYPE_CHECKING:
    from pathlib import Path

    from shared.ports import TaskProducer

DEMO_TENANT = "demo"
DEMO_KEY_NAME = "herald-local"


@dataclass(frozen=True)
class DemoKey:
    """The demo tenant's key for this data directory, and whether an earlier run made it."""

    plaintext: str
    reused: bool


def prepare_database(database_url: str, key_file: Path, *, app_url: str | None = None) -> DemoKey:
    """Migrate, make sure the demo tenant exists, and give it one key per data directory.

    ``database_url`` migrates (the schema's owner); the tenant and key are made as the CLI
    makes them, through ``app_url`` (``herald_app``, as in AWS) when given.

    Only keys' hashes are stored, so the plaintext is kept in ``key_file`` (mode 0600,
    beside the local database it opens): the next run reuses it while it is active. When
    it is missing or no longer active, the demo keys of earlier runs are revoked before a
    new one is issued, so a data directory never collects live demo keys.
    """
    owner = create_engine(database_url)
    try:
        upgrade_to_head(owner)
    finally:
        owner.dispose()
    engine = create_engine(app_url or database_url)
    try:
        with Session(engine) as session, session.begin():
            tenant = session.scalar(select(Tenant).where(Tenant.name == DEMO_TENANT))
            if tenant is None:
                tenant = api_keys.create_tenant(session, DEMO_TENANT)
            kept = _active_key_in(key_file, session, tenant)
            if kept is not None:
                return DemoKey(kept, reused=True)
            earlier = session.scalars(
                select(ApiKey.key_id).where(
                    ApiKey.tenant_id == tenant.id,
                    ApiKey.name == DEMO_KEY_NAME,
                    ApiKey.revoked_at.is_(None),
                )
            ).all()
            for key_id in earlier:
                api_keys.revoke_key(session, key_id)
            issued = api_keys.issue_key(session, tenant, DEMO_KEY_NAME)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.chmod(0o600)
        key_file.write_text(issued.plaintext + "\n", encoding="utf-8")
        return DemoKey(issued.plaintext, reused=False)
    finally:
        engine.dispose()


def _active_key_in(key_file: Path, session: Session, tenant: Tenant) -> str | None:
    """The plaintext in ``key_file`` if it is an active demo key of ``tenant``."""
    try:
        plaintext = key_file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    stored = session.scalar(
        select(ApiKey).where(
            ApiKey.tenant_id == tenant.id,
            ApiKey.key_hash == api_keys.hash_key(plaintext),
            ApiKey.revoked_at.is_(None),
        )
    )
    return plaintext if stored is not None else None


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
            rows = queued_messages(session)
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
