"""The task runner's logic: SQS records of the task queue in, one result per task out.

For each record:

1. parse the body into a ``TaskEnvelope``; a body that is not one is moved to the
   dead-letter queue at once (retrying cannot fix it) and counted in ``TasksDeadLettered``;
2. run the task once per ``task_id`` (Powertools idempotency on DynamoDB): a
   ``PermanentError`` becomes a ``failed`` result with its ``FailureCode`` (Herald's
   reason, the only one a tenant is shown) and its message (the detail for
   operators), a ``TransientError``
   leaves the record in ``batchItemFailures`` so SQS redelivers it (and, after
   ``maxReceiveCount`` receives, moves it to the dead-letter queue);
3. publish the result. A redelivered task replays its stored result without sending
   again, and publishes it again: the backend applies results idempotently.

Each task runs inside a ``herald.task`` span, child of the trace context its record
carries in the ``_datadog`` attribute (the relay's span), so one email is one trace even
when a batch holds many. A record without a usable context starts a new trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
)
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import ValidationError

from shared.adapters.ses import SesEmailSender
from shared.adapters.sqs import SqsDeadLetterSink, SqsResultPublisher
from shared.contracts import AnyTask, TaskResult, describe_validation_error, utc_now
from shared.errors import PermanentError, TransientError
from shared.tasks import build_task_registry
from shared.tracing import NO_TRACING, TRACE_CONTEXT_ATTRIBUTE, decode_trace_context

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from aws_lambda_powertools import Logger, Metrics
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.idempotency.persistence.base import (
        BasePersistenceLayer,
    )
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient

    from shared.ports import DeadLetterSink, ResultPublisher, Tracing
    from shared.registry import TaskRegistry
    from shared.settings import TaskRunnerSettings

# Part of every idempotency key: fixed, so renaming a module never re-sends a task.
IDEMPOTENCY_KEY_PREFIX = "herald.task"
TASK_SPAN = "herald.task"
TASKS_DEAD_LETTERED = "TasksDeadLettered"
TASKS_REPLAYED = "TasksReplayed"
SEND_LATENCY = "SendLatency"


class TaskQueueRecord(SqsRecordModel):
    """The parser model of a task queue record.

    Its body stays text: the runner parses it itself, so that a body that is not a task
    is moved to the dead-letter queue at once instead of failing the record five times.
    """

    body: str

    def trace_context(self) -> dict[str, str] | None:
        """The carrier in the record's ``_datadog`` attribute, or None if absent or malformed."""
        attribute = self.messageAttributes.get(TRACE_CONTEXT_ATTRIBUTE)
        return decode_trace_context(attribute.stringValue if attribute is not None else None)


@dataclass(frozen=True)
class IdempotencySetup:
    """Where idempotency records live and how long they are kept."""

    persistence: BasePersistenceLayer
    config: IdempotencyConfig


