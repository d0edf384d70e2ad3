"""The runner's logic on in-memory fakes: parse, run, publish, dead-letter, retry."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aws_lambda_powertools import Logger, Metrics

from shared.contracts import MessageStatus
from shared.errors import FailureCode, PermanentError, ThrottledError, TransientError
from shared.task_runner import (
    DEFERRALS_ATTRIBUTE,
    RetryPolicy,
    TaskQueueRecord,
    TaskRunner,
    deferrals_of,
)
from shared.tasks import build_task_registry
from tests.support.fakes import (
    NOW,
    FakeDeadLetterSink,
    FakeEmailSender,
    FakeResultPublisher,
    make_email,
    make_task,
)


class FakeTaskRequeue:
    """An in-memory ``TaskRequeue``: keeps each copy put back on the task queue."""

    def __init__(self) -> None:
        self.copies: list[dict[str, Any]] = []

    def requeue(self, record: TaskQueueRecord, *, deferrals: int, delay_seconds: int) -> None:
        self.copies.append(
            {"body": record.body, "deferrals": deferrals, "delay_seconds": delay_seconds}
        )


class Runner:
    """A TaskRunner on fakes, its clock set 1.5 s after the tasks were created; its pauses
    are recorded instead of slept."""

    def __init__(self, *, requeue: bool = True) -> None:
        self.sender = FakeEmailSender()
        self.results = FakeResultPublisher()
        self.dead_letters = FakeDeadLetterSink()
        self.requeue = FakeTaskRequeue()
        self.pauses: list[float] = []
        self.metrics = Metrics(namespace="HeraldTest", service="runner-test")
        self.runner = TaskRunner(
            registry=build_task_registry(
                email_sender=self.sender, sender_email="herald@example.com"
            ),
            results=self.results,
            dead_letters=self.dead_letters,
            logger=Logger(service="runner-test"),
            metrics=self.metrics,
            idempotency=None,
            clock=lambda: NOW + timedelta(seconds=1.5),
            requeue=self.requeue if requeue else None,
            sleep=self.pauses.append,
            rng=random.Random(19),
        )

    def metric(self, name: str) -> list[float]:
        values: list[float] = self.metrics.metric_set.get(name, {}).get("Value", [])
        return values


@pytest.fixture
def runner() -> Iterator[Runner]:
    fixture = Runner()
    yield fixture
    fixture.metrics.clear_metrics()


def record(
    body: str, message_id: str = "m-1", attributes: dict[str, Any] | None = None
) -> TaskQueueRecord:
    return TaskQueueRecord(record_event(body, message_id, attributes))


def record_event(
    body: str, message_id: str = "m-1", attributes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A task queue record as Lambda's SQS event holds it."""
    return {
        "messageId": message_id,
        "receiptHandle": "rh",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795510800000",
            "SenderId": "AROA:worker",
            "ApproximateFirstReceiveTimestamp": "1795510800050",
        },
        "messageAttributes": attributes or {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:herald-dev-TaskQueue",
        "awsRegion": "us-east-1",
    }


def test_valid_task_is_sent_and_its_sent_result_published(runner: Runner) -> None:
    # Given a task due now
    task = make_task()

    # When its record is processed
    runner.runner.process_record(record(task.to_message_body()))

    # Then one email went out and a sent result with SES's id was published
    assert len(runner.sender.sent) == 1
    [result] = runner.results.results
    assert (result.task_id, result.status, result.provider_message_id) == (
        task.task_id,
        MessageStatus.SENT,
        "ses-1",
    )
    assert runner.metric("EmailsSent") == [1.0]
    assert runner.metric("SendLatency") == [1500.0]


def test_latency_of_a_scheduled_task_counts_from_when_it_was_due(runner: Runner) -> None:
    task = make_task(created_at=NOW - timedelta(days=7), send_at=NOW)
    runner.runner.process_record(record(task.to_message_body()))
    assert runner.metric("SendLatency") == [1500.0]


