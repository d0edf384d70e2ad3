"""The task runner's logic: SQS records of the task queue in, one result per task out.

For each record:

1. parse the body into a ``TaskEnvelope``; a body that is not one is moved to the
   dead-letter queue at once (retrying cannot fix it) and counted in ``TasksDeadLettered``;
2. run the task once per ``task_id`` (Powertools idempotency on DynamoDB, keyed by the
   hash of the task id alone): a ``PermanentError`` becomes a ``failed`` result with its
   ``FailureCode`` (Herald's reason, the only one a tenant is shown) and its message (the
   detail for operators); a ``TransientError`` (SES throttling included) is retried in
   place with jittered exponential backoff while the invocation has time to spare, then
   leaves the record in ``batchItemFailures`` so SQS redelivers it (and, after
   ``maxReceiveCount`` receives, moves it to the dead-letter queue);
3. publish the result. A redelivered task replays its stored result without sending
   again, and publishes it again: the backend applies results idempotently.

A task SES still throttles after the retries is not failed and not retried through SQS's
receive count: a copy of its record goes back on the task queue with a delay (jittered,
growing with each deferral, at most SQS's 15 minutes) and the original is reported
processed, so Lambda deletes it. The copy is a new message, so ordinary throttling never
moves a task towards the dead-letter queue. It is safe: the throttled send left no
idempotency record (Powertools deletes it when the function raises), and were the
original delivered again beside its copy, the idempotency record makes one of them a
replay. Only a task deferred ``max_deferrals`` times (about a day) takes the ordinary
retry path, so a quota that never comes back still ends in the dead-letter queue's alarm.

Each task runs inside a ``herald.task`` span, child of the trace context its record
carries in the ``_datadog`` attribute (the relay's span), so one email is one trace even
when a batch holds many. A record without a usable context starts a new trace.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import botocore.session
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
)
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from botocore.exceptions import BotoCoreError, ClientError
from botocore.loaders import Loader
from pydantic import ValidationError

from shared.adapters.client_errors import to_herald_error
from shared.adapters.ses import SesEmailSender
from shared.adapters.sqs import SqsDeadLetterSink, SqsResultPublisher
from shared.contracts import AnyTask, TaskResult, describe_validation_error, utc_now
from shared.errors import PermanentError, ThrottledError, TransientError
from shared.tasks import build_task_registry
from shared.tracing import NO_TRACING, TRACE_CONTEXT_ATTRIBUTE, decode_trace_context

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    from aws_lambda_powertools import Logger, Metrics
    from aws_lambda_powertools.utilities.batch.types import (
        PartialItemFailureResponse,
        PartialItemFailures,
    )
    from aws_lambda_powertools.utilities.idempotency.persistence.base import (
        BasePersistenceLayer,
    )
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

    from shared.ports import DeadLetterSink, ResultPublisher, Tracing
    from shared.registry import TaskRegistry
    from shared.settings import TaskRunnerSettings

# Part of every idempotency key: fixed, so renaming a module never re-sends a task.
IDEMPOTENCY_KEY_PREFIX = "herald.task"
TASK_SPAN = "herald.task"
TASKS_DEAD_LETTERED = "TasksDeadLettered"
TASKS_REPLAYED = "TasksReplayed"
TASKS_THROTTLED = "TasksThrottled"  # each send SES refused for the sending quota
TASKS_DEFERRED = "TasksDeferred"  # each task queued again with a delay after throttling
SEND_LATENCY = "SendLatency"
# How many times a task was queued again after throttling: a message attribute of the copy.
DEFERRALS_ATTRIBUTE = "herald-throttle-deferrals"
SQS_MAX_DELAY_SECONDS = 900
# The log keys every line of a record carries while it is processed.
_RECORD_LOG_KEYS = ("task_id", "tenant_id")


class TaskQueueRecord:
    """A task queue record, as Lambda's event holds it, read on access.

    Lambda's event is not validated again field by field for every record (a parser model
    cost ~35 µs a record for fields never read), and Powertools' SQS data class is not
    used: importing it imports every event source's data class (~50 ms of each cold
    start with Powertools' batch utility, which imports all its parser models too). The
    body stays text: the runner parses it itself, so that a body that is not a task is
    moved to the dead-letter queue at once instead of failing the record five times.
    """

    __slots__ = ("raw_event",)

    def __init__(self, raw_event: dict[str, Any]) -> None:
        self.raw_event = raw_event

    def __getitem__(self, key: str) -> Any:
        return self.raw_event[key]

    @property
    def message_id(self) -> str:
        """The SQS message id (``messageId``)."""
        return str(self.raw_event["messageId"])

    @property
    def body(self) -> str:
        """The message body, as sent."""
        return str(self.raw_event["body"])

    @property
    def receive_count(self) -> int | None:
        """How many times SQS delivered the message (``ApproximateReceiveCount``)."""
        value = self.raw_event.get("attributes", {}).get("ApproximateReceiveCount")
        return int(value) if value is not None else None

    def string_attribute(self, name: str) -> str | None:
        """The string value of the message attribute ``name``, or None if absent."""
        attribute = self["messageAttributes"].get(name)
        return attribute.get("stringValue") if attribute is not None else None

    def trace_context(self) -> dict[str, str] | None:
        """The carrier in the record's ``_datadog`` attribute, or None if absent or malformed."""
        return decode_trace_context(self.string_attribute(TRACE_CONTEXT_ATTRIBUTE))


