"""The task pipeline the fault scenarios run, and the invariants every scenario ends with.

Every piece is the real one: the outbox relay (``ecs_service.worker.relay``), the task
runner (``shared.task_runner.build_task_runner``: SES, the result queue, the dead-letter
queue and the idempotency table, all on the moto server), driven by the local SQS event
source (``herald_local.sqs_event_source``: real Lambda events, ``batchItemFailures``
honoured), and the results consumer (``ecs_service.worker.results``). The task queue has
the template's redrive policy (``maxReceiveCount``) and a 1 s visibility timeout, so a
retried task comes back at once. Queues and table are new for each test.

Each email's subject holds its message id, so moto's record of what SES sent
(``herald_local.mailbox``) says how many times each message was sent.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import boto3
from aws_lambda_powertools import Logger, Metrics
from botocore.exceptions import ClientError
from mypy_boto3_sqs import SQSClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service.db.models import Message
from ecs_service.worker.relay import Relay
from ecs_service.worker.results import ResultsConsumer
from herald_local.mailbox import read_mailbox
from herald_local.sqs_event_source import EventSourceSettings, SqsEventSource
from shared.adapters.sqs import SqsTaskProducer
from shared.adapters.sqs_receiver import SqsResultReceiver
from shared.settings import TaskRunnerSettings
from shared.task_runner import build_task_runner
from tests.integration.conftest import SENDER
from tests.support.builders import PAYLOAD, insert_messages
from tests.support.pipeline import pipeline_template, template_pipeline
from tests.support.queues import drain
from tests.support.waits import wait_for

# How many messages each scenario moves: small for `make test`, 1,000 for the bench.
N = int(os.environ.get("HERALD_FAULT_N", "20"))
SUBJECT_PREFIX = "herald-fault "
FINAL_STATUSES = ("sent", "failed")
REGION = "us-east-1"
# A retried task or result comes back after this long (the template's 300 s and 60 s
# would stall a test).
VISIBILITY_TIMEOUT_SECONDS = 1
# The template's logical IDs of what a scenario uses.
TASK_QUEUE, RESULT_QUEUE, IDEMPOTENCY_TABLE = "TaskQueue", "ResultQueue", "IdempotencyTable"


def settle_timeout(count: int) -> float:
    """How long a scenario may take to move ``count`` messages on a loaded 2-core machine."""
    return 60 + count * 0.3


def subject_of(message_id: UUID) -> str:
    return f"{SUBJECT_PREFIX}{message_id}"


def insert_due_messages(engine: Engine, tenant_id: UUID, count: int) -> list[UUID]:
    """``count`` messages due a second ago, each with its id in its subject."""
    return insert_messages(
        engine,
        tenant_id,
        count,
        payload=lambda message_id: (
            PAYLOAD | {"subject": subject_of(message_id), "text": "Sent under fault injection."}
        ),
    )


def statuses_of(engine: Engine, message_ids: list[UUID]) -> dict[UUID, tuple[str, str | None]]:
    """Each message's status and error."""
    with Session(engine) as session:
        rows = session.execute(
            select(Message.id, Message.status, Message.error).where(Message.id.in_(message_ids))
        ).all()
    return {row.id: (row.status, row.error) for row in rows}


def ses_sends(endpoint_url: str) -> Counter[UUID]:
    """How many times SES (moto) accepted each fault-test message, by message id."""
    return Counter(
        UUID(email.subject.removeprefix(SUBJECT_PREFIX))
        for email in read_mailbox(endpoint_url, timeout=30)
        if email.subject.startswith(SUBJECT_PREFIX)
    )


