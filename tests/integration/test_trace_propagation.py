"""One email is one trace: a real api request, the relay, moto's SQS, and the real handler.

Datadog is switched on (``DD_TRACE_ENABLED=true``) with ddtrace's FastAPI integration
and its real tracer, whose finished spans a trace processor keeps in memory and drops:
no agent, nothing sent. ``datadog_lambda`` comes from the Datadog layer in AWS; here a
stand-in does what it does for SQS, an ``aws.lambda`` span in the first record's trace.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import ddtrace
import pytest
from aws_lambda_powertools import Logger, Metrics
from ddtrace.propagation.http import HTTPPropagator
from ddtrace.trace import Span, tracer
from fastapi.testclient import TestClient
from mypy_boto3_sqs import SQSClient
from mypy_boto3_sqs.type_defs import MessageTypeDef
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service.api.app import create_app
from ecs_service.db.models import Message
from ecs_service.settings import ApiSettings, DatabaseSettings
from ecs_service.worker.relay import Relay
from herald_local.pipeline_resources import LocalPipeline
from herald_local.sqs_event_source import sqs_event
from shared.adapters.sqs import SqsTaskProducer
from shared.contracts import TaskResult
from shared.observability import logger
from shared.tracing import TRACE_CONTEXT_ATTRIBUTE, DatadogTracing, TraceIdsLogFilter
from tests.integration.conftest import SENDER, Caller, drain
from tests.support.lambdas import LambdaContext, LogCapture
from tests.support.pipeline import template_pipeline
from tests.support.tracing import SpanRecorder, chain_reaches

HANDLER_PATH = "src/handlers/task_runner.py"


@dataclass
class Datadog:
    tracing: DatadogTracing
    spans: SpanRecorder


@pytest.fixture
def datadog(monkeypatch: pytest.MonkeyPatch) -> Iterator[Datadog]:
    """Datadog on: the FastAPI integration patched, spans recorded, nothing sent."""
    from ddtrace.contrib.internal.fastapi.patch import unpatch

    monkeypatch.setenv("DD_TRACE_ENABLED", "true")
    recorder = SpanRecorder()
    tracer.configure(trace_processors=[recorder])
    ddtrace.patch(fastapi=True)
    try:
        yield Datadog(DatadogTracing(tracer), recorder)
    finally:
        unpatch()
        tracer.configure(trace_processors=[])


def lambda_wrapper_stand_in(handler: Callable[..., Any]) -> Callable[..., Any]:
    """What datadog_lambda's wrapper does with an SQS batch: one invocation span, in the
    trace of the first record's ``_datadog`` context."""

    def wrapped(event: dict[str, Any], context: Any) -> Any:
        first = event["Records"][0]["messageAttributes"].get(TRACE_CONTEXT_ATTRIBUTE, {})
        parent = HTTPPropagator.extract(json.loads(first.get("stringValue", "{}")))  # type: ignore[no-untyped-call]
        with tracer.start_span("aws.lambda", child_of=parent, activate=True):
            return handler(event, context)

    return wrapped


