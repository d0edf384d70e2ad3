"""The outbox relay against real PostgreSQL and the moto server's SQS."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from aws_lambda_powertools import Logger, Metrics
from mypy_boto3_sqs import SQSClient
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service.db.models import Message
from ecs_service.worker.process import DueWaiter
from ecs_service.worker.relay import Relay
from shared.adapters.sqs import SqsTaskProducer
from shared.contracts import AnyTask, TaskEnvelope
from shared.errors import FailureCode, TaskBatchSendError, failure_text
from tests.integration.conftest import Caller, drain, make_caller, new_queue
from tests.support.builders import PAYLOAD, insert_messages, status_of, statuses
from tests.support.emf import emitted_metrics
from tests.support.fakes import FlakyProducer


def make_relay(engine: Engine, producer: Any, claim_size: int = 50) -> Relay:
    return Relay(
        engine,
        producer,
        claim_size=claim_size,
        logger=Logger(service="relay-test"),
        metrics=Metrics(namespace="HeraldTests"),
    )


def relay_until_idle(relay: Relay) -> None:
    while relay.relay_due_messages().claimed:
        pass


def test_due_messages_are_queued_once_with_their_task(
    engine: Engine, sqs: SQSClient, caller: Caller
) -> None:
    # Given 12 due messages and one for tomorrow
    due = insert_messages(engine, caller.tenant_id, 12)
    insert_messages(engine, caller.tenant_id, 1, send_at=datetime.now(UTC) + timedelta(days=1))
    queue_url = new_queue(sqs, "tasks")

    # When the relay runs until nothing is due
    relay_until_idle(make_relay(engine, SqsTaskProducer(sqs, queue_url)))

    # Then each due message is one task on the queue, and queued; tomorrow's waits
    tasks = [AnyTask.model_validate_json(str(m["Body"])) for m in drain(sqs, queue_url)]
    assert sorted(t.task_id for t in tasks) == sorted(due)
    assert {t.tenant_id for t in tasks} == {caller.tenant_id}
    assert {t.payload["subject"] for t in tasks} == {"Hi"}
    assert statuses(engine) == {"queued": 12, "scheduled": 1}


def test_relay_reports_the_messages_still_due_after_each_pass(
    engine: Engine, sqs: SQSClient, caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 5 due messages, one for tomorrow, and a relay claiming 3 a pass, counting the
    # backlog on every pass
    insert_messages(engine, caller.tenant_id, 5)
    insert_messages(engine, caller.tenant_id, 1, send_at=datetime.now(UTC) + timedelta(days=1))
    metrics = Metrics(namespace="HeraldTests")
    metrics.clear_metrics()
    relay = Relay(
        engine,
        SqsTaskProducer(sqs, new_queue(sqs, "tasks")),
        claim_size=3,
        logger=Logger(service="relay-test"),
        metrics=metrics,
        backlog_interval_seconds=0,
    )
    capsys.readouterr()

    # When it runs two passes, its metrics published after each
    for _ in range(2):
        relay.relay_due_messages()
        metrics.flush_metrics()

    # Then the backlog is what each pass left due: 2, then none; tomorrow's is not due.
    # No send rate holds the relay, so the alarms' share of it is the whole of it
    emitted = emitted_metrics(capsys.readouterr().out)
    assert emitted["RelayBacklog"] == [2.0, 0.0]
    assert emitted["RelayBacklogUnpaced"] == [2.0, 0.0]


def test_relay_counts_the_backlog_at_most_once_per_interval(
    engine: Engine, sqs: SQSClient, caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a relay with the default interval and 4 due messages
    insert_messages(engine, caller.tenant_id, 4)
    metrics = Metrics(namespace="HeraldTests")
    metrics.clear_metrics()
    relay = make_relay(engine, SqsTaskProducer(sqs, new_queue(sqs, "tasks")), claim_size=1)
    capsys.readouterr()

    # When it runs four passes in quick succession
    for _ in range(4):
        relay.relay_due_messages()
    metrics.flush_metrics()

    # Then only the first counted the backlog (3 left after it); all four relayed one each
    emitted = emitted_metrics(capsys.readouterr().out)
    assert emitted["RelayBacklog"] == [3.0]
    assert emitted["MessagesRelayed"] == [1.0, 1.0, 1.0, 1.0]


def test_two_relays_queue_a_thousand_messages_each_exactly_once(
    engine: Engine, sqs: SQSClient, caller: Caller
) -> None:
    # Given 1,000 due messages and two relays sharing them
    due = insert_messages(engine, caller.tenant_id, 1_000)
    queue_url = new_queue(sqs, "tasks")
    relays = [make_relay(engine, SqsTaskProducer(sqs, queue_url), claim_size=50) for _ in range(2)]

    # When both run at once until idle
    threads = [threading.Thread(target=relay_until_idle, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # Then every message is on the queue exactly once, and every row is queued
    bodies = [AnyTask.model_validate_json(str(m["Body"])).task_id for m in drain(sqs, queue_url)]
    assert len(bodies) == 1_000
    assert set(bodies) == set(due)
    assert statuses(engine) == {"queued": 1_000}


def test_sqs_outage_leaves_messages_scheduled_until_it_recovers(
    engine: Engine, sqs: SQSClient, caller: Caller
) -> None:
    # Given SQS fails the next two sends
    due = insert_messages(engine, caller.tenant_id, 30)
    queue_url = new_queue(sqs, "tasks")
    relay = make_relay(engine, FlakyProducer(SqsTaskProducer(sqs, queue_url), outages=2))

    # When the relay tries during the outage, Then nothing is lost or marked
    for _ in range(2):
        outcome = relay.relay_due_messages()
        assert (outcome.claimed, outcome.queued, outcome.not_queued) == (30, 0, 30)
        assert statuses(engine) == {"scheduled": 30}

    # When SQS is back, Then everything goes out once
    relay_until_idle(relay)
    assert sorted(
        AnyTask.model_validate_json(str(m["Body"])).task_id for m in drain(sqs, queue_url)
    ) == sorted(due)
    assert statuses(engine) == {"queued": 30}


class HalfFailingProducer:
    """SQS takes the first half of each batch and refuses the rest (a task sent alone too)."""

    def send(
        self,
        tasks: Sequence[TaskEnvelope[Any]],
        *,
        trace_contexts: Mapping[UUID, Mapping[str, str]] | None = None,
    ) -> None:
        half = len(tasks) // 2
        raise TaskBatchSendError(
            {t.task_id: "InternalError" for t in tasks[half:]},
            sent=[t.task_id for t in tasks[:half]],
        )


def test_only_messages_sqs_took_are_marked_queued(engine: Engine, caller: Caller) -> None:
    insert_messages(engine, caller.tenant_id, 10)

    outcome = make_relay(engine, HalfFailingProducer()).relay_due_messages()

    # SQS took 5 and failed the other 5 even alone, through its own fault (InternalError,
    # not SenderFault): those stay scheduled for a later pass, nothing is failed.
    assert (outcome.queued, outcome.not_queued, outcome.failed) == (5, 5, 0)
    assert statuses(engine) == {"queued": 5, "scheduled": 5}


class RefusingProducer:
    """The real producer, except that SQS refuses ``refused`` per entry, every time."""

    def __init__(self, real: SqsTaskProducer, refused: UUID) -> None:
        self.real = real
        self.refused = refused

    def send(
        self,
        tasks: Sequence[TaskEnvelope[Any]],
        *,
        trace_contexts: Mapping[UUID, Mapping[str, str]] | None = None,
    ) -> None:
        others = [t for t in tasks if t.task_id != self.refused]
        if others:
            self.real.send(others, trace_contexts=trace_contexts)
        if len(others) < len(tasks):
            raise TaskBatchSendError(
                {self.refused: "InvalidMessageContents: Invalid characters found."},
                sent=[t.task_id for t in others],
                refused=[self.refused],
            )


def test_a_message_sqs_refuses_fails_and_its_neighbours_are_queued_in_the_same_pass(
    engine: Engine, sqs: SQSClient, caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 12 due messages, one of which SQS refuses whenever it is sent
    due = insert_messages(engine, caller.tenant_id, 12)
    poisoned = due[5]
    queue_url = new_queue(sqs, "tasks")
    metrics = Metrics(namespace="HeraldTests")
    metrics.clear_metrics()
    relay = Relay(
        engine,
        RefusingProducer(SqsTaskProducer(sqs, queue_url), refused=poisoned),
        claim_size=50,
        logger=Logger(service="relay-test"),
        metrics=metrics,
    )
    capsys.readouterr()

    # When the relay runs one pass
    outcome = relay.relay_due_messages()
    metrics.flush_metrics()

    # Then the refused one is failed with Herald's reason and counted; the 11 are queued
    assert (outcome.claimed, outcome.queued, outcome.failed) == (12, 11, 1)
    assert status_of(engine, poisoned) == ("failed", failure_text(FailureCode.QUEUE_REFUSED))
    assert statuses(engine) == {"queued": 11, "failed": 1}
    queued = {AnyTask.model_validate_json(str(m["Body"])).task_id for m in drain(sqs, queue_url)}
    assert queued == set(due) - {poisoned}
    assert emitted_metrics(capsys.readouterr().out)["RelayRowsFailed"] == [1.0]


def test_a_task_too_large_for_sqs_fails_and_its_neighbours_are_queued(
    engine: Engine, sqs: SQSClient, caller: Caller
) -> None:
    # Given three due messages, one with a body that makes its task larger than SQS takes
    due = insert_messages(engine, caller.tenant_id, 3)
    huge = insert_messages(engine, caller.tenant_id, 1, payload=PAYLOAD | {"text": "x" * 300_000})[
        0
    ]
    queue_url = new_queue(sqs, "tasks")

    # When the relay runs one pass
    make_relay(engine, SqsTaskProducer(sqs, queue_url)).relay_due_messages()

    # Then the large one fails with Herald's reason, and the others are on the queue
    assert status_of(engine, huge) == ("failed", failure_text(FailureCode.TOO_LARGE))
    queued = {AnyTask.model_validate_json(str(m["Body"])).task_id for m in drain(sqs, queue_url)}
    assert queued == set(due)


def test_a_task_with_characters_sqs_refuses_fails_before_it_is_sent(
    engine: Engine, sqs: SQSClient, caller: Caller
) -> None:
    # Given a due message whose text holds U+FFFF, which SQS refuses in a message body
    # (the moto server does not check it: AWS does), stored before the api refused it,
    # and a neighbour
    due = insert_messages(engine, caller.tenant_id, 1)
    bad = insert_messages(engine, caller.tenant_id, 1, payload=PAYLOAD | {"text": "a\uffffb"})[0]
    queue_url = new_queue(sqs, "tasks")

    # When the relay runs one pass
    make_relay(engine, SqsTaskProducer(sqs, queue_url)).relay_due_messages()

    # Then it is failed without being sent; its neighbour is on the queue
    # (the email rules refuse it, so it is not a task Herald can send)
    assert status_of(engine, bad) == ("failed", failure_text(FailureCode.INVALID_TASK))
    queued = [AnyTask.model_validate_json(str(m["Body"])).task_id for m in drain(sqs, queue_url)]
    assert queued == due


def test_a_row_with_times_python_cannot_hold_fails_and_the_pass_goes_on(
    engine: Engine, sqs: SQSClient, caller: Caller
) -> None:
    # Given two rows written by hand with times the send_at CHECK still allows (send_at
    # within a day of created_at) but Python cannot hold: BC, and minus infinity
    odd = {uuid4(): "0002-01-01 00:00:00+00 BC", uuid4(): "-infinity"}
    with engine.begin() as connection:
        for message_id, when in odd.items():
            connection.execute(
                text(
                    "INSERT INTO messages (id, tenant_id, status, payload, send_at, created_at)"
                    " VALUES (:id, :tenant, 'scheduled', CAST(:payload AS jsonb),"
                    " CAST(:when AS timestamptz), CAST(:when AS timestamptz))"
                ),
                {
                    "id": message_id,
                    "tenant": caller.tenant_id,
                    "payload": json.dumps(PAYLOAD),
                    "when": when,
                },
            )
    due = insert_messages(engine, caller.tenant_id, 2)
    queue_url = new_queue(sqs, "tasks")

    # When the relay runs one pass
    outcome = make_relay(engine, SqsTaskProducer(sqs, queue_url)).relay_due_messages()

    # Then both odd rows are failed with Herald's reason, and the two others are queued
    assert (outcome.claimed, outcome.queued, outcome.failed) == (4, 2, 2)
    for message_id in odd:
        assert status_of(engine, message_id) == (
            "failed",
            failure_text(FailureCode.UNREADABLE_TIME),
        )
    queued = {AnyTask.model_validate_json(str(m["Body"])).task_id for m in drain(sqs, queue_url)}
    assert queued == set(due)


def test_a_stored_message_that_is_not_a_valid_task_fails_with_a_reason(
    engine: Engine, sqs: SQSClient, caller: Caller
) -> None:
    # Given a row whose payload was corrupted by hand
    insert_messages(engine, caller.tenant_id, payload={"to": []}, send_at=datetime.now(UTC))
    queue_url = new_queue(sqs, "tasks")

    # When the relay meets it, Then it fails it with why, instead of blocking on it forever
    relay_until_idle(make_relay(engine, SqsTaskProducer(sqs, queue_url)))
    with Session(engine) as session:
        message = session.scalars(select(Message)).one()
    assert message.status == "failed"
    # Herald's own words, not the validation error's text
    assert message.error == failure_text(FailureCode.INVALID_TASK)
    assert drain(sqs, queue_url) == []


@pytest.fixture
def waiting_relay(engine: Engine) -> Iterator[threading.Event]:
    """A DueWaiter waiting in a thread (30 s poll interval); the event is set when it wakes."""
    stop = threading.Event()
    waiter = DueWaiter(engine, poll_seconds=30, stop=stop)
    woke = threading.Event()

    def wait_then_say_so() -> None:
        waiter.wait()
        woke.set()

    thread = threading.Thread(target=wait_then_say_so)
    thread.start()
    time.sleep(0.5)
    yield woke
    stop.set()
    thread.join()
    waiter.close()


def test_a_message_due_now_wakes_the_waiting_relay(
    engine: Engine, caller: Caller, waiting_relay: threading.Event
) -> None:
    # Given a relay waiting with nothing due and a long poll interval (the fixture)

    # When a message due now is written
    started = time.monotonic()
    insert_messages(engine, caller.tenant_id, 1)

    # Then the NOTIFY wakes it within a second, not after the poll interval
    assert waiting_relay.wait(timeout=5)
    assert time.monotonic() - started < 2


def test_waiter_sleeps_only_until_the_next_scheduled_message(
    engine: Engine, caller: Caller
) -> None:
    insert_messages(engine, caller.tenant_id, 1, send_at=datetime.now(UTC) + timedelta(seconds=1))
    waiter = DueWaiter(engine, poll_seconds=30, stop=threading.Event())

    started = time.monotonic()
    waiter.wait()

    assert time.monotonic() - started < 3
    waiter.close()


def test_stop_ends_a_wait_promptly(engine: Engine) -> None:
    stop = threading.Event()
    waiter = DueWaiter(engine, poll_seconds=30, stop=stop)
    threading.Timer(0.3, stop.set).start()

    started = time.monotonic()
    waiter.wait()

    assert time.monotonic() - started < 2
    waiter.close()


def test_relays_of_other_tenants_messages_are_kept_apart(engine: Engine, sqs: SQSClient) -> None:
    a, b = make_caller(engine, "a"), make_caller(engine, "b")
    insert_messages(engine, a.tenant_id, 3)
    insert_messages(engine, b.tenant_id, 2)
    queue_url = new_queue(sqs, "tasks")

    relay_until_idle(make_relay(engine, SqsTaskProducer(sqs, queue_url)))

    tenants = [AnyTask.model_validate_json(str(m["Body"])).tenant_id for m in drain(sqs, queue_url)]
    assert sorted(tenants) == sorted([a.tenant_id] * 3 + [b.tenant_id] * 2)


def test_a_message_created_through_the_api_for_now_wakes_the_relay_at_once(
    engine: Engine, client: Any, caller: Caller, waiting_relay: threading.Event
) -> None:
    # Given a relay waiting with nothing due and a long poll interval (the fixture)

    # When the api stores a message due now (its send_at is computed after its
    # transaction began, so the database's now() is earlier than send_at)
    started = time.monotonic()
    response = client.post(
        "/v1/messages",
        json={"to": ["reader@example.org"], "subject": "Now", "text": "Now"},
        headers=caller.headers,
    )
    assert response.status_code == 201

    # Then the NOTIFY wakes the relay at once
    assert waiting_relay.wait(timeout=5)
    assert time.monotonic() - started < 2
