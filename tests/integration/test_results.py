"""The results consumer against real PostgreSQL and the moto server's SQS."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from mypy_boto3_sqs import SQSClient
from sqlalchemy import String, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service.db.models import Message
from shared.contracts import MAX_PROVIDER_MESSAGE_ID_LENGTH, TaskResult
from shared.errors import FailureCode, failure_text
from tests.integration.conftest import Caller, drain, new_queue
from tests.support.builders import insert_messages
from tests.support.consumers import Results

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
REFUSED_ID = "refused-by-the-database"


def set_status(engine: Engine, message_id: UUID, status: str) -> None:
    with engine.begin() as connection:
        connection.execute(update(Message).where(Message.id == message_id).values(status=status))


def queued_messages(engine: Engine, tenant_id: UUID, count: int) -> list[UUID]:
    ids = insert_messages(engine, tenant_id, count)
    for message_id in ids:
        set_status(engine, message_id, "queued")
    return ids


def message(engine: Engine, message_id: UUID) -> Message:
    with Session(engine) as session:
        return session.scalars(select(Message).where(Message.id == message_id)).one()


def publish(sqs: SQSClient, queue_url: str, *results: TaskResult | str) -> None:
    for result in results:
        body = result if isinstance(result, str) else result.model_dump_json()
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)


def invalid_result(message_id: UUID, **changes: Any) -> str:
    """The JSON of a sent result with ``changes`` that break the contract."""
    body = json.loads(TaskResult.sent(message_id, "ses-1", NOW).model_dump_json())
    return json.dumps(body | changes)


@pytest.fixture
def database_refuses_one_provider_id(owner_engine: Engine) -> Iterator[str]:
    """PostgreSQL refuses a row whose provider_message_id is ``REFUSED_ID``, until the end."""
    with owner_engine.begin() as connection:
        connection.execute(
            text(
                "ALTER TABLE messages ADD CONSTRAINT ck_test_refused "
                f"CHECK (provider_message_id IS DISTINCT FROM '{REFUSED_ID}') NOT VALID"
            )
        )
    yield REFUSED_ID
    with owner_engine.begin() as connection:
        connection.execute(text("ALTER TABLE messages DROP CONSTRAINT ck_test_refused"))


def test_sent_result_moves_a_queued_message_to_sent(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str, results: Results
) -> None:
    # Given a queued message and its sent result on the queue
    [message_id] = queued_messages(engine, caller.tenant_id, 1)
    publish(sqs, queue_url, TaskResult.sent(message_id, "ses-1", NOW))

    # When the consumer runs
    applied = results.consume_once()

    # Then the message is sent, with SES's id and when, and the result is gone from the queue
    stored = message(engine, message_id)
    assert applied == 1
    assert (stored.status, stored.provider_message_id, stored.finished_at) == ("sent", "ses-1", NOW)
    assert drain(sqs, queue_url) == []
    assert results.metrics.values["MessagesSent"] == [1.0]


def test_failed_result_without_a_code_stores_herald_generic_text(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str, results: Results
) -> None:
    # Given a queued message and a contract-version-1 failed result with no error_code
    [message_id] = queued_messages(engine, caller.tenant_id, 1)
    publish(
        sqs, queue_url, TaskResult.failed(message_id, "SES SendEmail failed: MessageRejected", NOW)
    )

    # When it is consumed
    results.consume_once()

    # Then the message failed, and the error it shows is Herald's generic sentence
    stored = message(engine, message_id)
    assert (stored.status, stored.error) == ("failed", "The email could not be sent.")


def test_failed_result_stores_herald_text_for_its_code_never_the_queue_text(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str, results: Results
) -> None:
    # Given a failed result whose free text says anything its writer wanted
    [message_id] = queued_messages(engine, caller.tenant_id, 1)
    forged = "Your account is suspended: pay at http://evil.example/pay"
    publish(sqs, queue_url, TaskResult.failed(message_id, forged, NOW, code=FailureCode.REJECTED))

    # When it is consumed
    results.consume_once()

    # Then the tenant reads Herald's text for the code, and the free text is only logged
    stored = message(engine, message_id)
    assert stored.error == failure_text(FailureCode.REJECTED)
    assert stored.error == "The email service rejected this email."
    [line] = [line for line in results.log_lines() if line["message"] == "message failed"]
    assert (line["task_id"], line["error_code"], line["detail"]) == (
        str(message_id),
        "rejected",
        forged,
    )


def test_failed_result_with_a_code_this_side_does_not_know_stores_the_generic_text(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str, results: Results
) -> None:
    # Given a failed result from a newer task runner, with a code this worker has no text for
    [message_id] = queued_messages(engine, caller.tenant_id, 1)
    body = json.loads(TaskResult.failed(message_id, "detail", NOW).model_dump_json())
    publish(sqs, queue_url, json.dumps(body | {"error_code": "quota_exhausted"}))

    # When it is consumed, Then it is applied with the generic text
    assert results.consume_once() == 1
    assert message(engine, message_id).error == "The email could not be sent."


def test_repeated_result_changes_nothing(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str, results: Results
) -> None:
    # Given a message already sent, and the same result delivered again
    [message_id] = queued_messages(engine, caller.tenant_id, 1)
    publish(sqs, queue_url, TaskResult.sent(message_id, "ses-1", NOW))
    results.consume_once()
    first = message(engine, message_id)
    publish(sqs, queue_url, TaskResult.sent(message_id, "ses-1", NOW))

    # When it is consumed, Then nothing changes, the duplicate is deleted and counted as a
    # repeat (at-least-once delivery is normal: ResultsRejected's alarm stays quiet)
    assert results.consume_once() == 0
    assert message(engine, message_id).updated_at == first.updated_at
    assert drain(sqs, queue_url) == []
    assert results.metrics.values["MessagesSent"] == [1.0]
    assert results.metrics.values["ResultsRepeated"] == [1.0]
    assert "ResultsRejected" not in results.metrics.values


def test_status_never_moves_back(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str, results: Results
) -> None:
    # Given a sent message, and a late failed result for it
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    set_status(engine, message_id, "sent")
    publish(sqs, queue_url, TaskResult.failed(message_id, "late", NOW))

    results.consume_once()

    assert message(engine, message_id).status == "sent"


def test_sent_result_for_a_canceled_message_leaves_it_canceled_and_is_counted(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str, results: Results
) -> None:
    # Given a canceled message, and a sent result for it on the queue (issue 13, item 5)
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    set_status(engine, message_id, "canceled")
    publish(sqs, queue_url, TaskResult.sent(message_id, "ses-2", NOW))

    # When it is consumed
    applied = results.consume_once()

    # Then the message stays canceled, and the result is counted as rejected and deleted
    stored = message(engine, message_id)
    assert applied == 0
    assert (stored.status, stored.provider_message_id, stored.finished_at) == (
        "canceled",
        None,
        None,
    )
    assert results.metrics.values["ResultsRejected"] == [1.0]
    assert drain(sqs, queue_url) == []


@pytest.mark.parametrize("status", ["scheduled", "canceled", "sent", None])
def test_result_for_a_message_that_is_not_queued_is_logged_counted_and_dropped(
    engine: Engine,
    sqs: SQSClient,
    caller: Caller,
    queue_url: str,
    results: Results,
    status: str | None,
) -> None:
    # Given a message in ``status`` (or no message at all), and a failed result for it
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    if status is None:
        message_id = uuid4()
    else:
        set_status(engine, message_id, status)
    before = None if status is None else message(engine, message_id)
    publish(sqs, queue_url, TaskResult.failed(message_id, "detail", NOW))

    # When it is consumed
    assert results.consume_once() == 0

    # Then the row is as it was, the result is gone, counted, and one line says why
    if before is not None:
        after = message(engine, message_id)
        assert (after.status, after.error, after.updated_at) == (
            before.status,
            before.error,
            before.updated_at,
        )
    assert drain(sqs, queue_url) == []
    assert results.metrics.values["ResultsRejected"] == [1.0]
    [line] = [line for line in results.log_lines() if line["message"].startswith("result rejected")]
    assert line["task_id"] == str(message_id)
    assert line["reason"] == ("no such message" if status is None else f"the message is {status}")


def test_result_that_overtakes_the_relays_commit_waits_for_it_and_is_applied(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str, results: Results
) -> None:
    # Given a relay that claimed a message and marked it queued, but has not committed
    [message_id] = insert_messages(engine, caller.tenant_id, 1)
    applied: list[int] = []
    with engine.connect() as relay:
        relay.execute(select(Message.id).where(Message.id == message_id).with_for_update())
        relay.execute(update(Message).where(Message.id == message_id).values(status="queued"))
        # and the task's result already on the result queue
        publish(sqs, queue_url, TaskResult.sent(message_id, "ses-9", NOW))

        # When the consumer runs meanwhile, it waits for the relay's lock
        consumer = threading.Thread(target=lambda: applied.append(results.consume_once()))
        consumer.start()
        wait_for_a_lock_wait(engine)
        relay.commit()
    consumer.join(timeout=10)

    # Then, once the relay committed, the result is applied
    assert applied == [1]
    assert message(engine, message_id).status == "sent"


def wait_for_a_lock_wait(engine: Engine, timeout: float = 10.0) -> None:
    """Return once some session of the database is waiting for a row lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            waiting = connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            )
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("no session waited for the relay's lock")


