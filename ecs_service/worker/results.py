"""The results consumer: task results from the result queue to the messages' status.

A result is a claim read from a queue, so it is checked, not trusted:

- It changes a message only while that message is ``queued`` (the task id is the
  message id): ``queued -> sent | failed``. A result for a message that is scheduled,
  canceled, sent, failed or unknown is rejected: logged (one line with the task id and
  why), counted in ``ResultsRejected``, deleted, and the row is left as it is. A
  repeat (a result for a message that has that status already: at-least-once delivery)
  is a no-op too, counted in ``ResultsRepeated`` instead, which no alarm watches. A
  ``sent`` result for a message that delivery feedback has moved on from ``sent``
  (delivered, bounced, complained; or failed when SES rejected it after accepting it, the
  same SES message id) is such a repeat.
- SES's delivery events may arrive before the ``sent`` result (issue 14): when the
  result moves a message to ``sent``, ``feedback_store.summarise`` applies the events
  recorded so far, in the same transaction.
- What a tenant reads as the error of a failed message is Herald's fixed text for the
  result's ``error_code`` (``shared.errors.failure_text``), never the result's free
  ``error`` text, which only reaches the worker's log.
- ``finished_at`` is stored within what the row already says: not before the message was
  queued, not after the result was applied.

Each result is applied on its own: a received batch is applied in one transaction and,
if the database refuses one of its results, applied again with a savepoint per result,
so the refused one is rolled back alone and left on the queue (SQS moves it to the
result DLQ after five receives, where an alarm fires) while its neighbours are applied.
A body that is not a valid ``TaskResult`` (``SqsResultReceiver`` parses and bounds it)
is left on the queue the same way, without holding up the rest. (``queue_batch`` holds
what this consumer and the feedback consumer do alike.)

The consumer first locks the batch's messages (``SELECT ... FOR UPDATE``, in id order).
A relay that sent a task but has not committed ``queued`` yet holds that row's lock, so a
result that overtakes the relay's commit waits for it, and then finds the row ``queued``.
If the relay rolled back instead, the row is still ``scheduled`` and the result is
rejected; the relay sends the task again, and the task runner republishes the stored
result, which then applies.

Messages are deleted only after the transaction committed: a crash in between redelivers
them, and applying them again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit
from sqlalchemy.orm import Session

from ecs_service import feedback_store, messages
from ecs_service.messages import Locked
from ecs_service.worker.queue_batch import REFUSED_BY_THE_DATABASE, QueueConsumer, item_scope
from shared.contracts import MessageStatus, TaskResult
from shared.errors import failure_text

if TYPE_CHECKING:
    from collections.abc import Sequence


RESULTS_REJECTED = "ResultsRejected"
# A result for a message that already has that very status: at-least-once delivery, a
# relay that crashed between send and commit, a runner replaying its stored result. Normal
# and harmless, so counted apart from ResultsRejected, whose alarm it would otherwise wake.
RESULTS_REPEATED = "ResultsRepeated"
MESSAGES_SENT = "MessagesSent"
MESSAGES_FAILED = "MessagesFailed"


# What delivery feedback makes of a sent message: a sent result for it is a repeat.
AFTER_SENT = frozenset(
    {
        MessageStatus.SENT.value,
        MessageStatus.DELIVERED.value,
        MessageStatus.BOUNCED.value,
        MessageStatus.COMPLAINED.value,
    }
)


def _is_repeat(locked: Locked | None, result: TaskResult) -> bool:
    """Whether the message has what ``result`` says already (or moved on from it)."""
    if locked is None:
        return False
    if locked.status == result.status.value:
        return True
    if result.status is not MessageStatus.SENT:
        return False
    # Delivery feedback moved the sent message on; SES's rejection after acceptance failed
    # it, and the repeat names the same SES message.
    return locked.status in AFTER_SENT or (
        locked.status == MessageStatus.FAILED.value
        and locked.provider_message_id is not None
        and locked.provider_message_id == result.provider_message_id
    )


def apply_result(session: Session, result: TaskResult) -> bool:
    """Move the result's message from ``queued`` to its final status; False if not queued.

    The error stored is Herald's text for the result's code, and ``finished_at`` is kept
    between the message's ``queued_at`` and now. A message that becomes ``sent`` is then
    summarised from the delivery events that arrived before its result.
    """
    failed = result.status is MessageStatus.FAILED
    error = failure_text(result.error_code) if failed else None
    if not messages.record_result(session, result, error=error):
        return False
    if not failed:
        feedback_store.summarise(session, result.task_id)
    return True


@dataclass
class _Outcome:
    """What became of one received batch's results."""

    applied: list[TaskResult] = field(default_factory=list)
    rejected: list[tuple[TaskResult, str]] = field(default_factory=list)
    repeated: list[TaskResult] = field(default_factory=list)
    refused: list[tuple[TaskResult, str]] = field(default_factory=list)
    handled: list[str] = field(default_factory=list)  # receipt handles to delete


