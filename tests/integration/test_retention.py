"""Retention on the real PostgreSQL: finished messages older than the environment keeps
them go, with their recipients and events, a bounded batch at a time; everything else stays."""

from __future__ import annotations

import io
import signal
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

import pytest
from aws_lambda_powertools import Logger
from pydantic import ValidationError
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from ecs_service.db.models import Message, MessageEvent, MessageRecipient, Suppression
from ecs_service.settings import WorkerSettings
from ecs_service.worker.retention import MESSAGES_EXPIRED, Retention
from tests.integration.conftest import new_queue
from tests.support.builders import insert_messages, insert_suppressions
from tests.support.fakes import RecordedMetrics
from tests.support.processes import spawn
from tests.support.waits import wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_sqs import SQSClient
    from sqlalchemy.engine import Engine

    from herald_local.postgres import LocalPostgres
    from tests.integration.conftest import Caller

DAYS = 30
FINAL = ["sent", "delivered", "bounced", "complained", "failed", "canceled"]
READER = "reader@example.org"


def message(
    engine: Engine,
    tenant_id: UUID,
    *,
    status: str,
    created_at: datetime,
    finished_at: datetime | None = None,
) -> UUID:
    """A message row as the api, relay and results consumer leave it, written back then."""
    [message_id] = insert_messages(
        engine,
        tenant_id,
        status=status,
        send_at=created_at,
        created_at=created_at,
        updated_at=finished_at or created_at,
        queued_at=None if status in ("scheduled", "canceled") else created_at,
        finished_at=finished_at,
    )
    return message_id


def finished(engine: Engine, tenant_id: UUID, *, days_ago: float, status: str = "sent") -> UUID:
    """A message of ``tenant_id`` that reached ``status`` ``days_ago`` days ago, with a
    recipient's state and an SES event."""
    finished_at = datetime.now(UTC) - timedelta(days=days_ago)
    message_id = message(
        engine,
        tenant_id,
        status=status,
        created_at=finished_at - timedelta(hours=1),
        finished_at=finished_at,
    )
    with engine.begin() as connection:
        connection.execute(
            insert(MessageRecipient).values(
                message_id=message_id,
                address=READER,
                tenant_id=tenant_id,
                status="delivered",
                updated_at=finished_at,
            )
        )
        connection.execute(
            insert(MessageEvent).values(
                message_id=message_id,
                tenant_id=tenant_id,
                event_type="Delivery",
                recipient=READER,
                occurred_at=finished_at,
                detail={},
                digest=message_id.hex * 2,
            )
        )
    return message_id


def unfinished(engine: Engine, tenant_id: UUID, *, days_ago: float, status: str) -> UUID:
    """A ``scheduled`` or ``queued`` message written ``days_ago`` days ago."""
    created_at = datetime.now(UTC) - timedelta(days=days_ago)
    return message(engine, tenant_id, status=status, created_at=created_at)


def remaining(engine: Engine) -> set[UUID]:
    with Session(engine) as session:
        return set(session.scalars(select(Message.id)))


def count(engine: Engine, model: type[MessageRecipient] | type[MessageEvent]) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def retention(engine: Engine, *, batch_size: int = 500) -> tuple[Retention, RecordedMetrics]:
    metrics = RecordedMetrics()
    logger = Logger(service="herald-tests", stream=io.StringIO())
    return Retention(
        engine, days=DAYS, batch_size=batch_size, logger=logger, metrics=metrics
    ), metrics


@pytest.mark.parametrize("status", FINAL)
def test_a_message_finished_before_the_retention_goes_with_its_recipients_and_events(
    engine: Engine, caller: Caller, status: str
) -> None:
    # Given a message that finished 31 days ago, with a recipient's state and an event
    finished(engine, caller.tenant_id, days_ago=DAYS + 1, status=status)
    expire, metrics = retention(engine)

    # When a retention pass of 30 days runs
    result = expire.expire_once()

    # Then the message, its recipient and its event are gone, and counted
    assert result.deleted == 1
    assert remaining(engine) == set()
    assert (count(engine, MessageRecipient), count(engine, MessageEvent)) == (0, 0)
    assert metrics.values[MESSAGES_EXPIRED] == [1]


