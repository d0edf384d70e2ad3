"""SQS adapters: the task producer, the result publisher, the dead-letter sink.

The worker's receivers are ``shared.adapters.sqs_receiver``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from botocore.exceptions import BotoCoreError, ClientError

from shared.adapters.client_errors import to_herald_error
from shared.backoff import Backoff
from shared.contracts import SQS_MAX_MESSAGE_BYTES, TaskResult
from shared.errors import TaskBatchSendError
from shared.tracing import TRACE_CONTEXT_ATTRIBUTE, encode_trace_context

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

    from shared.contracts import TaskEnvelope

SQS_MAX_BATCH = 10  # SendMessageBatch's limit
DEAD_LETTER_REASON_ATTRIBUTE = "herald-dead-letter-reason"
SOURCE_MESSAGE_ID_ATTRIBUTE = "herald-source-message-id"
MAX_ATTRIBUTE_VALUE = 1_000
# The longest pause before failed entries are sent again: the relay holds its claimed rows
# locked meanwhile.
MAX_RETRY_PAUSE_SECONDS = 1.0
STRING_DATA_TYPE = "String"

_log = logging.getLogger(__name__)


class SqsTaskProducer:
    """A ``TaskProducer`` on ``SendMessageBatch``.

    Tasks go out in chunks of 10. Entries SQS reports as failed are sent again, and only
    they, with doubling pauses; entries that failed through the sender's fault are not
    (they would fail again). A call that fails whole is not sent again: the client's
    botocore retry mode has retried it already. Whatever still failed is named in one
    ``TaskBatchSendError``.

    A task's trace context travels in the ``_datadog`` message attribute. It never makes
    a send fail: a context too large for the attribute or for SQS's 256 KiB beside the
    body is left out (a debug line says so) and the task is sent without it.

    Parameters
    ----------
    client
        A ``boto3.client("sqs")``.
    queue_url
        The task queue's URL.
    max_attempts
        Sends per failed entry, the first included.
    backoff_seconds
        The first pause before failed entries are sent again; it doubles each time.
    sleep
        Injected for tests.
    """

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        max_attempts: int = 3,
        backoff_seconds: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = client
        self._queue_url = queue_url
        self._max_attempts = max_attempts
        self._backoff_seconds = backoff_seconds
        self._sleep = sleep

    def send(
        self,
        tasks: Sequence[TaskEnvelope[Any]],
        *,
        trace_contexts: Mapping[UUID, Mapping[str, str]] | None = None,
    ) -> None:
        """Queue every task, or raise ``TaskBatchSendError`` naming those not queued.

        ``trace_contexts`` maps a task id to its trace context, sent as ``_datadog``.
        """
        ids = [task.task_id for task in tasks]
        if len(set(ids)) != len(ids):
            raise ValueError("a batch may not hold the same task_id twice")
        contexts = trace_contexts or {}
        entries = [_entry(task, contexts.get(task.task_id)) for task in tasks]
        failed: dict[UUID, str] = {}
        refused: set[UUID] = set()
        for chunk in _batches(entries):
            chunk_failed, chunk_refused = self._send_chunk(chunk)
            failed.update(chunk_failed)
            refused |= chunk_refused
        if failed:
            raise TaskBatchSendError(
                failed, sent=[task_id for task_id in ids if task_id not in failed], refused=refused
            )

    def _send_chunk(
        self, chunk: Sequence[SendMessageBatchRequestEntryTypeDef]
    ) -> tuple[dict[UUID, str], set[UUID]]:
        """Send one batch; return the tasks that still failed, with their reasons, and
        those of them SQS refused through the sender's fault."""
        pending: dict[str, SendMessageBatchRequestEntryTypeDef] = {
            entry["Id"]: entry for entry in chunk
        }
        permanent: dict[str, str] = {}  # failed through the sender's fault: never retried
        last_errors: dict[str, str] = {}
        backoff = Backoff(MAX_RETRY_PAUSE_SECONDS, first=self._backoff_seconds)
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                self._sleep(backoff.failed())
            try:
                response = self._client.send_message_batch(
                    QueueUrl=self._queue_url, Entries=list(pending.values())
                )
            except (ClientError, BotoCoreError) as error:
                # botocore has retried the call already (throttling, 5xx, connection
                # errors), as the client's retry mode says: sending it again would
                # multiply its attempts. Every entry still pending failed.
                last_errors = dict.fromkeys(
                    pending, str(to_herald_error(error, "SQS SendMessageBatch"))
                )
                break
            last_errors = {}
            for entry in response.get("Failed", []):
                reason = f"{entry['Code']}: {entry.get('Message', '')}".rstrip(": ")
                if entry["SenderFault"]:
                    permanent[entry["Id"]] = reason
                    pending.pop(entry["Id"], None)
                else:
                    last_errors[entry["Id"]] = reason
            pending = {
                entry_id: pending[entry_id] for entry_id in pending if entry_id in last_errors
            }
            if not pending:
                break
        still_failed = {**permanent, **{entry_id: last_errors[entry_id] for entry_id in pending}}
        return (
            {UUID(entry_id): reason for entry_id, reason in still_failed.items()},
            {UUID(entry_id) for entry_id in permanent},
        )