def test_permanent_send_error_publishes_a_failed_result_without_retry(runner: Runner) -> None:
    # Given SES rejects the email for good
    runner.sender.errors.append(PermanentError("SES SendEmail failed: MessageRejected: bad"))
    task = make_task()

    # When the record is processed, it does not raise (no retry)
    runner.runner.process_record(record(task.to_message_body()))

    # Then the failed result carries the reason
    [result] = runner.results.results
    assert result.status is MessageStatus.FAILED
    assert result.error == "SES SendEmail failed: MessageRejected: bad"
    assert runner.metric("EmailsFailed") == [1.0]


def test_permanent_error_publishes_its_code_beside_the_detail(runner: Runner) -> None:
    # Given the sender port refuses the email for good, saying why in Herald's words
    runner.sender.errors.append(
        PermanentError(
            "SES SendEmail failed: BadRequestException: Illegal address",
            code=FailureCode.INVALID_ADDRESS,
        )
    )

    # When the record is processed
    runner.runner.process_record(record(make_task().to_message_body()))

    # Then the failed result names the code, and keeps the detail for operators
    [result] = runner.results.results
    assert (result.error_code, result.error) == (
        FailureCode.INVALID_ADDRESS,
        "SES SendEmail failed: BadRequestException: Illegal address",
    )


def test_permanent_error_without_a_code_publishes_send_failed(runner: Runner) -> None:
    # Given a permanent error raised without a code
    runner.sender.errors.append(PermanentError("something we did not foresee"))

    # When the record is processed
    runner.runner.process_record(record(make_task().to_message_body()))

    # Then the failed result carries the generic code
    [result] = runner.results.results
    assert result.error_code is FailureCode.SEND_FAILED


def test_transient_send_error_raises_so_the_record_is_retried(runner: Runner) -> None:
    # Given SES fails on every attempt the policy allows (4 sends)
    runner.sender.errors.extend(
        TransientError("SES SendEmail failed: ServiceUnavailable") for _ in range(4)
    )

    # When the record is processed, Then it raises so SQS redelivers it
    with pytest.raises(TransientError, match="ServiceUnavailable"):
        runner.runner.process_record(record(make_task().to_message_body()))
    assert runner.results.results == []
    assert len(runner.pauses) == 3


def test_transient_send_error_is_retried_in_place_after_jittered_growing_pauses(
    runner: Runner,
) -> None:
    # Given SES throttles the first two sends of a task
    runner.sender.errors.extend(
        ThrottledError("SES SendEmail failed: Throttling: Maximum sending rate exceeded.")
        for _ in range(2)
    )

    # When its record is processed
    runner.runner.process_record(record(make_task().to_message_body()))

    # Then the third send went out, after two pauses within 0.1 s and 0.2 s
    assert len(runner.sender.sent) == 1
    [result] = runner.results.results
    assert result.status is MessageStatus.SENT
    first, second = runner.pauses
    assert 0 <= first <= 0.1
    assert 0 <= second <= 0.2
    assert runner.metric("TasksThrottled") == [1.0, 1.0]


def test_a_task_still_throttled_is_queued_again_with_a_delay_instead_of_retried(
    runner: Runner,
) -> None:
    # Given SES throttles every send of a task
    runner.sender.errors.extend(
        ThrottledError("SES SendEmail failed: Throttling: Maximum sending rate exceeded.")
        for _ in range(4)
    )
    body = make_task().to_message_body()

    # When its record is processed, it does not raise: Lambda deletes the original
    runner.runner.process_record(record(body))

    # Then a copy of it is back on the task queue, deferred once, due in 5 to 10 s
    [copy] = runner.requeue.copies
    assert (copy["body"], copy["deferrals"]) == (body, 1)
    assert 5 <= copy["delay_seconds"] <= 10
    # and there is no result and no dead letter: the task is neither failed nor lost
    assert runner.results.results == []
    assert runner.dead_letters.letters == []
    assert runner.metric("TasksDeferred") == [1.0]


