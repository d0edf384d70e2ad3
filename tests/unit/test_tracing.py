"""The tracing seam: Datadog (switched by DD_TRACE_ENABLED, real ddtrace spans, no agent)
and the task runner's X-Ray subsegments (sent to an in-memory daemon).

Spans are kept in memory by a trace processor that also drops them, so nothing ever
reaches the tracer's writer (and the network, which unit tests block anyway).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.config import Config
from botocore.exceptions import ClientError
from ddtrace.propagation.http import HTTPPropagator
from ddtrace.trace import tracer
from moto import mock_aws
from pydantic import ValidationError

from shared.adapters.sqs import SqsTaskProducer
from shared.contracts import SQS_MAX_MESSAGE_BYTES, EmailPayload, TaskEnvelope
from shared.tracing import (
    MAX_TRACE_CONTEXT_BYTES,
    NO_TRACING,
    TRACE_CONTEXT_ATTRIBUTE,
    DatadogTracing,
    TracingUnavailableError,
    XRayTracing,
    build_lambda_tracing,
    build_tracing,
    datadog_enabled,
    decode_trace_context,
    encode_trace_context,
    xray_daemon,
)
from tests.conftest import REPO_ROOT
from tests.support.tracing import SpanRecorder


@pytest.fixture
def recorder() -> Iterator[SpanRecorder]:
    """ddtrace's global tracer, its finished spans recorded in memory instead of sent."""
    recording = SpanRecorder()
    tracer.configure(trace_processors=[recording])
    try:
        yield recording
    finally:
        tracer.configure(trace_processors=[])


# DD_TRACE_ENABLED


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("true", True), ("TRUE", True), ("1", True), ("false", False), ("False", False), ("0", False)],
)
def test_dd_trace_enabled_reads_true_and_false(
    monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool
) -> None:
    monkeypatch.setenv("DD_TRACE_ENABLED", value)

    assert datadog_enabled() is enabled


def test_datadog_is_off_when_dd_trace_enabled_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DD_TRACE_ENABLED", raising=False)

    assert datadog_enabled() is False
    assert build_tracing(datadog_enabled()) is NO_TRACING


def test_a_garbage_dd_trace_enabled_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DD_TRACE_ENABLED", "yes please")

    with pytest.raises(ValidationError, match=r"DD_TRACE_ENABLED[\s\S]*'true' or 'false'"):
        datadog_enabled()


def test_with_datadog_off_the_handler_and_the_service_never_import_ddtrace() -> None:
    # Given a fresh interpreter with Datadog off (pytest itself loads ddtrace's plugin)
    code = (
        "import sys\n"
        "import handlers.task_runner, ecs_service.cli, ecs_service.api.app\n"
        "import ecs_service.worker.process\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ddtrace', 'datadog_lambda')))"
    )
    env = {
        **os.environ,
        "DD_TRACE_ENABLED": "false",
        "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{REPO_ROOT}",
        "RESULT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/herald-results",
        "TASK_DLQ_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/herald-tasks-dlq",
        "IDEMPOTENCY_TABLE": "herald-idempotency",
        "SENDER_EMAIL": "herald@example.com",
    }

    # When the Lambda handler and the container's modules are imported
    imported = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )

    # Then neither ddtrace nor datadog_lambda was
    assert imported.stdout.strip() == "[]"


# The no-op tracing


def test_no_tracing_carries_nothing_and_runs_the_block() -> None:
    ran = []

    with NO_TRACING.start_span("herald.task", {"x-datadog-trace-id": "1"}, resource="r", tags={}):
        ran.append(True)

    assert ran == [True]
    assert NO_TRACING.inject_context() is None

    def handler() -> None: ...

    assert NO_TRACING.wrap_lambda_handler(handler) is handler


# Carriers


def test_a_carrier_round_trips_through_the_attribute_value() -> None:
    carrier = {"x-datadog-trace-id": "123", "x-datadog-parent-id": "456"}

    encoded = encode_trace_context(carrier)

    assert encoded is not None
    assert decode_trace_context(encoded) == carrier


def test_a_carrier_larger_than_the_cap_is_dropped() -> None:
    carrier = {"x-datadog-tags": "x" * MAX_TRACE_CONTEXT_BYTES}

    assert encode_trace_context(carrier) is None


@pytest.mark.parametrize(
    "value", [None, "", "not json", "[1, 2]", '{"x-datadog-trace-id": 1}', "{}", "null"]
)
def test_a_missing_or_malformed_attribute_value_gives_no_carrier(value: str | None) -> None:
    assert decode_trace_context(value) is None


# Real ddtrace spans


