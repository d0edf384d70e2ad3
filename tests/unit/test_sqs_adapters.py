"""SQS adapters: batching in tens, retrying only failed entries, results and dead letters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber
from moto import mock_aws
from mypy_boto3_sqs import SQSClient

from shared.adapters.sqs import (
    DEAD_LETTER_REASON_ATTRIBUTE,
    SOURCE_MESSAGE_ID_ATTRIBUTE,
    SqsDeadLetterSink,
    SqsResultPublisher,
    SqsTaskProducer,
)
from shared.adapters.sqs_receiver import SqsReceiver, SqsResultReceiver
from shared.contracts import SQS_MAX_MESSAGE_BYTES, AnyTask, TaskResult
from shared.errors import TaskBatchSendError, TransientError
from tests.support.fakes import NOW, make_email, make_task
from tests.support.queues import drain

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/herald-tasks"


@pytest.fixture
def sqs() -> Iterator[SQSClient]:
    with mock_aws():
        yield boto3.client("sqs")


def test_producer_queues_every_task_in_batches_of_ten(sqs: SQSClient) -> None:
    # Given 25 tasks and a counting SQS client
    queue_url = sqs.create_queue(QueueName="herald-tasks")["QueueUrl"]
    calls: list[int] = []
    sqs.meta.events.register(
        "before-call.sqs.SendMessageBatch",
        lambda params, **_: calls.append(len(json.loads(params["body"])["Entries"])),
    )
    tasks = [make_task() for _ in range(25)]

    # When they are sent
    SqsTaskProducer(sqs, queue_url).send(tasks)

    # Then three calls of 10, 10 and 5 put every task on the queue as its JSON body
    assert calls == [10, 10, 5]
    bodies = [AnyTask.model_validate_json(m["Body"]) for m in drain(sqs, queue_url)]
    assert sorted(str(b.task_id) for b in bodies) == sorted(str(t.task_id) for t in tasks)


def test_producer_keeps_each_batch_within_sqs_total_size(sqs: SQSClient) -> None:
    # Given ten tasks of about 60 KB each: one batch of ten would be 600 KB, and SQS
    # refuses a whole batch over 256 KiB
    queue_url = sqs.create_queue(QueueName="herald-tasks")["QueueUrl"]
    batches: list[list[dict[str, Any]]] = []
    sqs.meta.events.register(
        "before-call.sqs.SendMessageBatch",
        lambda params, **_: batches.append(json.loads(params["body"])["Entries"]),
    )
    tasks = [make_task(make_email(text="x" * 60_000)) for _ in range(10)]

    # When they are sent
    SqsTaskProducer(sqs, queue_url).send(tasks)

    # Then they went in several batches, none over the limit, and every task is queued
    assert len(batches) > 1
    for batch in batches:
        assert sum(len(entry["MessageBody"].encode()) for entry in batch) <= SQS_MAX_MESSAGE_BYTES
    assert sorted(len(batch) for batch in batches) == [2, 4, 4]
    bodies = [AnyTask.model_validate_json(m["Body"]) for m in drain(sqs, queue_url)]
    assert sorted(str(b.task_id) for b in bodies) == sorted(str(t.task_id) for t in tasks)


def stubbed_sqs() -> tuple[SQSClient, Stubber]:
    client = boto3.client("sqs")
    return client, Stubber(client)


def entries(*tasks: Any) -> list[dict[str, str]]:
    return [{"Id": str(t.task_id), "MessageBody": t.to_message_body()} for t in tasks]


def test_producer_retries_only_the_entries_that_failed() -> None:
    # Given SQS fails one entry of three, then accepts it on the retry
    client, stub = stubbed_sqs()
    first, second, third = make_task(), make_task(), make_task()
    stub.add_response(
        "send_message_batch",
        {
            "Successful": [
                {"Id": str(t.task_id), "MessageId": "m", "MD5OfMessageBody": "x"}
                for t in (first, third)
            ],
            "Failed": [{"Id": str(second.task_id), "SenderFault": False, "Code": "InternalError"}],
        },
        {"QueueUrl": QUEUE_URL, "Entries": entries(first, second, third)},
    )
    stub.add_response(
        "send_message_batch",
        {
            "Successful": [{"Id": str(second.task_id), "MessageId": "m", "MD5OfMessageBody": "x"}],
            "Failed": [],
        },
        {"QueueUrl": QUEUE_URL, "Entries": entries(second)},  # only the failed one
    )
    pauses: list[float] = []

    # When the batch is sent
    with stub:
        SqsTaskProducer(client, QUEUE_URL, sleep=pauses.append).send([first, second, third])

    # Then both calls happened as expected, with one back-off pause
    stub.assert_no_pending_responses()
    assert pauses == [0.1]


def test_producer_names_the_entries_that_still_failed() -> None:
    # Given SQS keeps failing one entry and refuses another for the sender's fault
    client, stub = stubbed_sqs()
    ok, flaky, bad = make_task(), make_task(), make_task()
    stub.add_response(
        "send_message_batch",
        {
            "Successful": [{"Id": str(ok.task_id), "MessageId": "m", "MD5OfMessageBody": "x"}],
            "Failed": [
                {
                    "Id": str(flaky.task_id),
                    "SenderFault": False,
                    "Code": "InternalError",
                    "Message": "try again",
                },
                {"Id": str(bad.task_id), "SenderFault": True, "Code": "InvalidMessageContents"},
            ],
        },
        {"QueueUrl": QUEUE_URL, "Entries": entries(ok, flaky, bad)},
    )
    for _ in range(2):  # the sender's-fault entry is never sent again
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [],
                "Failed": [
                    {
                        "Id": str(flaky.task_id),
                        "SenderFault": False,
                        "Code": "InternalError",
                        "Message": "try again",
                    }
                ],
            },
            {"QueueUrl": QUEUE_URL, "Entries": entries(flaky)},
        )
    pauses: list[float] = []

    # When the batch is sent
    with stub, pytest.raises(TaskBatchSendError) as caught:
        SqsTaskProducer(client, QUEUE_URL, max_attempts=3, sleep=pauses.append).send(
            [ok, flaky, bad]
        )

    # Then the error names exactly the two that failed, with their reasons, and the one sent
    assert caught.value.failed == {
        flaky.task_id: "InternalError: try again",
        bad.task_id: "InvalidMessageContents",
    }
    assert caught.value.sent == (ok.task_id,)
    # And only the sender's-fault one is refused for what it is (sending it again cannot help)
    assert caught.value.refused == {bad.task_id}
    assert str(flaky.task_id) in str(caught.value)
    assert pauses == [0.1, 0.2]
    stub.assert_no_pending_responses()


def test_producer_reports_every_task_when_sqs_is_down() -> None:
    # Given SQS answers the call with an outage (botocore's own retries, done, included)
    client, stub = stubbed_sqs()
    tasks = [make_task(), make_task()]
    stub.add_client_error("send_message_batch", "ServiceUnavailable", "down", 503)

    # When the batch is sent, Then every task is named as not queued
    with stub, pytest.raises(TaskBatchSendError) as caught:
        SqsTaskProducer(client, QUEUE_URL, sleep=lambda _: None).send(tasks)
    assert set(caught.value.failed) == {t.task_id for t in tasks}
    assert all("ServiceUnavailable" in reason for reason in caught.value.failed.values())
    assert caught.value.sent == ()
    # And the producer did not send the failed call again
    stub.assert_no_pending_responses()


def test_producer_leaves_retrying_a_failed_call_to_botocore(sqs: SQSClient) -> None:
    # Given SQS cannot be reached, by a client whose botocore retry mode makes two
    # attempts a call
    queue_url = sqs.create_queue(QueueName="herald-tasks")["QueueUrl"]
    client = boto3.client(
        "sqs", config=Config(retries={"mode": "standard", "total_max_attempts": 2})
    )
    requests: list[str] = []

    def unreachable(request: AWSPreparedRequest, **_: object) -> None:
        requests.append(request.url)
        raise EndpointConnectionError(endpoint_url=request.url)

    client.meta.events.register_first("before-send.sqs.SendMessageBatch", unreachable)
    tasks = [make_task(), make_task()]
    pauses: list[float] = []

    # When the batch is sent
    with pytest.raises(TaskBatchSendError) as caught:
        SqsTaskProducer(client, queue_url, sleep=pauses.append).send(tasks)

    # Then the request went out only as often as botocore tried it, with no pause of the
    # producer's own, and every task is named as not queued
    assert len(requests) == 2
    assert pauses == []
    assert set(caught.value.failed) == {t.task_id for t in tasks}


def test_producer_does_not_retry_a_request_sqs_calls_invalid() -> None:
    client, stub = stubbed_sqs()
    stub.add_client_error("send_message_batch", "InvalidParameterValue", "bad queue url", 400)
    with stub, pytest.raises(TaskBatchSendError, match="InvalidParameterValue"):
        SqsTaskProducer(client, QUEUE_URL, sleep=lambda _: None).send([make_task()])
    stub.assert_no_pending_responses()


def test_producer_refuses_the_same_task_twice_in_one_batch() -> None:
    task = make_task()
    with pytest.raises(ValueError, match="same task_id twice"):
        SqsTaskProducer(boto3.client("sqs"), QUEUE_URL).send([task, task])


def test_result_publisher_puts_the_result_json_on_the_result_queue(sqs: SQSClient) -> None:
    queue_url = sqs.create_queue(QueueName="herald-results")["QueueUrl"]
    result = TaskResult.sent(make_task().task_id, "ses-1", NOW)

    SqsResultPublisher(sqs, queue_url).publish(result)

    [message] = drain(sqs, queue_url)
    assert TaskResult.model_validate_json(message["Body"]) == result


def test_result_publisher_raises_a_herald_error_when_the_queue_is_missing(sqs: SQSClient) -> None:
    publisher = SqsResultPublisher(sqs, f"{QUEUE_URL}-missing")
    with pytest.raises(TransientError, match="SQS SendMessage \\(result\\) failed"):
        publisher.publish(TaskResult.sent(make_task().task_id, "ses-1", NOW))


def test_result_receiver_parses_results_and_says_why_a_body_is_not_one(sqs: SQSClient) -> None:
    # Given a result and a body that is not one on the result queue
    queue_url = sqs.create_queue(QueueName="herald-results")["QueueUrl"]
    result = TaskResult.sent(make_task().task_id, "ses-1", NOW)
    SqsResultPublisher(sqs, queue_url).publish(result)
    sqs.send_message(QueueUrl=queue_url, MessageBody='{"task_id": "nope"}')

    # When they are received
    received = SqsResultReceiver(sqs, queue_url, wait_seconds=0).receive()

    # Then the result is parsed, and the other names its problem
    by_kind = {message.parsed is None: message for message in received}
    assert by_kind[False].parsed == result
    assert "task_id" in str(by_kind[True].problem)
    assert all(message.receipt_handle and message.message_id for message in received)


def test_result_receiver_deletes_only_the_handles_it_is_given(sqs: SQSClient) -> None:
    # Given two results received
    queue_url = sqs.create_queue(QueueName="herald-results", Attributes={"VisibilityTimeout": "0"})[
        "QueueUrl"
    ]
    publisher = SqsResultPublisher(sqs, queue_url)
    kept, deleted = (TaskResult.sent(make_task().task_id, "ses-1", NOW) for _ in range(2))
    publisher.publish(kept)
    publisher.publish(deleted)
    receiver = SqsResultReceiver(sqs, queue_url, wait_seconds=0)
    handles = {m.parsed: m.receipt_handle for m in receiver.receive()}

    # When one of them is deleted
    not_deleted = receiver.delete([handles[deleted]])

    # Then only the other is still on the queue
    assert not_deleted == 0
    assert [TaskResult.model_validate_json(m["Body"]) for m in drain(sqs, queue_url)] == [kept]


def test_result_receiver_raises_a_herald_error_when_the_queue_is_missing(sqs: SQSClient) -> None:
    receiver = SqsResultReceiver(sqs, f"{QUEUE_URL}-missing", wait_seconds=0)
    with pytest.raises(TransientError, match="SQS ReceiveMessage \\(results\\) failed"):
        receiver.receive()


def test_a_receiver_deletes_more_than_ten_handles_in_batches_of_ten(sqs: SQSClient) -> None:
    # Given 12 messages received on a queue of plain text bodies
    queue_url = sqs.create_queue(QueueName="herald-text")["QueueUrl"]
    for n in range(12):
        sqs.send_message(QueueUrl=queue_url, MessageBody=f"body {n}")
    receiver = SqsReceiver(sqs, queue_url, wait_seconds=0, parse=str.upper, what="text")
    received = receiver.receive() + receiver.receive()
    assert len(received) == 12

    # When every handle is deleted at once
    not_deleted = receiver.delete([m.receipt_handle for m in received])

    # Then SQS deleted them all, and each body had been parsed by the receiver's parser
    assert not_deleted == 0
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }
    assert sorted(str(m.parsed) for m in received) == sorted(f"BODY {n}" for n in range(12))


def test_dead_letter_sink_keeps_the_body_and_says_why(sqs: SQSClient) -> None:
    queue_url = sqs.create_queue(QueueName="herald-tasks-dlq")["QueueUrl"]

    SqsDeadLetterSink(sqs, queue_url).dead_letter(
        "not JSON", reason="not a valid task", source_message_id="m-1"
    )

    [message] = drain(sqs, queue_url)
    assert message["Body"] == "not JSON"
    attributes = message["MessageAttributes"]
    assert attributes[DEAD_LETTER_REASON_ATTRIBUTE]["StringValue"] == "not a valid task"
    assert attributes[SOURCE_MESSAGE_ID_ATTRIBUTE]["StringValue"] == "m-1"