def test_a_deferred_task_throttled_again_waits_longer(runner: Runner) -> None:
    # Given a copy deferred three times already, throttled again
    runner.sender.errors.extend(
        ThrottledError("SES SendEmail failed: Throttling") for _ in range(4)
    )
    attributes = {DEFERRALS_ATTRIBUTE: {"stringValue": "3", "dataType": "Number"}}

    # When it is processed
    runner.runner.process_record(record(make_task().to_message_body(), attributes=attributes))

    # Then its next copy counts four deferrals and waits 40 to 80 s
    [copy] = runner.requeue.copies
    assert copy["deferrals"] == 4
    assert 40 <= copy["delay_seconds"] <= 80


def test_a_task_deferred_too_often_takes_the_ordinary_retry_path(runner: Runner) -> None:
    # Given a copy deferred as often as the policy allows, throttled again
    runner.sender.errors.extend(
        ThrottledError("SES SendEmail failed: Throttling") for _ in range(4)
    )
    attributes = {DEFERRALS_ATTRIBUTE: {"stringValue": "100", "dataType": "Number"}}

    # When it is processed, Then it raises: SQS redelivers it and, in the end, the DLQ alarms
    with pytest.raises(TransientError, match="Throttling"):
        runner.runner.process_record(record(make_task().to_message_body(), attributes=attributes))
    assert runner.requeue.copies == []


def test_a_throttled_task_without_a_task_queue_to_requeue_to_is_retried() -> None:
    # Given a runner that was given no task queue (TASK_QUEUE_URL unset)
    fixture = Runner(requeue=False)
    fixture.sender.errors.extend(
        ThrottledError("SES SendEmail failed: Throttling") for _ in range(4)
    )

    # When a throttled record is processed, Then it raises for SQS to redeliver it
    with pytest.raises(TransientError):
        fixture.runner.process_record(record(make_task().to_message_body()))
    fixture.metrics.clear_metrics()


def test_a_failed_requeue_raises_so_the_record_is_retried(runner: Runner) -> None:
    # Given SES throttles every send and SQS refuses the copy
    runner.sender.errors.extend(
        ThrottledError("SES SendEmail failed: Throttling") for _ in range(4)
    )

    def unavailable(record: TaskQueueRecord, **_: Any) -> None:
        raise TransientError("SQS SendMessage (deferred task) failed: ServiceUnavailable")

    runner.requeue.requeue = unavailable  # type: ignore[method-assign]

    # When the record is processed, Then it raises: the original is not deleted, nor lost
    with pytest.raises(TransientError, match="deferred task"):
        runner.runner.process_record(record(make_task().to_message_body()))


@pytest.mark.parametrize(
    ("value", "deferrals"), [(None, 0), ("2", 2), ("not a number", 0), ("-3", 0)]
)
def test_deferrals_are_read_from_the_record_attribute(value: str | None, deferrals: int) -> None:
    attributes = (
        {} if value is None else {DEFERRALS_ATTRIBUTE: {"stringValue": value, "dataType": "Number"}}
    )
    assert deferrals_of(record("{}", attributes=attributes)) == deferrals


def test_deferral_delay_never_exceeds_sqs_maximum() -> None:
    rng = random.Random(1)
    delays = [RetryPolicy().deferral_delay(deferrals, rng) for deferrals in range(0, 40)]
    assert max(delays) <= 900
    assert min(delays[7:]) >= 450


def test_invalid_payload_publishes_a_failed_result_naming_the_field(runner: Runner) -> None:
    # Given a well-formed envelope whose email has no recipient
    body = json.loads(make_task().to_message_body())
    body["payload"]["to"] = []

    # When it is processed
    runner.runner.process_record(record(json.dumps(body)))

    # Then nothing is sent and the failed result says why
    assert runner.sender.sent == []
    [result] = runner.results.results
    assert result.status is MessageStatus.FAILED
    assert result.error == (
        "invalid email.send payload: at least one recipient (to, cc or bcc) is required"
    )
    assert result.error_code is FailureCode.INVALID_TASK