def test_a_span_is_a_child_of_the_carried_context(recorder: SpanRecorder) -> None:
    # Given the context of a span in another process
    tracing = DatadogTracing(tracer)
    with tracer.trace("api.request") as upstream:
        carrier = tracing.inject_context()
    assert carrier is not None

    # When a span starts from that carrier
    with tracing.start_span(
        "herald.task", carrier, resource="email.send", tags={"herald.task_id": "t1"}
    ):
        pass

    # Then it is in the upstream trace, a child of the upstream span, with its tags
    [span] = recorder.named("herald.task")
    assert (span.trace_id, span.parent_id) == (upstream.trace_id, upstream.span_id)
    assert span.resource == "email.send"
    assert span.get_tag("herald.task_id") == "t1"


@pytest.mark.parametrize(
    "carrier", [None, {}, {"x-datadog-trace-id": "garbage", "x-datadog-parent-id": "also"}]
)
def test_without_a_usable_context_a_span_starts_a_new_trace(
    recorder: SpanRecorder, carrier: dict[str, str] | None
) -> None:
    tracing = DatadogTracing(tracer)

    with tracing.start_span("herald.task", carrier, resource="email.send", tags={}):
        pass

    [span] = recorder.named("herald.task")
    assert span.parent_id is None
    assert span.trace_id


def test_the_span_active_before_is_active_again_after(recorder: SpanRecorder) -> None:
    # Given an invocation span is active and a record carries another trace's context
    tracing = DatadogTracing(tracer)
    with tracer.trace("other.request") as other:
        carrier = tracing.inject_context()
    with tracer.trace("aws.lambda") as invocation:
        # When the record's span runs
        with tracing.start_span("herald.task", carrier, resource="email.send", tags={}):
            inner = tracer.current_span()
        # Then inside, the record's span was active; after, the invocation's is again
        assert inner is not None
        assert inner.trace_id == other.trace_id
        assert tracer.current_span() is invocation


def test_an_error_in_the_block_marks_the_span_and_is_raised(recorder: SpanRecorder) -> None:
    tracing = DatadogTracing(tracer)

    with (
        pytest.raises(RuntimeError, match="boom"),
        tracing.start_span("herald.task", None, resource="email.send", tags={}),
    ):
        raise RuntimeError("boom")

    [span] = recorder.named("herald.task")
    assert span.error == 1


def test_no_context_is_injected_without_an_active_span(recorder: SpanRecorder) -> None:
    assert DatadogTracing(tracer).inject_context() is None


def test_injected_context_is_datadog_headers_the_lambda_library_reads(
    recorder: SpanRecorder,
) -> None:
    tracing = DatadogTracing(tracer)

    with tracer.trace("api.request") as span:
        carrier = tracing.inject_context()

    assert carrier is not None
    assert carrier["x-datadog-parent-id"] == str(span.span_id)
    assert HTTPPropagator.extract(carrier).trace_id == span.trace_id  # type: ignore[no-untyped-call]


def test_log_lines_carry_trace_and_span_ids_while_a_span_is_active(
    recorder: SpanRecorder,
) -> None:
    # Given a Powertools logger correlated with the tracer
    logger = Logger(service="tracing-test")
    lines: list[dict[str, Any]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(logger.registered_formatter.format(record)))

    logger.addHandler(Capture())
    log_filter = DatadogTracing(tracer).correlate_logs(logger)
    try:
        # When it logs inside a span and outside any
        with tracer.trace("herald.task") as span:
            logger.info("inside")
        logger.info("outside")
    finally:
        logger.removeFilter(log_filter)

    # Then only the line inside carries the span's ids, as ddtrace formats them
    inside, outside = lines
    expected = tracer.get_log_correlation_context(span)
    assert inside["dd.trace_id"] == expected["dd.trace_id"]
    assert inside["dd.span_id"] == str(span.span_id)
    assert "dd.trace_id" not in outside


# The Datadog Lambda wrapper


def test_wrapping_without_datadog_lambda_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given datadog_lambda cannot be imported (None in sys.modules makes import fail)
    monkeypatch.setitem(sys.modules, "datadog_lambda", None)
    monkeypatch.setitem(sys.modules, "datadog_lambda.wrapper", None)

    with pytest.raises(TracingUnavailableError, match="Datadog Python Lambda layer"):
        DatadogTracing(tracer).wrap_lambda_handler(lambda event, context: None)