class ResultsConsumer(QueueConsumer[TaskResult, tuple[str, TaskResult], _Outcome]):
    """Long-polls the result queue and applies what it receives.

    See ``QueueConsumer`` for its parameters.
    """

    what = "results"

    def consume_once(self) -> int:
        """Receive up to 10 results, apply them, delete the handled; return how many applied.

        Raises
        ------
        HeraldError
            SQS could not be read.
        sqlalchemy.exc.SQLAlchemyError
            The database failed as a whole: nothing is deleted, every result comes back.
        """
        received = self._receiver.receive()
        valid: list[tuple[str, TaskResult]] = []
        for message in received:
            if message.parsed is None:
                self._logger.error(
                    "not a task result; left for the result DLQ",
                    extra={"message_id": message.message_id, "error": message.problem},
                )
            else:
                valid.append((message.receipt_handle, message.parsed))
        if not valid:
            return 0
        outcome = self._apply(valid)
        self._report(outcome)
        # Only now that the transaction committed may SQS forget the results.
        self._delete(outcome.handled)
        return len(outcome.applied)

    def _apply_in_one_transaction(
        self, results: Sequence[tuple[str, TaskResult]], isolate: bool
    ) -> _Outcome:
        outcome = _Outcome()
        with Session(self._engine) as session, session.begin():
            locked = messages.lock_for_results(session, [result.task_id for _, result in results])
            for handle, result in results:
                found = locked.get(result.task_id)
                status = found.status if found else None
                if _is_repeat(found, result):
                    outcome.repeated.append(result)
                    outcome.handled.append(handle)
                    continue
                if status != MessageStatus.QUEUED.value:
                    why = "no such message" if status is None else f"the message is {status}"
                    outcome.rejected.append((result, why))
                    outcome.handled.append(handle)
                    continue
                try:
                    with item_scope(session, isolate):
                        changed = apply_result(session, result)
                except REFUSED_BY_THE_DATABASE as error:
                    if not isolate:
                        raise
                    # The database refused this row's values: it alone is rolled back.
                    outcome.refused.append((result, type(error.orig).__name__))
                    continue
                if changed:
                    locked[result.task_id] = Locked(result.status.value, result.provider_message_id)
                    outcome.applied.append(result)
                else:
                    outcome.rejected.append((result, "the message is no longer queued"))
                outcome.handled.append(handle)
        return outcome

    def _report(self, outcome: _Outcome) -> None:
        for result in outcome.applied:
            failed = result.status is MessageStatus.FAILED
            self._metrics.add_metric(
                name=MESSAGES_FAILED if failed else MESSAGES_SENT, unit=MetricUnit.Count, value=1
            )
            if failed:
                # The runner's detail is for operators: it is logged, never stored.
                self._logger.info(
                    "message failed",
                    extra={
                        "task_id": str(result.task_id),
                        "error_code": result.error_code,
                        "detail": result.error,
                    },
                )
        for result, why in outcome.rejected:
            self._logger.warning(
                "result rejected: it does not match a queued message",
                extra={
                    "task_id": str(result.task_id),
                    "result_status": result.status.value,
                    "reason": why,
                },
            )
        if outcome.rejected:
            self._metrics.add_metric(
                name=RESULTS_REJECTED, unit=MetricUnit.Count, value=len(outcome.rejected)
            )
        for result in outcome.repeated:
            self._logger.info(
                "result repeated: the message has this status already",
                extra={"task_id": str(result.task_id), "result_status": result.status.value},
            )
        if outcome.repeated:
            self._metrics.add_metric(
                name=RESULTS_REPEATED, unit=MetricUnit.Count, value=len(outcome.repeated)
            )
        for result, why in outcome.refused:
            self._logger.error(
                "the database refused a result; left for the result DLQ",
                extra={"task_id": str(result.task_id), "error": why},
            )