def test_unknown_kind_publishes_a_failed_result(runner: Runner) -> None:
    body = json.loads(make_task().to_message_body()) | {"kind": "sms.send"}
    runner.runner.process_record(record(json.dumps(body)))
    [result] = runner.results.results
    assert result.error is not None
    assert "no handler is registered for task kind 'sms.send'" in result.error
    assert result.error_code is FailureCode.INVALID_TASK
    assert runner.metric("TasksFailed") == [1.0]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("this is not JSON", "not a valid task: Invalid JSON"),
        (
            '{"hello": "world"}',
            "not a valid task: hello: Extra inputs are not permitted; task_id: Field required",
        ),
        ("", "not a valid task: Invalid JSON"),
    ],
)
def test_body_that_is_not_a_task_is_dead_lettered_at_once(
    runner: Runner, body: str, reason: str
) -> None:
    # When a record whose body is not a task is processed
    runner.runner.process_record(record(body, message_id="m-bad"))

    # Then it goes to the DLQ as it was, with the reason, and nothing else happens
    [letter] = runner.dead_letters.letters
    assert letter["body"] == body
    assert letter["source_message_id"] == "m-bad"
    assert letter["reason"].startswith(reason)
    assert runner.results.results == []
    assert runner.metric("TasksDeadLettered") == [1.0]


def test_dead_letter_failure_raises_so_the_record_is_not_lost(runner: Runner) -> None:
    # Given the DLQ cannot be reached
    def unavailable(body: str, **_: Any) -> None:
        raise TransientError("SQS SendMessage (dead letter) failed: ServiceUnavailable")

    runner.dead_letters.dead_letter = unavailable  # type: ignore[method-assign]

    # When a bad record is processed, Then it raises, so SQS keeps it for a retry
    with pytest.raises(TransientError):
        runner.runner.process_record(record("not JSON"))


def test_result_publish_failure_raises_so_the_record_is_retried(runner: Runner) -> None:
    def unavailable(result: object) -> None:
        raise TransientError("SQS SendMessage (result) failed: ServiceUnavailable")

    runner.results.publish = unavailable  # type: ignore[method-assign]
    with pytest.raises(TransientError):
        runner.runner.process_record(record(make_task().to_message_body()))
    # and the email went out once: a redelivery replays the stored result instead
    assert len(runner.sender.sent) == 1


def test_a_task_recorded_with_an_earlier_sender_is_sent_from_todays(runner: Runner) -> None:
    # Given a task scheduled before SENDER_EMAIL changed
    task = make_task(make_email(sender="someone@other.org"))

    # When it runs, Then it goes out from today's sender, and its result is sent
    runner.runner.process_record(record(task.to_message_body()))
    [result] = runner.results.results
    assert result.status is MessageStatus.SENT
    [(email, _)] = runner.sender.sent
    assert email.sender == "herald@example.com"


class ContextWithSecondsLeft:
    """A Lambda context whose invocation ends in ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


def test_no_pause_runs_into_the_invocations_last_seconds(runner: Runner) -> None:
    # Given an invocation with 8 s left, within the policy's 10 s reserve, and SES throttling
    runner.sender.errors.append(ThrottledError("SES SendEmail failed: Throttling"))
    event = {"Records": [record_event(make_task().to_message_body())]}

    # When the batch is handled
    response = runner.runner.handle_batch(event, ContextWithSecondsLeft(8))  # type: ignore[arg-type]

    # Then the runner did not pause: the task was deferred at once, and nothing is retried
    assert response == {"batchItemFailures": []}
    assert runner.pauses == []
    assert len(runner.requeue.copies) == 1