class FlakySes:
    """A sesv2 client whose ``SendEmail`` is throttled for the chosen messages' first tries.

    SES answers ``TooManyRequestsException`` (HTTP 429) when the send rate is exceeded;
    the adapter turns it into a ``ThrottledError``, and the task runner retries it in place.
    """

    def __init__(self, real: Any, failures: dict[UUID, int]) -> None:
        self._real = real
        self._remaining = dict(failures)
        self._lock = threading.Lock()
        self.injected = 0

    def send_email(self, **request: Any) -> Any:
        subject = request["Content"]["Simple"]["Subject"]["Data"]
        message_id = UUID(subject.removeprefix(SUBJECT_PREFIX))
        with self._lock:
            throttle = self._remaining.get(message_id, 0) > 0
            if throttle:
                self._remaining[message_id] -= 1
                self.injected += 1
        if throttle:
            raise ClientError(
                {
                    "Error": {
                        "Code": "TooManyRequestsException",
                        "Message": "Maximum sending rate exceeded.",
                    },
                    # What the adapter reads; the rest of botocore's metadata is not needed.
                    "ResponseMetadata": {"HTTPStatusCode": 429},  # type: ignore[typeddict-item]
                },
                "SendEmail",
            )
        return self._real.send_email(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@dataclass
class TaskPipeline:
    """Fresh queues and table on the moto server, and the pieces that move tasks through."""

    endpoint_url: str
    engine: Engine
    task_queue_url: str
    task_queue_arn: str
    dead_letter_queue_url: str
    result_queue_url: str
    table_name: str
    sqs: SQSClient = field(repr=False)
    # Records the task runner was handed, by task id (a duplicate delivery counts twice).
    deliveries: Counter[str] = field(default_factory=Counter)
    dead_lettered: set[UUID] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    invocations: list[str] = field(default_factory=list)

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service, endpoint_url=self.endpoint_url, region_name=REGION
        )

    def relay_until_idle(self, claim_size: int = 50) -> None:
        """The real relay, passes until nothing is due; fails if a pass queues nothing."""
        relay = Relay(
            self.engine,
            SqsTaskProducer(self.client("sqs"), self.task_queue_url),
            claim_size=claim_size,
            logger=Logger(service="herald-faults", level="WARNING"),
            metrics=Metrics(namespace="HeraldTests"),
        )
        while (relayed := relay.relay_due_messages()).claimed:
            assert relayed.queued, f"the relay queued nothing: {relayed}"

    def worker_environment(self, database_url: str, endpoint_url: str) -> dict[str, str]:
        """What a ``herald worker`` process needs to serve this pipeline, quickly paced."""
        return {
            "DATABASE_URL": database_url,
            "DATABASE_SSLMODE": "disable",
            "SENDER_EMAIL": SENDER,
            "TASK_QUEUE_URL": self.task_queue_url,
            "RESULT_QUEUE_URL": self.result_queue_url,
            "AWS_ENDPOINT_URL": endpoint_url,
            "RESULTS_WAIT_SECONDS": "1",
            "RELAY_POLL_SECONDS": "1",
            "RELAY_MAX_BACKOFF_SECONDS": "1",
            # moto has no sesv2 GetAccount: unpaced, as herald-local
            "SES_MAX_SEND_RATE": "1000",
            "LOG_LEVEL": "WARNING",
        }

    @contextmanager
    def task_runner(self, sesv2: Any = None, *, apply_results: bool = True) -> Iterator[None]:
        """The task runner (and the results consumer, unless the worker applies them) at
        work in threads until the block ends."""
        stop = threading.Event()
        threads = [threading.Thread(target=self._run_tasks, args=(stop, sesv2), name="task-runner")]
        if apply_results:
            threads.append(threading.Thread(target=self._apply_results, args=(stop,)))
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads), "a pipeline thread hung"

    def _run_tasks(self, stop: threading.Event, sesv2: Any) -> None:
        settings = TaskRunnerSettings(
            RESULT_QUEUE_URL=self.result_queue_url,
            TASK_DLQ_URL=self.dead_letter_queue_url,
            IDEMPOTENCY_TABLE=self.table_name,
            SENDER_EMAIL=SENDER,
        )
        runner = build_task_runner(
            settings,
            sqs=self.client("sqs"),
            sesv2=sesv2 or self.client("sesv2"),
            dynamodb=self.client("dynamodb"),
            logger=Logger(service="herald-faults", level="ERROR"),
            metrics=Metrics(namespace="HeraldTests"),
        )

        def handler(event: dict[str, Any], context: Any) -> Any:
            for record in event["Records"]:
                self.deliveries[_task_id(record["body"])] += 1
            return runner.handle_batch(event, context)

        function = pipeline_template().task_runner
        source = SqsEventSource(
            EventSourceSettings(
                queue_url=self.task_queue_url,
                queue_arn=self.task_queue_arn,
                region=REGION,
                batch_size=function.event.batch_size,
                batching_window_seconds=function.event.maximum_batching_window_seconds,
                report_batch_item_failures=function.event.report_batch_item_failures,
                function_name="herald-faults-TaskRunnerFunction",
                function_timeout_seconds=function.timeout_seconds,
                memory_mb=function.memory_mb,
            ),
            handler,
            self.client("sqs"),
            log=self.invocations.append,
        )
        while not stop.is_set():
            try:
                source.run(stop)
            except Exception as error:  # noqa: BLE001 - kept for the assertion message
                self.errors.append(f"event source: {error!r}")
                stop.wait(0.5)

    def _apply_results(self, stop: threading.Event) -> None:
        consumer = ResultsConsumer(
            self.engine,
            SqsResultReceiver(self.client("sqs"), self.result_queue_url, wait_seconds=1),
            logger=Logger(service="herald-faults", level="ERROR"),
            metrics=Metrics(namespace="HeraldTests"),
        )
        while not stop.is_set():
            try:
                consumer.consume_once()
            except Exception as error:  # noqa: BLE001 - kept for the assertion message
                self.errors.append(f"results consumer: {error!r}")
                stop.wait(0.5)

    def queue_is_empty(self, queue_url: str) -> bool:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return all(int(count) == 0 for count in attributes.values())

    def collect_dead_letters(self) -> None:
        for message in drain(self.sqs, self.dead_letter_queue_url):
            self.dead_lettered.add(UUID(_task_id(str(message["Body"]))))