def test_a_message_finished_within_the_retention_stays(engine: Engine, caller: Caller) -> None:
    # Given a message that finished 29 days ago
    recent = finished(engine, caller.tenant_id, days_ago=DAYS - 1)
    expire, metrics = retention(engine)

    # When a retention pass of 30 days runs
    result = expire.expire_once()

    # Then it stays, with its recipient and event, and nothing is counted
    assert result.deleted == 0
    assert remaining(engine) == {recent}
    assert (count(engine, MessageRecipient), count(engine, MessageEvent)) == (1, 1)
    assert MESSAGES_EXPIRED not in metrics.values


@pytest.mark.parametrize("status", ["scheduled", "queued"])
def test_an_unfinished_message_stays_however_old(
    engine: Engine, caller: Caller, status: str
) -> None:
    # Given a message written a year ago that is still scheduled or queued
    waiting = unfinished(engine, caller.tenant_id, days_ago=365, status=status)
    expire, _ = retention(engine)

    # When a retention pass of 30 days runs
    expire.expire_once()

    # Then it stays
    assert remaining(engine) == {waiting}


def test_every_tenants_messages_are_judged_by_the_same_rule(
    engine: Engine, caller: Caller, other_caller: Caller
) -> None:
    # Given, for two tenants, an old finished message and a recent one each
    for tenant_id in (caller.tenant_id, other_caller.tenant_id):
        finished(engine, tenant_id, days_ago=DAYS + 5)
    recent = {
        finished(engine, tenant_id, days_ago=1)
        for tenant_id in (caller.tenant_id, other_caller.tenant_id)
    }
    expire, _ = retention(engine)

    # When a retention pass runs
    result = expire.expire_once()

    # Then both tenants' old messages went and both recent ones stayed
    assert result.deleted == 2
    assert remaining(engine) == recent


def test_the_suppression_list_outlives_the_messages_that_made_it(
    engine: Engine, caller: Caller
) -> None:
    # Given an old bounced message whose address is on the tenant's suppression list
    bounced = finished(engine, caller.tenant_id, days_ago=DAYS + 1, status="bounced")
    insert_suppressions(engine, caller.tenant_id, READER, message_id=bounced)
    expire, _ = retention(engine)

    # When a retention pass deletes the message
    expire.expire_once()

    # Then the address is still suppressed for the tenant
    assert remaining(engine) == set()
    with Session(engine) as session:
        assert session.scalars(select(Suppression.address)).all() == [READER]


def test_a_pass_deletes_at_most_one_batch_oldest_first(engine: Engine, caller: Caller) -> None:
    # Given five expired messages, finished 35 to 31 days ago
    by_age = [finished(engine, caller.tenant_id, days_ago=DAYS + 5 - i) for i in range(5)]
    expire, metrics = retention(engine, batch_size=2)

    # When a pass with a batch of two runs
    first = expire.expire_once()

    # Then it deleted the two oldest, and says it hit its bound
    assert (first.deleted, first.full) == (2, True)
    assert remaining(engine) == set(by_age[2:])

    # and the next passes delete the rest, the last one not full
    rest = [expire.expire_once() for _ in range(2)]
    assert [(p.deleted, p.full) for p in rest] == [(2, True), (1, False)]
    assert metrics.values[MESSAGES_EXPIRED] == [2, 2, 1]
    assert remaining(engine) == set()


def test_a_message_another_transaction_holds_is_skipped_not_waited_for(
    engine: Engine, caller: Caller
) -> None:
    # Given two expired messages, one locked by another transaction (a results consumer)
    held = finished(engine, caller.tenant_id, days_ago=DAYS + 2)
    free = finished(engine, caller.tenant_id, days_ago=DAYS + 1)
    expire, _ = retention(engine)
    with Session(engine) as holder, holder.begin():
        holder.execute(select(Message.id).where(Message.id == held).with_for_update())

        # When a retention pass runs meanwhile
        result = expire.expire_once()

        # Then it deletes the free one without waiting, and leaves the held one
        assert result.deleted == 1
        assert remaining(engine) == {held}
    assert free not in remaining(engine)