@dataclass(frozen=True)
class RetryPolicy:
    """How a task whose send failed transiently is retried in place, then deferred.

    In place: up to ``attempts`` sends, pausing a random time (full jitter) up to
    ``base_pause_seconds`` doubled after each try, never more than ``max_pause_seconds``,
    and never when the pause would end within ``reserve_seconds`` of the invocation's
    deadline (Timeout 30 s: ten throttled records cannot push a batch past it).
    Deferred (throttling only): queued again after a random delay between half and all of
    ``defer_base_seconds`` doubled per earlier deferral, at most SQS's 900 s; at most
    ``max_deferrals`` times (100: about 18 hours of delays on average, 24 at most).
    """

    attempts: int = 4
    base_pause_seconds: float = 0.1
    max_pause_seconds: float = 2.0
    reserve_seconds: float = 10.0
    defer_base_seconds: float = 10.0
    max_deferrals: int = 100

    def pause(self, attempt: int, rng: random.Random) -> float:
        """The pause after the ``attempt``-th send (1-based) failed."""
        ceiling = min(self.max_pause_seconds, self.base_pause_seconds * 2 ** (attempt - 1))
        return rng.uniform(0, ceiling)

    def deferral_delay(self, deferrals: int, rng: random.Random) -> int:
        """Seconds before a task deferred ``deferrals`` times already is received again."""
        ceiling = min(SQS_MAX_DELAY_SECONDS, self.defer_base_seconds * 2**deferrals)
        return max(1, round(rng.uniform(ceiling / 2, ceiling)))


class BatchFailedError(Exception):
    """Every record of the batch failed: the invocation fails and SQS redelivers them all
    (Powertools' ``BatchProcessingError``, ``raise_on_entire_batch_failure``)."""

    def __init__(self, errors: Sequence[Exception]) -> None:
        self.errors = list(errors)
        first = errors[0] if errors else None
        super().__init__(
            f"all {len(self.errors)} records of the batch failed; the first: "
            f"{type(first).__name__}: {first}"
        )


class TaskRequeue(Protocol):
    """Puts a copy of a task queue record back on the task queue, after a delay."""

    def requeue(self, record: TaskQueueRecord, *, deferrals: int, delay_seconds: int) -> None: ...


class SqsTaskRequeue:
    """Puts a copy of a task queue record back on the task queue, with a delay.

    The body is the record's, unchanged; its message attributes (the trace context) are
    kept, and ``DEFERRALS_ATTRIBUTE`` counts the deferrals.
    """

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def requeue(self, record: TaskQueueRecord, *, deferrals: int, delay_seconds: int) -> None:
        """Send the copy; raise ``TransientError``/``PermanentError`` if SQS refuses."""
        attributes: dict[str, MessageAttributeValueTypeDef] = {
            name: {"DataType": value["dataType"], "StringValue": value["stringValue"]}
            for name, value in record["messageAttributes"].items()
            if value.get("stringValue") is not None
        }
        attributes[DEFERRALS_ATTRIBUTE] = {"DataType": "Number", "StringValue": str(deferrals)}
        try:
            self._client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=record.body,
                DelaySeconds=delay_seconds,
                MessageAttributes=attributes,
            )
        except (ClientError, BotoCoreError) as error:
            raise to_herald_error(error, "SQS SendMessage (deferred task)") from error


def deferrals_of(record: TaskQueueRecord) -> int:
    """How many times the task of ``record`` was deferred already (0 if never, or unreadable)."""
    value = record.string_attribute(DEFERRALS_ATTRIBUTE)
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