def test_one_invalid_result_in_a_batch_of_six_goes_alone_to_the_dlq(
    engine: Engine, sqs: SQSClient, caller: Caller
) -> None:
    # Given a result queue with its DLQ after two receives, five good results, and one
    # whose provider_message_id is 300 characters (issue 13, item 5)
    dlq_url = new_queue(sqs, "results-dlq")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    queue_url = sqs.create_queue(
        QueueName=f"results-{uuid4().hex[:12]}",
        Attributes={
            "VisibilityTimeout": "0",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": 2}
            ),
        },
    )["QueueUrl"]
    ids = queued_messages(engine, caller.tenant_id, 6)
    bad = invalid_result(ids[2], provider_message_id="x" * 300)
    publish(sqs, queue_url, *(TaskResult.sent(i, f"ses-{i}", NOW) for i in ids[:2]), bad)
    publish(sqs, queue_url, *(TaskResult.sent(i, f"ses-{i}", NOW) for i in ids[3:]))
    results = Results(engine, sqs, queue_url)

    # When the consumer runs until the queue is empty
    applied = sum(results.consume_once() for _ in range(6))

    # Then the five are sent, each applied once, and only the bad body is in the DLQ
    assert applied == 5
    assert results.metrics.values["MessagesSent"] == [1.0] * 5
    assert [message(engine, i).status for i in ids] == ["sent"] * 2 + ["queued"] + ["sent"] * 3
    assert drain(sqs, queue_url) == []
    assert [m["Body"] for m in drain(sqs, dlq_url)] == [bad]