def test_retention_needs_at_least_a_day() -> None:
    # Given the worker's switch: 0 days means no retention at all, not "delete everything"
    with pytest.raises(ValueError, match="0 means: do not run it"):
        Retention(
            None,  # type: ignore[arg-type]  # refused before the engine is used
            days=0,
            logger=Logger(service="herald-tests", stream=io.StringIO()),
            metrics=RecordedMetrics(),
        )


def run_worker(
    database_env: dict[str, str],
    sqs: SQSClient,
    moto_endpoint: str,
    retention_days: str,
    until: Callable[[], bool],
) -> str:
    """Run ``herald worker`` with MESSAGE_RETENTION_DAYS until ``until`` holds, stop it, and
    return what it printed."""
    worker = spawn(
        "worker",
        database_env
        | {
            "TASK_QUEUE_URL": new_queue(sqs, "tasks"),
            "RESULT_QUEUE_URL": new_queue(sqs, "results"),
            "AWS_ENDPOINT_URL": moto_endpoint,
            "RESULTS_WAIT_SECONDS": "1",
            "RELAY_POLL_SECONDS": "1",
            "SES_MAX_SEND_RATE": "1000",
            "MESSAGE_RETENTION_DAYS": retention_days,
        },
    )
    try:
        wait_for(until, 20, "the worker's passes")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        return worker.stdout.read() if worker.stdout else ""
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_the_worker_deletes_expired_messages_when_retention_is_set(
    postgres: LocalPostgres,
    engine: Engine,
    sqs: SQSClient,
    moto_endpoint: str,
    caller: Caller,
) -> None:
    # Given an expired message
    expired = finished(engine, caller.tenant_id, days_ago=DAYS + 1)
    database_env = {"DATABASE_URL": postgres.url(), "DATABASE_SSLMODE": "disable"}

    # When the worker runs with MESSAGE_RETENTION_DAYS=30
    output = run_worker(
        database_env, sqs, moto_endpoint, str(DAYS), until=lambda: expired not in remaining(engine)
    )

    # Then the expired message is gone, and the log says so
    assert expired not in remaining(engine)
    assert "expired messages deleted" in output


def test_the_worker_keeps_everything_when_retention_is_0(
    postgres: LocalPostgres,
    engine: Engine,
    sqs: SQSClient,
    moto_endpoint: str,
    caller: Caller,
) -> None:
    # Given a message that finished ten years ago
    ancient = finished(engine, caller.tenant_id, days_ago=3650)
    database_env = {"DATABASE_URL": postgres.url(), "DATABASE_SSLMODE": "disable"}

    [due] = insert_messages(engine, caller.tenant_id, 1)

    def relayed() -> bool:
        with Session(engine) as session:
            return session.scalar(select(Message.status).where(Message.id == due)) == "queued"

    # When the worker runs with MESSAGE_RETENTION_DAYS=0 (until it relayed a due message)
    output = run_worker(database_env, sqs, moto_endpoint, "0", until=relayed)

    # Then it said it runs no retention, and the old message is still there
    assert '"retention_days":0' in output.replace(" ", "")
    assert "expired messages deleted" not in output
    assert ancient in remaining(engine)


@pytest.mark.parametrize("days", ["-1", "36501", "thirty"])
def test_a_retention_that_is_not_a_number_of_days_is_refused_naming_the_variable(
    days: str,
) -> None:
    # Given / When the worker's settings read MESSAGE_RETENTION_DAYS
    with pytest.raises(ValidationError, match="MESSAGE_RETENTION_DAYS"):
        WorkerSettings(
            TASK_QUEUE_URL="http://localhost:4566/000000000000/tasks",
            RESULT_QUEUE_URL="http://localhost:4566/000000000000/results",
            MESSAGE_RETENTION_DAYS=days,
        )