def test_the_handler_is_wrapped_by_datadog_lambda_wrapper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a datadog_lambda.wrapper module (the layer's, stood in for here)
    wrapped: list[Callable[..., Any]] = []
    module = types.ModuleType("datadog_lambda.wrapper")

    def datadog_lambda_wrapper(handler: Callable[..., Any]) -> Callable[..., Any]:
        wrapped.append(handler)
        return lambda event, context: ("wrapped", handler(event, context))

    module.datadog_lambda_wrapper = datadog_lambda_wrapper  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datadog_lambda", types.ModuleType("datadog_lambda"))
    monkeypatch.setitem(sys.modules, "datadog_lambda.wrapper", module)

    def handler(event: Any, context: Any) -> object:
        return "handled"

    # When the handler is wrapped
    entry_point = DatadogTracing(tracer).wrap_lambda_handler(handler)

    # Then the wrapper got it, and calls go through the wrapper
    assert wrapped == [handler]
    assert entry_point({}, None) == ("wrapped", "handled")


def test_build_tracing_without_ddtrace_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ddtrace.trace", None)

    with pytest.raises(TracingUnavailableError, match="ddtrace cannot be imported"):
        build_tracing(True)


# The trace context on the task queue


def email_task(text: str = "Hello") -> TaskEnvelope[EmailPayload]:
    from datetime import UTC, datetime
    from uuid import uuid4

    now = datetime.now(UTC)
    return TaskEnvelope[EmailPayload](
        task_id=uuid4(),
        kind="email.send",
        tenant_id=uuid4(),
        created_at=now,
        send_at=now,
        payload=EmailPayload(
            sender="herald@example.com", to=["reader@example.org"], subject="Hi", text=text
        ),
    )


@pytest.fixture
def task_queue() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        sqs = boto3.client("sqs")
        yield sqs, sqs.create_queue(QueueName="herald-tasks")["QueueUrl"]


def received(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])
    return messages


def test_each_task_carries_its_own_context_in_the_datadog_attribute(
    task_queue: tuple[Any, str],
) -> None:
    # Given two tasks with different contexts and one without
    sqs, queue_url = task_queue
    first, second, plain = email_task(), email_task(), email_task()
    contexts = {
        first.task_id: {"x-datadog-trace-id": "1", "x-datadog-parent-id": "11"},
        second.task_id: {"x-datadog-trace-id": "2", "x-datadog-parent-id": "22"},
    }

    # When they are sent in one batch
    SqsTaskProducer(sqs, queue_url).send([first, second, plain], trace_contexts=contexts)

    # Then each message carries its own context, and the one without carries none
    attributes = {
        json.loads(m["Body"])["task_id"]: m.get("MessageAttributes", {})
        for m in received(sqs, queue_url)
    }
    for task in (first, second):
        attribute = attributes[str(task.task_id)][TRACE_CONTEXT_ATTRIBUTE]
        assert attribute["DataType"] == "String"
        assert json.loads(attribute["StringValue"]) == contexts[task.task_id]
    assert attributes[str(plain.task_id)] == {}


def test_a_context_too_large_is_dropped_and_the_task_still_sent(
    task_queue: tuple[Any, str],
) -> None:
    sqs, queue_url = task_queue
    task = email_task()

    SqsTaskProducer(sqs, queue_url).send(
        [task], trace_contexts={task.task_id: {"x-datadog-tags": "x" * 10_000}}
    )

    [message] = received(sqs, queue_url)
    assert json.loads(message["Body"])["task_id"] == str(task.task_id)
    assert "MessageAttributes" not in message


def test_a_context_that_would_push_the_message_over_256_kib_is_dropped(
    task_queue: tuple[Any, str],
) -> None:
    # Given a task whose body alone is 5 bytes under SQS's limit (copied past the contract's
    # own margin, which the api enforces: the producer must not count on it)
    sqs, queue_url = task_queue
    task = email_task(text="Hello")
    room = SQS_MAX_MESSAGE_BYTES - len(task.to_message_body().encode())
    text = "x" * (len("Hello") + room - 5)
    task = task.model_copy(update={"payload": task.payload.model_copy(update={"text": text})})
    assert len(task.to_message_body().encode()) == SQS_MAX_MESSAGE_BYTES - 5

    # When it is sent with a context that fits the cap but not the message
    SqsTaskProducer(sqs, queue_url).send(
        [task], trace_contexts={task.task_id: {"x-datadog-trace-id": "1"}}
    )

    # Then the task is queued, without the context
    [message] = received(sqs, queue_url)
    assert json.loads(message["Body"])["task_id"] == str(task.task_id)
    assert "MessageAttributes" not in message


SAMPLED = "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1"
UNSAMPLED = "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=0"