def test_result_the_database_refuses_is_rolled_back_alone_and_left_for_the_dlq(
    engine: Engine,
    sqs: SQSClient,
    caller: Caller,
    queue_url: str,
    results: Results,
    database_refuses_one_provider_id: str,
) -> None:
    # Given three queued messages, and the database refusing the middle one's result
    first, refused, last = queued_messages(engine, caller.tenant_id, 3)
    publish(
        sqs,
        queue_url,
        TaskResult.sent(first, "ses-1", NOW),
        TaskResult.sent(refused, database_refuses_one_provider_id, NOW),
        TaskResult.sent(last, "ses-3", NOW),
    )
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "0"})

    # When the consumer runs
    applied = results.consume_once()

    # Then its neighbours are applied, it stays queued, and its result stays on the queue
    assert applied == 2
    assert [message(engine, i).status for i in (first, refused, last)] == [
        "sent",
        "queued",
        "sent",
    ]
    [left] = drain(sqs, queue_url)
    assert TaskResult.model_validate_json(left["Body"]).task_id == refused


def test_body_that_is_not_a_result_stays_for_the_dlq(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str, results: Results
) -> None:
    # Given garbage next to a good result
    [message_id] = queued_messages(engine, caller.tenant_id, 1)
    publish(sqs, queue_url, "not a result", TaskResult.sent(message_id, "ses-1", NOW))

    # When consumed, the good one is applied and only the garbage is left (SQS redrives it)
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "0"})
    applied = sum(results.consume_once() for _ in range(3))

    assert applied == 1
    assert [m["Body"] for m in drain(sqs, queue_url)] == ["not a result"]


def test_finished_at_is_stored_between_queued_at_and_now(
    engine: Engine, sqs: SQSClient, caller: Caller, queue_url: str, results: Results
) -> None:
    # Given a message queued a minute ago, and results claiming to have finished
    # before it was queued and a year from now
    early, late = queued_messages(engine, caller.tenant_id, 2)
    queued_at = datetime.now(UTC) - timedelta(minutes=1)
    with engine.begin() as connection:
        connection.execute(
            update(Message).where(Message.id.in_([early, late])).values(queued_at=queued_at)
        )
    publish(
        sqs,
        queue_url,
        TaskResult.sent(early, "ses-1", datetime(2000, 1, 1, tzinfo=UTC)),
        TaskResult.sent(late, "ses-2", datetime.now(UTC) + timedelta(days=365)),
    )

    # When they are consumed
    results.consume_once()

    # Then neither is stored before it was queued nor after it was applied
    assert message(engine, early).finished_at == queued_at
    stored_late = message(engine, late)
    assert stored_late.finished_at is not None
    assert stored_late.finished_at <= stored_late.updated_at


def test_results_are_not_deleted_when_the_transaction_fails(
    engine: Engine,
    sqs: SQSClient,
    caller: Caller,
    queue_url: str,
    results: Results,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the database fails while applying
    [message_id] = queued_messages(engine, caller.tenant_id, 1)
    publish(sqs, queue_url, TaskResult.sent(message_id, "ses-1", NOW))
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "0"})

    def broken(session: Session, result: TaskResult) -> bool:
        raise RuntimeError("database went away")

    monkeypatch.setattr("ecs_service.worker.results.apply_result", broken)

    # When the consumer runs, it raises and the result stays on the queue
    with pytest.raises(RuntimeError):
        results.consume_once()
    assert len(drain(sqs, queue_url)) == 1
    assert message(engine, message_id).status == "queued"


def test_every_provider_message_id_the_contract_accepts_fits_the_column() -> None:
    # Given the messages table's column
    column = Message.__table__.c.provider_message_id.type

    # Then the longest id a valid result carries fits in it
    assert isinstance(column, String)
    assert column.length is not None
    assert column.length >= MAX_PROVIDER_MESSAGE_ID_LENGTH
