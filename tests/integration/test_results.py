"""The results consumer against real PostgreSQL and the moto server's SQS."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from aws_lambda_powertools import Logger, Metrics
from mypy_boto3_sqs import SQSClient
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service.db.models import Message
from ecs_service.worker.results import ResultsConsumer
from shared.contracts import TaskResult
from tests.integration.conftest import Caller, drain, new_queue
from tests.integration.test_relay import insert_messages

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def consumer(engine: Engine, sqs: SQSClient, queue_url: str) -> ResultsConsumer:
    return ResultsConsumer(
        engine,
        sqs,
        queue_url,
        wait_seconds=0,
        logger=Logger(service="results-test"),
        metrics=Metrics(namespace="HeraldTests"),
    )


def set_status(engine: Engine, message_id: UUID, status: str) -> None:
    with engine.begin() as connection:
        connection.execute(update(Message).where(Message.id == message_id).values(status=status))


def message(engine: Engine, message_id: UUID) -> Message:
    with Session(engine) as session:
        return session.scalars(select(Message).where(Message.id == message_id)).one()


def publish(sqs: SQSClient, queue_url: str, *results: TaskResult | str) -> None:
    for result in results:
        body = result if isinstance(result, str) else result.model_dump_json()
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)


@pytest.fixture
def queue_url(sqs: SQSClient) -> str:
    return new_queue(sqs, "results")


def test_sent_result_moves_a_queued_message_to_sent(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str
) -> None:
    # Given a queued message and its sent result on the queue
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    set_status(engine, message_id, "queued")
    publish(sqs, queue_url, TaskResult.sent(message_id, "ses-1", NOW))

    # When the consumer runs
    applied = consumer(engine, sqs, queue_url).consume_once()

    # Then the message is sent, with SES's id and when, and the result is gone from the queue
    stored = message(engine, message_id)
    assert applied == 1
    assert (stored.status, stored.provider_message_id, stored.finished_at) == ("sent", "ses-1", NOW)
    assert drain(sqs, queue_url) == []


def test_failed_result_records_the_reason(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str
) -> None:
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    set_status(engine, message_id, "queued")
    publish(
        sqs, queue_url, TaskResult.failed(message_id, "SES SendEmail failed: MessageRejected", NOW)
    )

    consumer(engine, sqs, queue_url).consume_once()

    stored = message(engine, message_id)
    assert (stored.status, stored.error) == ("failed", "SES SendEmail failed: MessageRejected")


def test_repeated_result_changes_nothing(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str
) -> None:
    # Given a message already sent, and the same result delivered again
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    set_status(engine, message_id, "queued")
    publish(sqs, queue_url, TaskResult.sent(message_id, "ses-1", NOW))
    consumer(engine, sqs, queue_url).consume_once()
    first = message(engine, message_id)
    publish(sqs, queue_url, TaskResult.sent(message_id, "ses-1", NOW))

    # When it is consumed, Then nothing changes and the duplicate is deleted
    assert consumer(engine, sqs, queue_url).consume_once() == 0
    assert message(engine, message_id).updated_at == first.updated_at
    assert drain(sqs, queue_url) == []


def test_status_never_moves_back(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str
) -> None:
    # Given a sent message, and a late failed result for it
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    set_status(engine, message_id, "sent")
    publish(sqs, queue_url, TaskResult.failed(message_id, "late", NOW))

    consumer(engine, sqs, queue_url).consume_once()

    assert message(engine, message_id).status == "sent"


def test_result_that_overtakes_the_relays_commit_is_applied(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str
) -> None:
    # Given a message still scheduled (the relay sent it but has not committed yet)
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    publish(sqs, queue_url, TaskResult.sent(message_id, "ses-9", NOW))

    consumer(engine, sqs, queue_url).consume_once()

    # Then it is sent, and the relay will not pick it up again
    assert message(engine, message_id).status == "sent"


def test_sent_result_overrides_a_cancel_that_lost_the_race(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str
) -> None:
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    set_status(engine, message_id, "canceled")
    publish(sqs, queue_url, TaskResult.sent(message_id, "ses-2", NOW))

    consumer(engine, sqs, queue_url).consume_once()

    assert message(engine, message_id).status == "sent"


def test_unknown_result_is_ignored_and_deleted(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str
) -> None:
    publish(sqs, queue_url, TaskResult.sent(uuid4(), "ses-1", NOW))

    assert consumer(engine, sqs, queue_url).consume_once() == 0
    assert drain(sqs, queue_url) == []


def test_body_that_is_not_a_result_stays_for_the_dlq(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str
) -> None:
    # Given garbage next to a good result
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    publish(sqs, queue_url, "not a result", TaskResult.sent(message_id, "ses-1", NOW))

    # When consumed, the good one is applied and only the garbage is left (SQS redrives it)
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "0"})
    c = consumer(engine, sqs, queue_url)
    applied = sum(c.consume_once() for _ in range(3))

    assert applied == 1
    assert [m["Body"] for m in drain(sqs, queue_url)] == ["not a result"]


def test_results_are_not_deleted_when_the_transaction_fails(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the database fails while applying
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    publish(sqs, queue_url, TaskResult.sent(message_id, "ses-1", NOW))
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "0"})

    def broken(session: Session, result: TaskResult) -> bool:
        raise RuntimeError("database went away")

    monkeypatch.setattr("ecs_service.worker.results.apply_result", broken)

    # When the consumer runs, it raises and the result stays on the queue
    with pytest.raises(RuntimeError):
        consumer(engine, sqs, queue_url).consume_once()
    assert len(drain(sqs, queue_url)) == 1
    assert message(engine, message_id).status == "scheduled"
