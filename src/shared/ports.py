"""The small interfaces the logic depends on; ``shared.adapters`` implements them on AWS.

Tests give the logic in-memory fakes of these, and the adapters are tested on moto.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from contextlib import AbstractContextManager
    from uuid import UUID

    from shared.contracts import EmailPayload, TaskEnvelope, TaskResult

# What a consumed queue's bodies parse to (a TaskResult, an SES event).
ParsedT_co = TypeVar("ParsedT_co", covariant=True)


class EmailSender(Protocol):
    """Sends one email and returns the provider's message id."""

    def send(self, email: EmailPayload, *, task_id: UUID, tenant_id: UUID) -> str: ...


class TaskProducer(Protocol):
    """Puts tasks on the task queue; raises ``TaskBatchSendError`` naming any not queued.

    ``trace_contexts`` maps a task id to the trace context (Datadog propagation headers)
    its message carries beside the body; a task without one starts a new trace.
    """

    def send(
        self,
        tasks: Sequence[TaskEnvelope[Any]],
        *,
        trace_contexts: Mapping[UUID, Mapping[str, str]] | None = None,
    ) -> None: ...


class ResultPublisher(Protocol):
    """Publishes the outcome of a task for the backend to apply."""

    def publish(self, result: TaskResult) -> None: ...


class DeadLetterSink(Protocol):
    """Keeps a message that cannot be processed at all, with the reason, for an operator."""

    def dead_letter(self, body: str, *, reason: str, source_message_id: str) -> None: ...


class Tracing(Protocol):
    """Distributed tracing as the logic sees it: a no-op unless Datadog is on.

    A trace context travels between processes as a carrier, a small mapping of
    propagation headers (``x-datadog-trace-id``, ``traceparent``, ...).
    """

    def inject_context(self) -> dict[str, str] | None:
        """The active span's context as a carrier, or None if no span is active."""
        ...

    def start_span(
        self,
        name: str,
        parent: Mapping[str, str] | None,
        *,
        resource: str,
        tags: Mapping[str, str],
    ) -> AbstractContextManager[None]:
        """A span, active while the block runs, child of ``parent`` (or a new trace)."""
        ...


@dataclass(frozen=True)
class Received(Generic[ParsedT_co]):
    """One message of a queue the backend consumes: its body parsed, or why it is not.

    Attributes
    ----------
    message_id
        The queue's id of the message, for logs.
    receipt_handle
        What deletes it.
    parsed
        The body, parsed at the edge; None when it is not a valid one.
    problem
        Why the body is not valid (one line), when ``parsed`` is None.
    """

    message_id: str
    receipt_handle: str
    parsed: ParsedT_co | None
    problem: str | None = None


class QueueReceiver(Protocol[ParsedT_co]):
    """A queue the backend consumes (task results, SES feedback): receive a batch of
    parsed bodies, delete the handled ones."""

    def receive(self) -> Sequence[Received[ParsedT_co]]:
        """Up to a batch of messages, each parsed; a Herald error if the queue refuses."""
        ...

    def delete(self, receipt_handles: Sequence[str]) -> int:
        """Delete the messages of ``receipt_handles``; how many the queue did not delete."""
        ...
