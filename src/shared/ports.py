"""The small interfaces the logic depends on; ``shared.adapters`` implements them on AWS.

Tests give the logic in-memory fakes of these, and the adapters are tested on moto.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from shared.contracts import EmailPayload, TaskEnvelope, TaskResult


class EmailSender(Protocol):
    """Sends one email and returns the provider's message id."""

    def send(self, email: EmailPayload, *, task_id: UUID) -> str: ...


class TaskProducer(Protocol):
    """Puts tasks on the task queue; raises ``TaskBatchSendError`` naming any not queued."""

    def send(self, tasks: Sequence[TaskEnvelope[Any]]) -> None: ...


class ResultPublisher(Protocol):
    """Publishes the outcome of a task for the backend to apply."""

    def publish(self, result: TaskResult) -> None: ...


class DeadLetterSink(Protocol):
    """Keeps a message that cannot be processed at all, with the reason, for an operator."""

    def dead_letter(self, body: str, *, reason: str, source_message_id: str) -> None: ...
