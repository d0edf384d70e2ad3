"""SQS adapters: the task producer, the result publisher and the dead-letter sink."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.adapters.client_errors import to_herald_error
from shared.errors import PermanentError, TaskBatchSendError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from uuid import UUID

    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

    from shared.contracts import TaskEnvelope, TaskResult

SQS_MAX_BATCH = 10  # SendMessageBatch's limit
DEAD_LETTER_REASON_ATTRIBUTE = "herald-dead-letter-reason"
SOURCE_MESSAGE_ID_ATTRIBUTE = "herald-source-message-id"
MAX_ATTRIBUTE_VALUE = 1_000


class SqsTaskProducer:
    """A ``TaskProducer`` on ``SendMessageBatch``.

    Tasks go out in chunks of 10. Entries SQS reports as failed are retried, and only
    they, with exponential back-off; entries that failed through the sender's fault are
    not retried. Whatever still failed is named in one ``TaskBatchSendError``.

    Parameters
    ----------
    client
        A ``boto3.client("sqs")``.
    queue_url
        The task queue's URL.
    max_attempts
        Tries per chunk, the first included.
    backoff_seconds
        The first pause between tries; it doubles each time.
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

    def send(self, tasks: Sequence[TaskEnvelope[Any]]) -> None:
        """Queue every task, or raise ``TaskBatchSendError`` naming those not queued."""
        ids = [task.task_id for task in tasks]
        if len(set(ids)) != len(ids):
            raise ValueError("a batch may not hold the same task_id twice")
        failed: dict[UUID, str] = {}
        for start in range(0, len(tasks), SQS_MAX_BATCH):
            failed.update(self._send_chunk(tasks[start : start + SQS_MAX_BATCH]))
        if failed:
            raise TaskBatchSendError(
                failed, sent=[task_id for task_id in ids if task_id not in failed]
            )

    def _send_chunk(self, chunk: Sequence[TaskEnvelope[Any]]) -> dict[UUID, str]:
        """Send up to 10 tasks; return the ones that still failed, with their reasons."""
        pending: dict[str, SendMessageBatchRequestEntryTypeDef] = {
            str(task.task_id): {"Id": str(task.task_id), "MessageBody": task.to_message_body()}
            for task in chunk
        }
        permanent: dict[str, str] = {}  # failed through the sender's fault: never retried
        last_errors: dict[str, str] = {}
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                self._sleep(self._backoff_seconds * 2 ** (attempt - 2))
            try:
                response = self._client.send_message_batch(
                    QueueUrl=self._queue_url, Entries=list(pending.values())
                )
            except (ClientError, BotoCoreError) as error:
                herald_error = to_herald_error(error, "SQS SendMessageBatch")
                last_errors = dict.fromkeys(pending, str(herald_error))
                if isinstance(herald_error, PermanentError):
                    break
                continue
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
        return {
            task.task_id: still_failed[str(task.task_id)]
            for task in chunk
            if str(task.task_id) in still_failed
        }


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
