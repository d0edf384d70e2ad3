"""Builders of valid contract objects and in-memory fakes of the ports, for any test."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from aws_lambda_powertools.metrics import MetricUnit

from shared.adapters.sqs import SqsTaskProducer
from shared.contracts import EmailPayload, TaskEnvelope, TaskResult
from shared.errors import TaskBatchSendError

SENDER = "herald@example.com"
TENANT_ID = UUID("7d3f1a2e-5b6c-4d8e-9f01-23456789abcd")
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def make_email(**changes: Any) -> EmailPayload:
    """A valid email, with ``changes`` applied."""
    fields: dict[str, Any] = {
        "sender": SENDER,
        "to": ["reader@example.org"],
        "subject": "Hello",
        "text": "Hello from Herald.",
    }
    fields.update(changes)
    return EmailPayload(**fields)


def make_task(email: EmailPayload | None = None, **changes: Any) -> TaskEnvelope[EmailPayload]:
    """A valid ``email.send`` task, with ``changes`` applied to the envelope."""
    fields: dict[str, Any] = {
        "task_id": uuid4(),
        "kind": "email.send",
        "tenant_id": TENANT_ID,
        "created_at": NOW,
        "send_at": NOW,
        "payload": email or make_email(),
    }
    fields.update(changes)
    return TaskEnvelope[EmailPayload](**fields)


class FakeEmailSender:
    """An in-memory ``EmailSender``: records sends, or raises a queued error."""

    def __init__(self) -> None:
        self.sent: list[tuple[EmailPayload, UUID]] = []
        self.errors: list[Exception] = []

    def send(self, email: EmailPayload, *, task_id: UUID, tenant_id: UUID) -> str:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append((email, task_id))
        return f"ses-{len(self.sent)}"


class FakeResultPublisher:
    """An in-memory ``ResultPublisher``."""

    def __init__(self) -> None:
        self.results: list[TaskResult] = []

    def publish(self, result: TaskResult) -> None:
        self.results.append(result)


class FakeDeadLetterSink:
    """An in-memory ``DeadLetterSink``."""

    def __init__(self) -> None:
        self.letters: list[dict[str, str]] = []

    def dead_letter(self, body: str, *, reason: str, source_message_id: str) -> None:
        self.letters.append(
            {"body": body, "reason": reason, "source_message_id": source_message_id}
        )


class FlakyProducer:
    """SQS down for the first ``outages`` calls, then the real producer."""

    def __init__(self, real: SqsTaskProducer, outages: int) -> None:
        self.real = real
        self.outages = outages

    def send(
        self,
        tasks: Sequence[TaskEnvelope[Any]],
        *,
        trace_contexts: Mapping[UUID, Mapping[str, str]] | None = None,
    ) -> None:
        if self.outages:
            self.outages -= 1
            raise TaskBatchSendError(
                dict.fromkeys((t.task_id for t in tasks), "ServiceUnavailable"), sent=[]
            )
        self.real.send(tasks, trace_contexts=trace_contexts)


class RecordedMetrics:
    """A ``MetricRecorder`` that keeps what was added, by name."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)

    def add_metric(self, name: str, unit: MetricUnit | str, value: float) -> None:
        self.values[name].append(value)
