"""The outbox relay: due messages from PostgreSQL to the SQS task queue.

One pass claims due rows with ``FOR UPDATE SKIP LOCKED`` (so any number of relays share
the work without waiting on each other), sends them in batches of 10, marks the ones
SQS accepted ``queued`` and commits. A crash after the send and before the commit
leaves the rows ``scheduled``: they are sent again later and the task runner's
idempotency record makes the second send a no-op. A row is never lost and never
marked ``queued`` unless SQS has it.

After a pass the relay reports ``RelayBacklog``: the messages due but still not queued.
``RelayLag`` only exists when something is queued; a relay that queues nothing while
messages pile up shows in the backlog. Counting is cheap (a range scan of the
partial index ``ix_messages_due``) but not free with a large backlog, so it is done at
most once every ``backlog_interval_seconds``, on the first pass after that.

Each message is sent inside a ``herald.relay`` span, child of the trace context the api
stored with it, and carries that span's context to the task runner in the ``_datadog``
message attribute: one email, one trace. Without Datadog the spans are no-ops.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ecs_service.db.models import Message
from ecs_service.messages import task_of
from shared.contracts import (
    EmailPayload,
    MessageStatus,
    TaskEnvelope,
    describe_validation_error,
    utc_now,
)
from shared.errors import TaskBatchSendError
from shared.tracing import NO_TRACING, as_carrier

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from aws_lambda_powertools import Logger
    from sqlalchemy.engine import Engine

    from ecs_service.thread_safe_metrics import MetricRecorder
    from shared.ports import TaskProducer, Tracing

# How often, at most, a relay counts the backlog: several datapoints per one-minute period.
BACKLOG_INTERVAL_SECONDS = 15.0
RELAY_SPAN = "herald.relay"


@dataclass(frozen=True)
class RelayPass:
    """What one pass did."""

    claimed: int
    queued: int
    not_queued: int


class Relay:
    """Moves due messages to the task queue, a claim of up to ``claim_size`` rows per pass."""

    def __init__(
        self,
        engine: Engine,
        producer: TaskProducer,
        *,
        claim_size: int,
        logger: Logger,
        metrics: MetricRecorder,
        backlog_interval_seconds: float = BACKLOG_INTERVAL_SECONDS,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._engine = engine
        self._tracing = tracing
        self._producer = producer
        self._claim_size = claim_size
        self._logger = logger
        self._metrics = metrics
        self._backlog_interval_seconds = backlog_interval_seconds
        self._backlog_counted_at: float | None = None

    def relay_due_messages(self) -> RelayPass:
        """One pass: claim, send, mark, commit, then report the backlog if it is time.

        Raises only if the database fails.
        """
        result = self._relay_pass()
        now = time.monotonic()
        if (
            self._backlog_counted_at is None
            or now - self._backlog_counted_at >= self._backlog_interval_seconds
        ):
            self._backlog_counted_at = now
            self._metrics.add_metric(
                name="RelayBacklog", unit=MetricUnit.Count, value=self.count_backlog()
            )
        return result

    def count_backlog(self) -> int:
        """Messages due but not queued: scheduled with send_at now or earlier."""
        with Session(self._engine) as session:
            # The WHERE matches ix_messages_due's predicate: a range of that index, not the table.
            return (
                session.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(
                        Message.status == MessageStatus.SCHEDULED.value,
                        Message.send_at <= func.now(),
                    )
                )
                or 0
            )

    def _relay_pass(self) -> RelayPass:
        with Session(self._engine) as session, session.begin():
            rows = session.scalars(
                select(Message)
                .where(
                    Message.status == MessageStatus.SCHEDULED.value, Message.send_at <= func.now()
                )
                .order_by(Message.send_at)
                .limit(self._claim_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return RelayPass(0, 0, 0)
            lag = max(_seconds_late(row) for row in rows)
            tasks, invalid = self._tasks_of(rows)
            if invalid:
                self._fail_invalid(session, invalid)
            sent: list[UUID] = [task.task_id for task in tasks]
            failed: dict[UUID, str] = {}
            if tasks:
                try:
                    self._send(tasks, {row.id: row.trace_context for row in rows})
                except TaskBatchSendError as error:
                    sent, failed = list(error.sent), error.failed
            if sent:
                session.execute(
                    update(Message)
                    .where(Message.id.in_(sent))
                    .values(
                        status=MessageStatus.QUEUED.value,
                        queued_at=func.now(),
                        updated_at=func.now(),
                    )
                )
        if failed:
            self._logger.warning(
                "SQS did not take every task; they stay scheduled and are retried",
                extra={"not_queued": len(failed), "first_error": next(iter(failed.values()))},
            )
        if sent:
            self._metrics.add_metric(name="MessagesRelayed", unit=MetricUnit.Count, value=len(sent))
            self._metrics.add_metric(name="RelayLag", unit=MetricUnit.Seconds, value=lag)
        return RelayPass(claimed=len(rows), queued=len(sent), not_queued=len(failed))

    def _send(
        self,
        tasks: Sequence[TaskEnvelope[EmailPayload]],
        stored_contexts: dict[UUID, dict[str, str] | None],
    ) -> None:
        """Send ``tasks``, each inside its own span, carrying that span's context."""
        trace_contexts: dict[UUID, dict[str, str]] = {}
        # Every span stays open across the batch send, so its duration is the send's.
        with ExitStack() as spans:
            for task in tasks:
                spans.enter_context(
                    self._tracing.start_span(
                        RELAY_SPAN,
                        as_carrier(stored_contexts.get(task.task_id)),
                        resource=task.kind,
                        tags={
                            "herald.task_id": str(task.task_id),
                            "herald.tenant_id": str(task.tenant_id),
                        },
                    )
                )
                carrier = self._tracing.inject_context()
                if carrier is not None:
                    trace_contexts[task.task_id] = carrier
            self._producer.send(tasks, trace_contexts=trace_contexts)

    def _tasks_of(
        self, rows: Sequence[Message]
    ) -> tuple[list[TaskEnvelope[EmailPayload]], dict[UUID, str]]:
        tasks: list[TaskEnvelope[EmailPayload]] = []
        invalid: dict[UUID, str] = {}
        for row in rows:
            try:
                tasks.append(task_of(row))
            except ValidationError as error:
                invalid[row.id] = (
                    f"the stored message is not a valid task: {describe_validation_error(error)}"
                )
        return tasks, invalid

    def _fail_invalid(self, session: Session, invalid: dict[UUID, str]) -> None:
        # A row no task can be made of would block the relay forever: it fails, with why.
        for message_id, reason in invalid.items():
            self._logger.error(
                "message cannot be relayed", extra={"message_id": str(message_id), "error": reason}
            )
            session.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(
                    status=MessageStatus.FAILED.value,
                    error=reason,
                    finished_at=func.now(),
                    updated_at=func.now(),
                )
            )


def _seconds_late(row: Message) -> float:
    """How long after its send_at a row was relayed: the relay's lag."""
    return max(0.0, (utc_now() - row.send_at).total_seconds())