@dataclass
class TaskRunnerFunction:
    module: types.ModuleType
    task_queue_url: str
    task_queue_arn: str
    result_queue_url: str
    logs: LogCapture

    def invoke(self, messages: list[MessageTypeDef]) -> dict[str, Any]:
        event = sqs_event(messages, self.task_queue_arn, "us-east-1")
        return self.invoke_event(event)

    def invoke_event(self, event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.module.lambda_handler(event, LambdaContext())
        return response


@pytest.fixture
def pipeline(sqs: SQSClient) -> Iterator[LocalPipeline]:
    """The template's queues and idempotency table, new for this test, on the moto server."""
    with template_pipeline(f"trace-{uuid4().hex[:12]}") as made:
        yield made


@pytest.fixture
def task_runner_function(
    datadog: Datadog, pipeline: LocalPipeline, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TaskRunnerFunction]:
    """The real handler module with Datadog on, on the moto server, loaded as its own module.

    Loaded under another name, so ``handlers.task_runner`` (Datadog off) stays as it was
    for every other test.
    """
    task_queue_url, task_queue_arn = pipeline.task_queue_url, pipeline.task_queue_arn
    result_queue_url = pipeline.result_queue_url
    for name, value in {
        "RESULT_QUEUE_URL": result_queue_url,
        "TASK_DLQ_URL": pipeline.task_dead_letter_queue_url,
        "IDEMPOTENCY_TABLE": pipeline.table_names["IdempotencyTable"],
        "SENDER_EMAIL": SENDER,
    }.items():
        monkeypatch.setenv(name, value)
    wrapper = types.ModuleType("datadog_lambda.wrapper")
    wrapper.datadog_lambda_wrapper = lambda_wrapper_stand_in  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datadog_lambda", types.ModuleType("datadog_lambda"))
    monkeypatch.setitem(sys.modules, "datadog_lambda.wrapper", wrapper)

    spec = importlib.util.spec_from_file_location("herald_traced_task_runner", HANDLER_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logs = LogCapture()
    logger.addHandler(logs)
    try:
        yield TaskRunnerFunction(module, task_queue_url, task_queue_arn, result_queue_url, logs)
    finally:
        logger.removeHandler(logs)
        for log_filter in list(logger.filters):
            if isinstance(log_filter, TraceIdsLogFilter):
                logger.removeFilter(log_filter)


def create_message(client: TestClient, caller: Caller, subject: str) -> str:
    response = client.post(
        "/v1/messages",
        json={"to": ["reader@example.org"], "subject": subject, "text": "Hello"},
        headers=caller.headers,
    )
    assert response.status_code == 201, response.text
    message_id: str = response.json()["id"]
    return message_id


def relay_all(engine: Engine, datadog: Datadog, queue_url: str, sqs: SQSClient) -> None:
    relay = Relay(
        engine,
        SqsTaskProducer(sqs, queue_url),
        claim_size=10,
        logger=Logger(service="relay-test"),
        metrics=Metrics(namespace="HeraldTests"),
        tracing=datadog.tracing,
    )
    while relay.relay_due_messages().claimed:
        pass


def receive(sqs: SQSClient, queue_url: str, count: int) -> list[MessageTypeDef]:
    messages: list[MessageTypeDef] = []
    while len(messages) < count:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        assert batch, f"expected {count} messages, got {len(messages)}"
        messages.extend(batch)
    return messages


def request_spans(datadog: Datadog) -> list[Span]:
    return [s for s in datadog.spans.named("fastapi.request") if s.parent_id is None]


def task_id_of(message: MessageTypeDef) -> str:
    task_id: str = json.loads(message["Body"])["task_id"]
    return task_id


def test_one_email_is_one_trace_from_the_api_request_to_the_task_runner(
    datadog: Datadog,
    task_runner_function: TaskRunnerFunction,
    database_settings: DatabaseSettings,
    engine: Engine,
    caller: Caller,
    sqs: SQSClient,
) -> None:
    # Given an email scheduled through the api, Datadog on
    app = create_app(ApiSettings(SENDER_EMAIL=SENDER), database_settings, tracing=datadog.tracing)
    with TestClient(app) as client:
        message_id = create_message(client, caller, "Traced")
    [request] = request_spans(datadog)
    with Session(engine) as session:
        stored = session.scalar(select(Message.trace_context).where(Message.id == message_id))
    assert stored is not None
    assert HTTPPropagator.extract(stored).trace_id == request.trace_id  # type: ignore[no-untyped-call]

    # When the relay sends it
    relay_all(engine, datadog, task_runner_function.task_queue_url, sqs)

    # Then the SQS message carries _datadog in the request's trace, from a herald.relay span
    [message] = receive(sqs, task_runner_function.task_queue_url, 1)
    attribute = message["MessageAttributes"][TRACE_CONTEXT_ATTRIBUTE]
    assert attribute["DataType"] == "String"
    carrier = json.loads(attribute["StringValue"])
    assert HTTPPropagator.extract(carrier).trace_id == request.trace_id  # type: ignore[no-untyped-call]
    [relay_span] = datadog.spans.named("herald.relay")
    assert carrier["x-datadog-parent-id"] == str(relay_span.span_id)
    assert relay_span.trace_id == request.trace_id
    assert chain_reaches(datadog.spans.spans, relay_span, request.span_id)

    # When the task runner runs on that record
    response = task_runner_function.invoke([message])

    # Then the email is sent, inside a herald.task span whose parents reach the request
    assert response == {"batchItemFailures": []}
    [result] = [
        TaskResult.model_validate_json(m["Body"])
        for m in drain(sqs, task_runner_function.result_queue_url)
    ]
    assert (str(result.task_id), result.status.value) == (message_id, "sent")
    [task_span] = datadog.spans.named("herald.task")
    assert task_span.trace_id == request.trace_id
    assert task_span.parent_id == relay_span.span_id
    assert chain_reaches(datadog.spans.spans, task_span, request.span_id)
    assert task_span.resource == "email.send"
    assert task_span.get_tag("herald.task_id") == message_id
    assert task_span.get_tag("herald.tenant_id") == str(caller.tenant_id)
    # and its JSON log lines carry the request's trace id and the task span's id
    request_trace_id = tracer.get_log_correlation_context(request)["dd.trace_id"]
    task_lines = [
        line for line in task_runner_function.logs.lines if line.get("task_id") == message_id
    ]
    assert task_lines
    for line in task_lines:
        assert line["dd.trace_id"] == request_trace_id
        assert line["dd.span_id"] == str(task_span.span_id)


def test_each_record_of_a_batch_continues_its_own_emails_trace(
    datadog: Datadog,
    task_runner_function: TaskRunnerFunction,
    database_settings: DatabaseSettings,
    engine: Engine,
    caller: Caller,
    sqs: SQSClient,
) -> None:
    # Given three emails from three requests, relayed: three traces
    app = create_app(ApiSettings(SENDER_EMAIL=SENDER), database_settings, tracing=datadog.tracing)
    with TestClient(app) as client:
        ids = [create_message(client, caller, f"Email {n}") for n in range(3)]
    relay_all(engine, datadog, task_runner_function.task_queue_url, sqs)
    messages = sorted(
        receive(sqs, task_runner_function.task_queue_url, 3), key=lambda m: ids.index(task_id_of(m))
    )
    trace_of = {
        task_id_of(m): HTTPPropagator.extract(  # type: ignore[no-untyped-call]
            json.loads(m["MessageAttributes"][TRACE_CONTEXT_ATTRIBUTE]["StringValue"])
        ).trace_id
        for m in messages
    }
    assert len(set(trace_of.values())) == 3

    # When they arrive in one batch, the third record's context garbled on the way
    event = sqs_event(messages, task_runner_function.task_queue_arn, "us-east-1")
    event["Records"][2]["messageAttributes"][TRACE_CONTEXT_ATTRIBUTE]["stringValue"] = "{not json"
    response = task_runner_function.invoke_event(event)

    # Then all three are sent
    assert response == {"batchItemFailures": []}
    results = [
        TaskResult.model_validate_json(m["Body"])
        for m in drain(sqs, task_runner_function.result_queue_url)
    ]
    assert sorted((str(r.task_id), r.status.value) for r in results) == sorted(
        (i, "sent") for i in ids
    )
    # and the invocation's span is in the first record's trace, as datadog_lambda does,
    [invocation] = datadog.spans.named("aws.lambda")
    assert invocation.trace_id == trace_of[ids[0]]
    # but each task's span is in its own email's trace, the garbled one in a new trace
    task_spans = {
        span.get_tag("herald.task_id"): span for span in datadog.spans.named("herald.task")
    }
    assert task_spans[ids[0]].trace_id == trace_of[ids[0]]
    assert task_spans[ids[1]].trace_id == trace_of[ids[1]]
    assert task_spans[ids[2]].trace_id not in set(trace_of.values())
    assert task_spans[ids[2]].parent_id is None
    # and each record's log lines carry its own trace
    for task_id in ids[:2]:
        expected = tracer.get_log_correlation_context(task_spans[task_id])["dd.trace_id"]
        lines = [line for line in task_runner_function.logs.lines if line.get("task_id") == task_id]
        assert lines
        assert {line["dd.trace_id"] for line in lines} == {expected}
