"""The task kinds Herald knows, and the one place that registers them all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.registry import TaskRegistry
from shared.tasks.email_send import register_email_send

if TYPE_CHECKING:
    from shared.ports import EmailSender


def build_task_registry(*, email_sender: EmailSender, sender_email: str) -> TaskRegistry:
    """A registry holding every task kind Herald runs, wired to its ports."""
    registry = TaskRegistry()
    register_email_send(registry, email_sender, sender_email=sender_email)
    return registry


__all__ = ["build_task_registry"]
