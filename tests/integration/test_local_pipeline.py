"""The local pipeline: the template's queues and table in moto, and the SQS event source.

The queues are created from ``template.yaml`` exactly as ``herald-local run`` does, on a
local AWS endpoint of this module's own, so the event source is tested against the
template's redrive policy and ``maxReceiveCount``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser.models import SqsModel
from mypy_boto3_sqs import SQSClient

from herald_local.local_aws import LocalAwsEndpoint
from herald_local.pipeline_resources import LocalPipeline, create_pipeline_resources
from herald_local.sqs_event_source import EventSourceSettings, SqsEventSource
from herald_local.template import PipelineTemplate, read_pipeline_template
from tests.integration.conftest import REPO_ROOT

SENDER = "herald@example.com"


@dataclass
class Pipeline:
    template: PipelineTemplate
    local: LocalPipeline
    sqs: SQSClient


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    """The template's resources on a fresh local endpoint; failed tasks return after 1 s."""
    endpoint = LocalAwsEndpoint(0).start()
    clients: dict[str, Any] = {
        "endpoint_url": endpoint.url,
        "region_name": "us-east-1",
        "aws_access_key_id": "herald-local",
        "aws_secret_access_key": "herald-local",
    }
    sqs = boto3.client("sqs", **clients)
    sesv2 = boto3.client("sesv2", **clients)
    template = read_pipeline_template(REPO_ROOT / "template.yaml", {"SenderEmail": SENDER})
    local = create_pipeline_resources(
        template,
        sender_email=SENDER,
        visibility_timeout_override=1,
        sqs=sqs,
        dynamodb=boto3.client("dynamodb", **clients),
        sesv2=sesv2,
    )
    yield Pipeline(template, local, sqs)
    endpoint.stop()


def event_source(pipeline: Pipeline, handler: Any, log: list[str]) -> SqsEventSource:
    event = pipeline.template.task_runner.event
    settings = EventSourceSettings(
        queue_url=pipeline.local.task_queue_url,
        queue_arn=pipeline.local.task_queue_arn,
        region="us-east-1",
        batch_size=event.batch_size,
        batching_window_seconds=event.maximum_batching_window_seconds,
        report_batch_item_failures=event.report_batch_item_failures,
        function_name="herald-local-TaskRunnerFunction",
        function_timeout_seconds=pipeline.template.task_runner.timeout_seconds,
        memory_mb=pipeline.template.task_runner.memory_mb,
    )
    return SqsEventSource(settings, handler, pipeline.sqs, log=log.append)


def drain(sqs: SQSClient, url: str) -> list[str]:
    bodies = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_every_queue_and_table_property_of_the_template_is_reproduced_or_knowingly_left_out(
    pipeline: Pipeline,
) -> None:
    # Given the template's queues, as created locally
    local, sqs = pipeline.local, pipeline.sqs

    # Then nothing in the template was skipped without a reason
    assert local.warnings == ()
    # And each queue carries the template's settings (the task queue's visibility
    # timeout excepted: this module overrides it, as the tests of the system do)
    for queue in pipeline.template.queues:
        actual = sqs.get_queue_attributes(
            QueueUrl=local.queue_urls[queue.logical_id], AttributeNames=["All"]
        )["Attributes"]
        for name in ("MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds"):
            if name in queue.properties:
                assert actual[name] == str(queue.properties[name]), (queue.logical_id, name)
        if "RedrivePolicy" in queue.properties:
            redrive = json.loads(actual["RedrivePolicy"])
            assert (
                redrive["maxReceiveCount"] == queue.properties["RedrivePolicy"]["maxReceiveCount"]
            )
            dead_letter_id = queue.properties["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][
                0
            ]
            assert redrive["deadLetterTargetArn"].endswith(f"herald-local-{dead_letter_id}")
    # And the task runner gets the template's environment, resolved to the local resources
    environment = local.function_environment
    assert environment["RESULT_QUEUE_URL"] == local.queue_urls["ResultQueue"]
    assert environment["TASK_DLQ_URL"] == local.task_dead_letter_queue_url
    assert environment["IDEMPOTENCY_TABLE"] == local.table_names["IdempotencyTable"]
    assert environment["SENDER_EMAIL"] == SENDER