class TaskRunner:
    """Runs the tasks of SQS events from the task queue.

    Parameters
    ----------
    registry
        Which function runs which task kind.
    results
        Where each task's result is published.
    dead_letters
        Where a record that is not a task at all is moved.
    logger, metrics
        Powertools Logger and Metrics of the process.
    idempotency
        Records of finished tasks, so a task delivered twice runs once. ``None`` only
        where no two deliveries can happen (unit tests of the logic).
    clock
        The current time; injected for tests.
    tracing
        Where each task's ``herald.task`` span goes; no spans by default.
    """

    def __init__(
        self,
        *,
        registry: TaskRegistry,
        results: ResultPublisher,
        dead_letters: DeadLetterSink,
        logger: Logger,
        metrics: Metrics,
        idempotency: IdempotencySetup | None,
        clock: Callable[[], datetime] = utc_now,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._registry = registry
        self._tracing = tracing
        self._results = results
        self._dead_letters = dead_letters
        self._logger = logger
        self._metrics = metrics
        self._idempotency = idempotency
        self._clock = clock
        self._processor = BatchProcessor(event_type=EventType.SQS, model=TaskQueueRecord)
        self._execute_once: Callable[..., TaskResult] = self._execute
        if idempotency is not None:
            self._execute_once = idempotent_function(
                self._execute,
                data_keyword_argument="task",
                persistence_store=idempotency.persistence,
                config=idempotency.config,
                output_serializer=PydanticSerializer(TaskResult),
                key_prefix=IDEMPOTENCY_KEY_PREFIX,
            )

    def handle_batch(
        self, event: dict[str, Any], context: LambdaContext
    ) -> PartialItemFailureResponse:
        """Process one SQS event; return the records SQS must redeliver."""
        if self._idempotency is not None:
            # Lets an in-progress record expire with this invocation if it times out.
            self._idempotency.config.register_lambda_context(context)
        return process_partial_response(
            event=event,
            record_handler=self.process_record,
            processor=self._processor,
            context=context,
        )

    def process_record(self, record: TaskQueueRecord) -> None:
        """Process one record; raise to have SQS redeliver it."""
        task = self._parse(record)
        if task is None:
            return
        with (
            self._tracing.start_span(
                TASK_SPAN,
                record.trace_context(),
                resource=task.kind,
                tags={"herald.task_id": str(task.task_id), "herald.tenant_id": str(task.tenant_id)},
            ),
            self._logger.append_context_keys(
                task_id=str(task.task_id), tenant_id=str(task.tenant_id)
            ),
        ):
            try:
                result = self._execute_once(task=task)
                self._results.publish(result)
            except IdempotencyAlreadyInProgressError as error:
                self._logger.warning("task is in progress in another invocation; retrying later")
                raise TransientError("task is already in progress elsewhere") from error
            except TransientError as error:
                self._logger.warning(
                    "transient failure: the record goes back to the queue",
                    extra={
                        "error": str(error),
                        "receive_count": record.attributes.ApproximateReceiveCount,
                    },
                )
                raise
            except Exception:
                self._logger.exception("unexpected error: the record goes back to the queue")
                raise
            self._logger.info(
                "task finished",
                extra={
                    "status": result.status.value,
                    "error": result.error,
                    "error_code": result.error_code,
                },
            )

    def _parse(self, record: TaskQueueRecord) -> AnyTask | None:
        """The record's task, or None once a body that is not a task was dead-lettered."""
        try:
            return AnyTask.model_validate_json(record.body)
        except ValidationError as error:
            reason = f"not a valid task: {describe_validation_error(error)}"
        self._dead_letters.dead_letter(
            record.body, reason=reason, source_message_id=record.messageId
        )
        # The body may hold personal data: log its size, never its content.
        self._logger.error(
            "unparseable task moved to the dead-letter queue",
            extra={
                "message_id": record.messageId,
                "reason": reason,
                "body_bytes": len(record.body),
            },
        )
        self._metrics.add_metric(name=TASKS_DEAD_LETTERED, unit=MetricUnit.Count, value=1)
        return None

    def _execute(self, task: AnyTask) -> TaskResult:
        """Run ``task``: the unit made idempotent, so it runs once per ``task_id``."""
        names = self._registry.metrics_for(task.kind)
        try:
            provider_message_id = self._registry.run(task)
        except PermanentError as error:
            self._logger.error(
                "task failed permanently",
                extra={"error": str(error), "error_code": error.code.value},
            )
            self._metrics.add_metric(name=names.failed, unit=MetricUnit.Count, value=1)
            return TaskResult.failed(task.task_id, str(error), self._clock(), code=error.code)
        finished_at = self._clock()
        # Measured from when the task was due, so a message scheduled for next week
        # reports the pipeline's latency, not the schedule.
        due_at = max(task.created_at, task.send_at)
        latency_ms = max(0.0, (finished_at - due_at).total_seconds() * 1000)
        self._metrics.add_metric(name=names.sent, unit=MetricUnit.Count, value=1)
        self._metrics.add_metric(name=SEND_LATENCY, unit=MetricUnit.Milliseconds, value=latency_ms)
        return TaskResult.sent(task.task_id, provider_message_id, finished_at)


def build_task_runner(
    settings: TaskRunnerSettings,
    *,
    sqs: SQSClient,
    sesv2: SESV2Client,
    dynamodb: DynamoDBClient,
    logger: Logger,
    metrics: Metrics,
    tracing: Tracing = NO_TRACING,
) -> TaskRunner:
    """Wire a ``TaskRunner`` to AWS: SES, the result queue, the DLQ and DynamoDB."""

    def count_replay(response: Any, idempotent_data: DataRecord) -> Any:
        # A second delivery of a finished task: its stored result is published again.
        logger.info("duplicate delivery: replaying the stored result, nothing is sent again")
        metrics.add_metric(name=TASKS_REPLAYED, unit=MetricUnit.Count, value=1)
        return response

    registry = build_task_registry(
        email_sender=SesEmailSender(sesv2), sender_email=settings.sender_email
    )
    idempotency = IdempotencySetup(
        persistence=DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table, boto3_client=dynamodb
        ),
        config=IdempotencyConfig(
            event_key_jmespath="task_id",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=settings.idempotency_ttl_seconds,
            response_hook=count_replay,
        ),
    )
    return TaskRunner(
        registry=registry,
        results=SqsResultPublisher(sqs, settings.result_queue_url),
        dead_letters=SqsDeadLetterSink(sqs, settings.task_dlq_url),
        logger=logger,
        metrics=metrics,
        idempotency=idempotency,
        tracing=tracing,
    )