def _batches(
    entries: Sequence[SendMessageBatchRequestEntryTypeDef],
) -> Iterator[list[SendMessageBatchRequestEntryTypeDef]]:
    """``entries`` in SendMessageBatch calls: at most 10 each, and at most SQS's 256 KiB
    in all (SQS refuses a whole batch whose messages add up to more, so ten large emails
    in one call would never be queued and would block the relay)."""
    batch: list[SendMessageBatchRequestEntryTypeDef] = []
    batch_bytes = 0
    for entry in entries:
        size = _entry_bytes(entry)
        if batch and (len(batch) == SQS_MAX_BATCH or batch_bytes + size > SQS_MAX_MESSAGE_BYTES):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(entry)
        batch_bytes += size
    if batch:
        yield batch


def _entry_bytes(entry: SendMessageBatchRequestEntryTypeDef) -> int:
    """What SQS counts of an entry: its body and its attributes' names, types and values."""
    size = len(entry["MessageBody"].encode())
    for name, attribute in entry.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(attribute["DataType"].encode())
        size += len(attribute.get("StringValue", "").encode())
    return size


def _entry(
    task: TaskEnvelope[Any], trace_context: Mapping[str, str] | None
) -> SendMessageBatchRequestEntryTypeDef:
    """The batch entry of ``task``, with its trace context if it can be carried."""
    body = task.to_message_body()
    entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(task.task_id), "MessageBody": body}
    attribute = _trace_context_attribute(trace_context, body_bytes=len(body.encode()))
    if attribute is not None:
        entry["MessageAttributes"] = {TRACE_CONTEXT_ATTRIBUTE: attribute}
    return entry


def _trace_context_attribute(
    trace_context: Mapping[str, str] | None, *, body_bytes: int
) -> MessageAttributeValueTypeDef | None:
    if not trace_context:
        return None
    value = encode_trace_context(trace_context)
    if value is None:
        return None
    # SQS counts an attribute's name, type and value towards the message's size.
    size = body_bytes + sum(
        len(part.encode()) for part in (TRACE_CONTEXT_ATTRIBUTE, STRING_DATA_TYPE, value)
    )
    if size > SQS_MAX_MESSAGE_BYTES:
        _log.debug("trace context dropped: the message would exceed SQS's size limit")
        return None
    return {"DataType": STRING_DATA_TYPE, "StringValue": value}


class SqsResultPublisher:
    """A ``ResultPublisher`` that sends each result to the result queue."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def publish(self, result: TaskResult) -> None:
        """Send ``result``; raise ``TransientError``/``PermanentError`` if SQS refuses."""
        try:
            self._client.send_message(
                QueueUrl=self._queue_url, MessageBody=result.model_dump_json()
            )
        except (ClientError, BotoCoreError) as error:
            raise to_herald_error(error, "SQS SendMessage (result)") from error


class SqsDeadLetterSink:
    """A ``DeadLetterSink`` that moves a message to the task dead-letter queue at once.

    The body is kept as it was received; the reason and the source message id travel as
    message attributes, so an operator can read why and redrive after a fix.
    """

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def dead_letter(self, body: str, *, reason: str, source_message_id: str) -> None:
        """Send ``body`` to the dead-letter queue; raise a Herald error if SQS refuses."""
        try:
            self._client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=body or "<empty body>",
                MessageAttributes={
                    DEAD_LETTER_REASON_ATTRIBUTE: {
                        "DataType": "String",
                        "StringValue": reason[:MAX_ATTRIBUTE_VALUE],
                    },
                    SOURCE_MESSAGE_ID_ATTRIBUTE: {
                        "DataType": "String",
                        "StringValue": source_message_id,
                    },
                },
            )
        except (ClientError, BotoCoreError) as error:
            raise to_herald_error(error, "SQS SendMessage (dead letter)") from error