def _task_id(body: str) -> str:
    try:
        return str(json.loads(body)["task_id"])
    except (ValueError, KeyError, TypeError):
        return "<not a task>"


@contextmanager
def task_pipeline(engine: Engine, endpoint_url: str) -> Iterator[TaskPipeline]:
    """The template's queues and idempotency table, new for one test; a failed task and a
    result received just as the network failed come back after a short timeout."""
    quickly = {"VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS)}
    with template_pipeline(
        f"faults-{uuid4().hex[:12]}",
        endpoint_url=endpoint_url,
        queue_attributes={TASK_QUEUE: quickly, RESULT_QUEUE: quickly},
    ) as made:
        yield TaskPipeline(
            endpoint_url=endpoint_url,
            engine=engine,
            task_queue_url=made.task_queue_url,
            task_queue_arn=made.task_queue_arn,
            dead_letter_queue_url=made.task_dead_letter_queue_url,
            result_queue_url=made.result_queue_url,
            table_name=made.table_names[IDEMPOTENCY_TABLE],
            sqs=boto3.client("sqs", endpoint_url=endpoint_url, region_name=REGION),
        )


@dataclass(frozen=True)
class Outcome:
    """Where a scenario's messages ended, once the pipeline settled."""

    messages: int
    sent: int
    failed: int
    dead_lettered: int
    deliveries: int  # records handed to the task runner, redeliveries and duplicates included
    ses_sends: int


def assert_no_email_lost_or_sent_twice(
    pipeline: TaskPipeline, message_ids: list[UUID], *, timeout: float | None = None
) -> Outcome:
    """Wait for the pipeline to settle, then check Herald's promise for ``message_ids``.

    Settled: every message is ``sent`` or ``failed`` or its task is in the dead-letter
    queue, and the task and result queues are empty. Then: a ``sent`` message went
    through SES exactly once, a ``failed`` one carries a reason and was not sent, a
    dead-lettered one was not sent either.
    """

    def settled() -> bool:
        pipeline.collect_dead_letters()
        statuses = statuses_of(pipeline.engine, message_ids)
        return (
            all(
                status in FINAL_STATUSES or message_id in pipeline.dead_lettered
                for message_id, (status, _) in statuses.items()
            )
            and pipeline.queue_is_empty(pipeline.task_queue_url)
            and pipeline.queue_is_empty(pipeline.result_queue_url)
        )

    try:
        wait_for(settled, timeout or settle_timeout(len(message_ids)), "the pipeline to settle")
    except AssertionError:
        where = Counter(status for status, _ in statuses_of(pipeline.engine, message_ids).values())
        raise AssertionError(
            f"not settled: statuses {dict(where)}, {len(pipeline.dead_lettered)} dead-lettered,"
            f" pipeline errors {pipeline.errors[-3:]}, last invocations {pipeline.invocations[-3:]}"
        ) from None
    statuses = statuses_of(pipeline.engine, message_ids)
    sends = ses_sends(pipeline.endpoint_url)
    assert len(statuses) == len(message_ids), "a message row is missing"
    sent_twice = {i: sends[i] for i in message_ids if sends[i] > 1}
    assert not sent_twice, f"sent more than once: {sent_twice}"
    wrong = {
        message_id: (status, sends[message_id])
        for message_id, (status, error) in statuses.items()
        if (status == "sent") != (sends[message_id] == 1) or (status == "failed" and not error)
    }
    assert not wrong, f"status and SES sends disagree (status, sends): {wrong}"
    counted = Counter(status for status, _ in statuses.values())
    return Outcome(
        messages=len(message_ids),
        sent=counted["sent"],
        failed=counted["failed"],
        dead_lettered=len(pipeline.dead_lettered & set(message_ids)),
        deliveries=sum(pipeline.deliveries[str(i)] for i in message_ids),
        ses_sends=sum(sends[i] for i in message_ids),
    )
