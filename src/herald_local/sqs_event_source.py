"""A local stand-in for Lambda's SQS event source mapping, calling the real handler.

Like Lambda's pollers it long-polls the task queue, hands the handler a real SQS event
(``Records`` with ``messageId``, ``receiptHandle``, ``body``, ``attributes``,
``messageAttributes``, ``md5OfBody``, ``eventSource``, ``eventSourceARN``,
``awsRegion``), gathers up to the template's ``BatchSize`` within its
``MaximumBatchingWindowInSeconds``, and honours ``ReportBatchItemFailures``: it deletes
only the records the handler did not report, so the others reappear after the queue's
visibility timeout and, after ``maxReceiveCount`` receives, SQS's redrive moves them to
the dead-letter queue. A handler that raises, answers an unknown item identifier, or
outlives the function's timeout fails the whole batch, as in Lambda.

One batch at a time: the template's ``MaximumConcurrency`` only caps parallelism, and
serial batches keep the logs readable. It runs in its own process (``herald-local
event-source``), so the handler's module-level composition root runs at "cold start"
from environment variables, exactly as in Lambda.
"""

from __future__ import annotations

import base64
import importlib
import math
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueOutputTypeDef, MessageTypeDef

    Handler = Callable[[dict[str, Any], Any], Any]

# Lambda's pollers wait 20 s; a shorter wait changes nothing the handler sees and lets
# the process stop within a couple of seconds.
POLL_WAIT_SECONDS = 2
SQS_RECEIVE_MAX = 10


@dataclass(frozen=True)
class EventSourceSettings:
    """The event source mapping and the function, as the template declares them."""

    queue_url: str
    queue_arn: str
    region: str
    batch_size: int
    batching_window_seconds: int
    report_batch_item_failures: bool
    function_name: str
    function_timeout_seconds: int
    memory_mb: int


@dataclass
class LocalLambdaContext:
    """What Lambda passes as ``context``: names, memory and the time left."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    region: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:123456789012:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "herald-local"

    def get_remaining_time_in_millis(self) -> int:
        elapsed = time.monotonic() - self.started
        return max(0, int((self.timeout_seconds - elapsed) * 1000))


@dataclass(frozen=True)
class BatchOutcome:
    """What happened to one batch."""

    records: int
    deleted: int
    to_retry: int
    failed_whole_batch: str | None  # why, when every record goes back


def sqs_event(messages: list[MessageTypeDef], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda builds from received SQS messages."""
    return {"Records": [_record(message, queue_arn, region) for message in messages]}


def _record(message: MessageTypeDef, queue_arn: str, region: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _message_attribute(value: MessageAttributeValueOutputTypeDef) -> dict[str, Any]:
    # Lambda's event spells SQS's attribute values in camelCase, binary as base64.
    attribute: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [
            base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])
        ],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return attribute