def test_the_handler_gets_a_real_sqs_event_and_done_records_are_deleted(
    pipeline: Pipeline,
) -> None:
    # Given a task with a message attribute on the task queue
    sqs, url = pipeline.sqs, pipeline.local.task_queue_url
    sqs.send_message(
        QueueUrl=url,
        MessageBody='{"hello": 1}',
        MessageAttributes={"trace": {"DataType": "String", "StringValue": "abc"}},
    )
    events: list[dict[str, Any]] = []
    log: list[str] = []
    source = event_source(pipeline, lambda event, _: events.append(event) or {}, log)  # type: ignore[func-returns-value]

    # When the event source polls once and invokes the handler
    source.invoke(source.gather_batch(threading.Event()))

    # Then the event is what Lambda sends, which Powertools' own model accepts
    [record] = SqsModel.model_validate(events[0]).Records
    assert record.body == '{"hello": 1}'
    assert record.eventSource == "aws:sqs"
    assert record.eventSourceARN == pipeline.local.task_queue_arn
    assert record.attributes.ApproximateReceiveCount == "1"
    assert record.messageAttributes["trace"].stringValue == "abc"
    assert record.md5OfBody
    # And the record was deleted
    assert drain(sqs, url) == []
    assert log == ["invocation 1: 1 record(s), receive counts [1] -> 1 done, 0 back to the queue"
                   f" ({log[0].rsplit('(', 1)[1]}"]  # fmt: skip


def test_a_failed_record_comes_back_until_max_receive_count_then_lands_in_the_dlq(
    pipeline: Pipeline,
) -> None:
    # Given a batch with a good task and one the handler always reports as failed
    sqs, url = pipeline.sqs, pipeline.local.task_queue_url
    sqs.send_message(QueueUrl=url, MessageBody="good")
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    deliveries: dict[str, list[str]] = {"good": [], "poison": []}

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        for record in event["Records"]:
            deliveries[record["body"]].append(record["attributes"]["ApproximateReceiveCount"])
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]}
                for r in event["Records"]
                if r["body"] == "poison"
            ]
        }

    source = event_source(pipeline, handler, [])
    stop = threading.Event()

    # When the event source runs until the poison task is in the dead-letter queue
    dead_letters: list[str] = []

    def run_until_dead_lettered() -> None:
        while not dead_letters:
            if batch := source.gather_batch(stop):
                source.invoke(batch)
            dead_letters.extend(drain(sqs, pipeline.local.task_dead_letter_queue_url))

    worker = threading.Thread(target=run_until_dead_lettered, daemon=True)
    worker.start()
    worker.join(timeout=30)
    stop.set()

    # Then the good task was delivered once and deleted; the poison one came back on
    # every receive up to the template's maxReceiveCount (5), then SQS moved it
    assert dead_letters == ["poison"]
    assert deliveries == {"good": ["1"], "poison": ["1", "2", "3", "4", "5"]}
    assert drain(sqs, url) == []


def test_a_handler_error_or_an_unknown_item_identifier_fails_the_whole_batch(
    pipeline: Pipeline,
) -> None:
    # Given two tasks, and a handler that raises
    sqs, url = pipeline.sqs, pipeline.local.task_queue_url
    for body in ("one", "two"):
        sqs.send_message(QueueUrl=url, MessageBody=body)

    def raising(event: dict[str, Any], _: Any) -> None:
        raise RuntimeError("boom")

    log: list[str] = []
    source = event_source(pipeline, raising, log)
    batch = source.gather_batch(threading.Event())
    while len(batch) < 2:
        batch += source.gather_batch(threading.Event())

    # When it is invoked, Then nothing is deleted
    outcome = source.invoke(batch)
    assert (outcome.deleted, outcome.to_retry) == (0, 2)
    assert "whole batch failed: RuntimeError: boom" in log[-1]

    # Given the same tasks back, and a handler naming a record that is not in the batch
    source = event_source(
        pipeline, lambda event, _: {"batchItemFailures": [{"itemIdentifier": "nope"}]}, log
    )
    batch = []
    while len(batch) < 2:
        batch += source.gather_batch(threading.Event())

    # When it is invoked, Then again nothing is deleted, as Lambda does
    outcome = source.invoke(batch)
    assert (outcome.deleted, outcome.to_retry) == (0, 2)
    assert "invalid itemIdentifier 'nope'" in log[-1]
    drain(sqs, url)