class XRayDaemon:
    """Keeps the segment documents an ``XRayTracing`` sends, parsed."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []

    def receive(self, datagram: bytes) -> None:
        header, _, body = datagram.partition(b"\n")
        assert json.loads(header) == {"format": "json", "version": 1}
        self.documents.append(json.loads(body))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [document for document in self.documents if document["name"] == name]


def xray(header: str) -> tuple[XRayTracing, XRayDaemon]:
    daemon = XRayDaemon()
    environ = {"_X_AMZN_TRACE_ID": header}
    return XRayTracing(("169.254.79.129", 2000), environ=environ, send=daemon.receive), daemon


def test_xray_records_a_task_as_a_subsegment_of_lambdas_segment() -> None:
    # Given a sampled invocation
    tracing, daemon = xray(SAMPLED)

    # When a task runs in its span
    with tracing.start_span(
        "herald.task", None, resource="email.send", tags={"herald.task_id": "t-1"}
    ):
        pass

    # Then the daemon got one subsegment of Lambda's segment, with the task's annotations
    [task] = daemon.documents
    assert (task["name"], task["type"]) == ("herald.task", "subsegment")
    assert task["trace_id"] == "1-67891233-abcdef012345678912345678"
    assert task["parent_id"] == "53995c3f42cd8ad8"
    assert task["annotations"] == {"herald_task_id": "t-1", "resource": "email.send"}
    assert task["start_time"] <= task["end_time"]


def test_xray_sends_nothing_for_an_unsampled_invocation() -> None:
    tracing, daemon = xray(UNSAMPLED)

    with tracing.start_span("herald.task", None, resource="email.send", tags={}):
        pass

    assert daemon.documents == []


def test_xray_marks_a_task_that_raised_as_a_fault() -> None:
    tracing, daemon = xray(SAMPLED)

    with (
        pytest.raises(RuntimeError),
        tracing.start_span("herald.task", None, resource="email.send", tags={}),
    ):
        raise RuntimeError("boom")

    assert daemon.named("herald.task")[0]["fault"] is True


def test_xray_records_each_aws_call_inside_its_task() -> None:
    # Given a sampled invocation and an instrumented SQS client
    tracing, daemon = xray(SAMPLED)
    with mock_aws():
        sqs = boto3.client("sqs")
        tracing.instrument(sqs)

        # When the task makes a call
        with tracing.start_span("herald.task", None, resource="email.send", tags={}):
            sqs.list_queues()

    # Then the call is an aws subsegment of the task's subsegment
    [call] = daemon.named("SQS")
    [task] = daemon.named("herald.task")
    assert call["parent_id"] == task["id"]
    assert call["namespace"] == "aws"
    assert call["aws"]["operation"] == "ListQueues"
    assert call["http"] == {"response": {"status": 200}}


class ThrottledBody:
    """The raw body of an SQS (JSON protocol) throttling answer."""

    @staticmethod
    def stream(**_: Any) -> Iterator[bytes]:
        yield b'{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}'


def test_xray_marks_a_throttled_call() -> None:
    # Given SQS answers a call with 429, as a throttling service does
    tracing, daemon = xray(SAMPLED)
    with mock_aws():
        sqs = boto3.client("sqs", config=Config(retries={"total_max_attempts": 1}))
        tracing.instrument(sqs)
        # A before-send handler may answer in the service's place; the stubs say None.
        sqs.meta.events.register(
            "before-send.sqs.ListQueues",
            lambda **_: AWSResponse("https://sqs", 429, HTTPHeaders(), ThrottledBody()),  # type: ignore[arg-type]
        )

        # When the call is made
        with pytest.raises(ClientError):
            sqs.list_queues()

    # Then its subsegment says it was throttled
    [call] = daemon.named("SQS")
    assert (call["throttle"], call["error"]) == (True, True)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000"}, XRayTracing),
        (
            {
                "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
                "POWERTOOLS_TRACE_DISABLED": "true",
            },
            type(NO_TRACING),
        ),
        ({}, type(NO_TRACING)),
    ],
)
def test_lambda_tracing_is_xray_only_when_lambda_traces(
    environ: dict[str, str], expected: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DD_TRACE_ENABLED", raising=False)
    assert type(build_lambda_tracing(environ)) is expected


@pytest.mark.parametrize(
    ("address", "daemon"),
    [
        ("169.254.79.129:2000", ("169.254.79.129", 2000)),
        ("tcp:127.0.0.1:2000 udp:127.0.0.2:2001", ("127.0.0.2", 2001)),
    ],
)
def test_xray_daemon_address_is_read_in_both_forms(address: str, daemon: tuple[str, int]) -> None:
    assert xray_daemon(address) == daemon