class SqsEventSource:
    """Polls the queue and invokes ``handler`` with batches until ``stop`` is set."""

    def __init__(
        self,
        settings: EventSourceSettings,
        handler: Handler,
        sqs: SQSClient,
        *,
        log: Callable[[str], None] = print,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._sqs = sqs
        self._log = log
        self._invocations = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            messages = self.gather_batch(stop)
            if messages:
                self.invoke(messages)

    def gather_batch(self, stop: threading.Event) -> list[MessageTypeDef]:
        """Up to ``batch_size`` messages: what one long poll brings (none when the queue
        stays empty), or, with a batching window, what arrives within it."""
        settings = self._settings
        window_ends: float | None = None
        messages: list[MessageTypeDef] = []
        while len(messages) < settings.batch_size and not stop.is_set():
            wait = POLL_WAIT_SECONDS
            if window_ends is not None:
                remaining = window_ends - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(wait, math.ceil(remaining))
            received = self._sqs.receive_message(
                QueueUrl=settings.queue_url,
                MaxNumberOfMessages=min(SQS_RECEIVE_MAX, settings.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if window_ends is None:
                # Nothing yet: the caller polls again. The first message opens the window.
                if not received or settings.batching_window_seconds == 0:
                    return received
                window_ends = time.monotonic() + settings.batching_window_seconds
            messages.extend(received)
        return messages

    def invoke(self, messages: list[MessageTypeDef]) -> BatchOutcome:
        """Invoke the handler with one batch; delete what succeeded; log the outcome."""
        settings = self._settings
        self._invocations += 1
        event = sqs_event(messages, settings.queue_arn, settings.region)
        context = LocalLambdaContext(
            function_name=settings.function_name,
            memory_limit_in_mb=settings.memory_mb,
            timeout_seconds=settings.function_timeout_seconds,
            region=settings.region,
        )
        started = time.monotonic()
        outcome = self._outcome(event, context, messages)
        elapsed_ms = (time.monotonic() - started) * 1000
        counts = ", ".join(
            message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
            for message in messages
        )
        summary = (
            f"invocation {self._invocations}: {outcome.records} record(s), receive counts "
            f"[{counts}] -> {outcome.deleted} done, {outcome.to_retry} back to the queue "
            f"({elapsed_ms:.0f} ms)"
        )
        if outcome.failed_whole_batch:
            summary += f"; whole batch failed: {outcome.failed_whole_batch}"
        self._log(summary)
        return outcome

    def _outcome(
        self, event: dict[str, Any], context: LocalLambdaContext, messages: list[MessageTypeDef]
    ) -> BatchOutcome:
        try:
            response = self._handler(event, context)
        except Exception as error:  # noqa: BLE001 - Lambda reports any error as a failed invocation
            return BatchOutcome(len(messages), 0, len(messages), f"{type(error).__name__}: {error}")
        if context.get_remaining_time_in_millis() <= 0:
            reason = f"ran longer than the function's {context.timeout_seconds} s timeout"
            return BatchOutcome(len(messages), 0, len(messages), reason)
        failed_ids: set[str] = set()
        if self._settings.report_batch_item_failures and isinstance(response, dict):
            ids = {str(message["MessageId"]) for message in messages}
            for failure in response.get("batchItemFailures") or []:
                identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
                if not identifier or identifier not in ids:
                    # Lambda treats an invalid identifier as a failure of the whole batch.
                    reason = f"invalid itemIdentifier {identifier!r} in batchItemFailures"
                    return BatchOutcome(len(messages), 0, len(messages), reason)
                failed_ids.add(str(identifier))
        succeeded = [message for message in messages if message["MessageId"] not in failed_ids]
        self._delete(succeeded)
        return BatchOutcome(len(messages), len(succeeded), len(failed_ids), None)

    def _delete(self, messages: list[MessageTypeDef]) -> None:
        for start in range(0, len(messages), SQS_RECEIVE_MAX):
            chunk = messages[start : start + SQS_RECEIVE_MAX]
            self._sqs.delete_message_batch(
                QueueUrl=self._settings.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(chunk)
                ],
            )


def load_handler(path: str) -> Handler:
    """Import ``module.function`` as Lambda does with the template's ``Handler``."""
    module_name, _, function_name = path.rpartition(".")
    handler: Handler = getattr(importlib.import_module(module_name), function_name)
    return handler


def run_event_source_process(settings: EventSourceSettings, handler_path: str) -> int:
    """The ``herald-local event-source`` process: cold start, then poll until SIGTERM."""
    import boto3

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.monotonic()
    handler = load_handler(handler_path)  # the composition root runs here: the cold start
    source = SqsEventSource(settings, handler, boto3.client("sqs"), log=log)
    log(
        f"ready: {handler_path} loaded in {time.monotonic() - started:.1f} s; polling "
        f"{settings.queue_url} (batch size {settings.batch_size}, batching window "
        f"{settings.batching_window_seconds} s)"
    )
    source.run(stop)
    log("stopped")
    return 0
