"""The results consumer: task results from the result queue to the messages' status.

A result is applied in a transaction, and its queue message deleted only after that
transaction committed: a crash in between redelivers it, and applying it again does no
harm. A status only moves forward (scheduled/queued -> sent/failed); a repeated result,
or one for a message this database does not know, changes nothing. A body that is not a
result is left on the queue: after five receives SQS moves it to the result DLQ, where
an alarm fires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from ecs_service.db.models import Message
from shared.adapters.client_errors import to_herald_error
from shared.contracts import MessageStatus, TaskResult, describe_validation_error

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef
    from sqlalchemy import ColumnElement
    from sqlalchemy.engine import Engine

    from ecs_service.thread_safe_metrics import MetricRecorder

OPEN_STATUSES = (MessageStatus.SCHEDULED.value, MessageStatus.QUEUED.value)


def apply_result(session: Session, result: TaskResult) -> bool:
    """Move the result's message forward; False if nothing changed (repeat, unknown, final).

    ``sent`` also overrides ``canceled``: a cancel can only win the race against a relay
    that crashed between sending and committing, and then the email did go out.
    """
    may_change: ColumnElement[bool] = Message.status.in_(OPEN_STATUSES)
    if result.status is MessageStatus.SENT:
        may_change = or_(may_change, Message.status == MessageStatus.CANCELED.value)
    changed = session.execute(
        update(Message)
        .where(Message.id == result.task_id, may_change)
        .values(
            status=result.status.value,
            provider_message_id=result.provider_message_id,
            error=result.error,
            finished_at=result.finished_at,
            updated_at=func.now(),
        )
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


class ResultsConsumer:
    """Long-polls the result queue and applies what it receives."""

    def __init__(
        self,
        engine: Engine,
        sqs: SQSClient,
        queue_url: str,
        *,
        wait_seconds: int,
        logger: Logger,
        metrics: MetricRecorder,
    ) -> None:
        self._engine = engine
        self._sqs = sqs
        self._queue_url = queue_url
        self._wait_seconds = wait_seconds
        self._logger = logger
        self._metrics = metrics

    def consume_once(self) -> int:
        """Receive up to 10 results, apply them, delete them; return how many were applied."""
        try:
            received = self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=self._wait_seconds,
                AttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
        except (ClientError, BotoCoreError) as error:
            raise to_herald_error(error, "SQS ReceiveMessage (results)") from error
        results: list[tuple[str, TaskResult]] = []
        for message in received:
            try:
                results.append(
                    (message["ReceiptHandle"], TaskResult.model_validate_json(message["Body"]))
                )
            except ValidationError as error:
                self._logger.error(
                    "not a task result; left for the result DLQ",
                    extra={
                        "message_id": message["MessageId"],
                        "error": describe_validation_error(error),
                    },
                )
        if not results:
            return 0
        with Session(self._engine) as session, session.begin():
            changed = {result.task_id: apply_result(session, result) for _, result in results}
            known = set(session.scalars(select(Message.id).where(Message.id.in_(list(changed)))))
        for _, result in results:
            if result.task_id not in known:
                self._logger.warning(
                    "result for an unknown message; ignored", extra={"task_id": str(result.task_id)}
                )
            elif not changed[result.task_id]:
                self._logger.info(
                    "repeated or late result; nothing to change",
                    extra={"task_id": str(result.task_id)},
                )
        # Only now that the transaction committed may SQS forget the results.
        self._delete([handle for handle, _ in results])
        applied = sum(changed.values())
        for _, result in results:
            if changed[result.task_id]:
                name = "MessagesSent" if result.status is MessageStatus.SENT else "MessagesFailed"
                self._metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        return applied

    def _delete(self, receipt_handles: list[str]) -> None:
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(receipt_handles)
        ]
        try:
            response = self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as error:
            # Applied but not deleted: they come back and are applied again, harmlessly.
            self._logger.warning("could not delete applied results", extra={"error": str(error)})
            return
        if response.get("Failed"):
            self._logger.warning(
                "some applied results were not deleted", extra={"failed": len(response["Failed"])}
            )