class TaskIdempotencyStore(DynamoDBPersistenceLayer):
    """Powertools' DynamoDB persistence layer, the task's key hashed once per record.

    Powertools hashes the idempotency data for each of its two writes (in progress, then
    completed), each through ``json.dumps`` with a new encoder. The data here is the task
    id, a string: its key is the same ``<prefix>#md5(json.dumps(task_id))``, computed
    once and kept for the record's second write. Any other data goes through Powertools.
    """

    def __init__(self, table_name: str, boto3_client: DynamoDBClient) -> None:
        super().__init__(table_name=table_name, boto3_client=boto3_client)
        # (function name, task id, its key): the last key computed.
        self._last_key: tuple[str, str, str] = ("", "", "")

    def _get_hashed_idempotency_key(self, data: Any) -> str | None:
        if type(data) is not str or not data or self.event_key_jmespath:
            return super()._get_hashed_idempotency_key(data)
        function_name, last_data, key = self._last_key
        if function_name != self.function_name or last_data != data:
            digest = self.hash_function(json.dumps(data).encode()).hexdigest()
            key = f"{self.function_name}#{digest}"
            self._last_key = (self.function_name, data, key)
        return key


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
    requeue
        Where a throttled task is queued again with a delay; ``None``: a throttled task
        takes the ordinary retry path (``batchItemFailures``).
    retry
        How transient failures are retried in place and throttled tasks deferred.
    sleep, monotonic, rng
        Injected for tests.
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
        requeue: TaskRequeue | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._registry = registry
        self._tracing = tracing
        self._results = results
        self._dead_letters = dead_letters
        self._logger = logger
        self._metrics = metrics
        self._idempotency = idempotency
        self._clock = clock
        self._requeue = requeue
        self._retry = retry
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        # When the current invocation times out (monotonic clock); none outside one.
        self._deadline = float("inf")
        self._execute_once: Callable[..., TaskResult] = self._execute
        if idempotency is not None:
            # The key is the hash of the task id alone (the same key the whole task's
            # ``task_id`` gave before): no copy or hash of the payload per record.
            self._execute_once = idempotent_function(
                self._execute,
                data_keyword_argument="task_key",
                persistence_store=idempotency.persistence,
                config=idempotency.config,
                output_serializer=PydanticSerializer(TaskResult),
                key_prefix=IDEMPOTENCY_KEY_PREFIX,
            )

    def reseed(self) -> None:
        """Draw the retry jitter from a fresh seed (after a SnapStart restore, which would
        otherwise resume every environment with the snapshot's random state)."""
        self._rng.seed()

    def handle_batch(
        self, event: dict[str, Any], context: LambdaContext
    ) -> PartialItemFailureResponse:
        """Process one SQS event; return the records SQS must redeliver."""
        self._deadline = self._monotonic() + context.get_remaining_time_in_millis() / 1000
        if self._idempotency is not None:
            # Lets an in-progress record expire with this invocation if it times out.
            self._idempotency.config.register_lambda_context(context)
        records = event.get("Records")
        if not records or not isinstance(records, list):
            raise ValueError("not an SQS event: it holds no Records")
        # Partial batch responses (ReportBatchItemFailures), as Powertools' BatchProcessor
        # gives them, without importing its batch utility (see TaskQueueRecord): a record
        # that raises is named for redelivery; when every record did, the invocation fails.
        failures: list[PartialItemFailures] = []
        errors: list[Exception] = []
        for raw in records:
            try:
                self.process_record(TaskQueueRecord(raw))
            except Exception as error:  # noqa: BLE001 - any failure: SQS redelivers the record
                failures.append({"itemIdentifier": raw["messageId"]})
                errors.append(error)
        if len(errors) == len(records):
            raise BatchFailedError(errors)
        return {"batchItemFailures": failures}

    def process_record(self, record: TaskQueueRecord) -> None:
        """Process one record; raise to have SQS redeliver it."""
        task = self._parse(record)
        if task is None:
            return
        task_id, tenant_id = str(task.task_id), str(task.tenant_id)
        # Every line of the record carries the task and tenant: keys appended for the
        # record and removed after it (what ``append_context_keys`` does, without its two
        # generator context managers per record).
        self._logger.append_keys(task_id=task_id, tenant_id=tenant_id)
        try:
            with self._tracing.start_span(
                TASK_SPAN,
                record.trace_context(),
                resource=task.kind,
                tags={"herald.task_id": task_id, "herald.tenant_id": tenant_id},
            ):
                try:
                    result = self._execute_once(task_key=task_id, task=task)
                    self._results.publish(result)
                except ThrottledError as error:
                    self._defer(record, error)
                    return
                except IdempotencyAlreadyInProgressError as error:
                    self._logger.warning(
                        "task is in progress in another invocation; retrying later"
                    )
                    raise TransientError("task is already in progress elsewhere") from error
                except TransientError as error:
                    self._logger.warning(
                        "transient failure: the record goes back to the queue",
                        extra={
                            "error": str(error),
                            "receive_count": record.receive_count,
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
        finally:
            self._logger.remove_keys(_RECORD_LOG_KEYS)

    def _defer(self, record: TaskQueueRecord, error: ThrottledError) -> None:
        """Queue the throttled task again with a delay, or raise to retry it through SQS."""
        deferrals = deferrals_of(record)
        if self._requeue is None or deferrals >= self._retry.max_deferrals:
            self._logger.warning(
                "throttled: the record goes back to the queue",
                extra={"error": str(error), "deferrals": deferrals},
            )
            raise TransientError(str(error)) from error
        delay = self._retry.deferral_delay(deferrals, self._rng)
        # If this fails, the error reaches the batch processor: the record is retried.
        self._requeue.requeue(record, deferrals=deferrals + 1, delay_seconds=delay)
        self._metrics.add_metric(name=TASKS_DEFERRED, unit=MetricUnit.Count, value=1)
        self._logger.warning(
            "throttled: the task is queued again with a delay",
            extra={"error": str(error), "deferrals": deferrals + 1, "delay_seconds": delay},
        )

    def _run_with_retries(self, task: AnyTask) -> str | None:
        """Run ``task``, retrying a transient failure in place while time allows."""
        attempt = 1
        while True:
            try:
                return self._registry.run(task)
            except TransientError as error:
                if isinstance(error, ThrottledError):
                    self._metrics.add_metric(name=TASKS_THROTTLED, unit=MetricUnit.Count, value=1)
                pause = self._retry.pause(attempt, self._rng)
                ends = self._monotonic() + pause
                if (
                    attempt >= self._retry.attempts
                    or ends > self._deadline - self._retry.reserve_seconds
                ):
                    raise
                self._logger.debug(
                    "transient failure: retrying in place",
                    extra={"error": str(error), "attempt": attempt, "pause_seconds": pause},
                )
                self._sleep(pause)
                attempt += 1

    def _parse(self, record: TaskQueueRecord) -> AnyTask | None:
        """The record's task, or None once a body that is not a task was dead-lettered."""
        try:
            return AnyTask.model_validate_json(record.body)
        except ValidationError as error:
            reason = f"not a valid task: {describe_validation_error(error)}"
        self._dead_letters.dead_letter(
            record.body, reason=reason, source_message_id=record.message_id
        )
        # The body may hold personal data: log its size, never its content.
        self._logger.error(
            "unparseable task moved to the dead-letter queue",
            extra={
                "message_id": record.message_id,
                "reason": reason,
                "body_bytes": len(record.body),
            },
        )
        self._metrics.add_metric(name=TASKS_DEAD_LETTERED, unit=MetricUnit.Count, value=1)
        return None

    def _execute(self, task: AnyTask, task_key: str = "") -> TaskResult:
        """Run ``task``: the unit made idempotent, so it runs once per ``task_key``
        (its ``task_id``)."""
        names = self._registry.metrics_for(task.kind)
        try:
            provider_message_id = self._run_with_retries(task)
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


class KnownServicesLoader(Loader):
    """botocore's data loader, told which services the process uses.

    botocore checks every client's service name against the list of all the services it
    ships, which it builds by listing each of ~440 data folders twice (service models and
    endpoint rules): most of the cost of building the runner's three clients at cold start.
    A name outside ``services`` is still refused (``UnknownServiceError``).
    """

    def __init__(self, services: Sequence[str]) -> None:
        super().__init__()
        self._services = sorted(services)

    def list_available_services(self, type_name: str) -> list[str]:
        """The services given, whatever the model type."""
        return list(self._services)


def aws_session(services: Sequence[str]) -> boto3.session.Session:
    """One boto3 session for the clients of ``services``, its loader told which they are."""
    core = botocore.session.get_session()
    core.register_component("data_loader", KnownServicesLoader(services))
    return boto3.session.Session(botocore_session=core)


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
        email_sender=SesEmailSender(sesv2, configuration_set=settings.ses_configuration_set),
        sender_email=settings.sender_email,
    )
    idempotency = IdempotencySetup(
        persistence=TaskIdempotencyStore(settings.idempotency_table, dynamodb),
        config=IdempotencyConfig(
            # No JMESPath: the data is the task id itself (``task_key``).
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
        requeue=SqsTaskRequeue(sqs, settings.task_queue_url) if settings.task_queue_url else None,
    )
