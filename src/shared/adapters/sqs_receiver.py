"""The backend's SQS consumers' adapter: receive a batch, parse each body at the edge,
delete the handled messages (the ``QueueReceiver`` port).

One receiver serves every queue the worker consumes; each gives its own parser
(``SqsResultReceiver`` for task results, the worker's feedback receiver for SES events).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from shared.adapters.client_errors import to_herald_error
from shared.adapters.sqs import SQS_MAX_BATCH
from shared.contracts import TaskResult, describe_validation_error
from shared.ports import Received

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef

ParsedT = TypeVar("ParsedT")


class SqsReceiver(Generic[ParsedT]):
    """A ``QueueReceiver`` on ``ReceiveMessage`` and ``DeleteMessageBatch``.

    A body ``parse`` refuses (``ValueError``, pydantic's ``ValidationError`` included)
    comes back with ``parsed`` None and the reason in one line: the consumer decides
    whether to delete it or leave it for the queue's DLQ.

    Parameters
    ----------
    client
        A ``boto3.client("sqs")``.
    queue_url
        The queue's URL.
    wait_seconds
        How long one receive long-polls (0 to 20).
    parse
        A body to its model; raises ``ValueError`` when it is not one.
    what
        The queue's name in errors ("results", "feedback").
    """

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        wait_seconds: int,
        parse: Callable[[str], ParsedT],
        what: str,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._wait_seconds = wait_seconds
        self._parse = parse
        self._what = what

    def receive(self) -> list[Received[ParsedT]]:
        """Up to 10 messages, each parsed.

        Raises
        ------
        TransientError, PermanentError
            SQS refused the call.
        """
        try:
            messages = self._client.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=SQS_MAX_BATCH,
                WaitTimeSeconds=self._wait_seconds,
            ).get("Messages", [])
        except (ClientError, BotoCoreError) as error:
            raise to_herald_error(error, f"SQS ReceiveMessage ({self._what})") from error
        return [
            self._parsed(message["MessageId"], message["ReceiptHandle"], message.get("Body", ""))
            for message in messages
        ]

    def _parsed(self, message_id: str, receipt_handle: str, body: str) -> Received[ParsedT]:
        try:
            parsed = self._parse(body)
        except ValidationError as error:
            return Received(message_id, receipt_handle, None, describe_validation_error(error))
        except ValueError as error:
            return Received(message_id, receipt_handle, None, str(error))
        return Received(message_id, receipt_handle, parsed)

    def delete(self, receipt_handles: Sequence[str]) -> int:
        """Delete the messages of ``receipt_handles`` in batches of 10; how many SQS did not.

        Raises
        ------
        TransientError, PermanentError
            SQS refused the call itself.
        """
        not_deleted = 0
        for start in range(0, len(receipt_handles), SQS_MAX_BATCH):
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": handle}
                for i, handle in enumerate(receipt_handles[start : start + SQS_MAX_BATCH])
            ]
            try:
                response = self._client.delete_message_batch(
                    QueueUrl=self._queue_url, Entries=entries
                )
            except (ClientError, BotoCoreError) as error:
                raise to_herald_error(error, f"SQS DeleteMessageBatch ({self._what})") from error
            not_deleted += len(response.get("Failed", []))
        return not_deleted


class SqsResultReceiver(SqsReceiver[TaskResult]):
    """The result queue: each body parsed and bounded as a ``TaskResult``.

    A body that is not one is simply not deleted by the results consumer: SQS receives
    it again and, after ``maxReceiveCount`` receives, moves it to the DLQ.
    """

    def __init__(self, client: SQSClient, queue_url: str, *, wait_seconds: int) -> None:
        super().__init__(
            client,
            queue_url,
            wait_seconds=wait_seconds,
            parse=TaskResult.model_validate_json,
            what="results",
        )
