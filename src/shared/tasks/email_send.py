"""The ``email.send`` task kind: send one email through the ``EmailSender`` port."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.contracts import EMAIL_SEND, EmailPayload
from shared.registry import TaskMetricNames

if TYPE_CHECKING:
    from shared.contracts import EmailTask
    from shared.ports import EmailSender
    from shared.registry import TaskRegistry

EMAIL_METRICS = TaskMetricNames(sent="EmailsSent", failed="EmailsFailed")


def register_email_send(registry: TaskRegistry, sender: EmailSender, *, sender_email: str) -> None:
    """Register ``email.send`` on ``registry``, sending through ``sender``.

    Parameters
    ----------
    sender_email
        The address every email goes out from: the runner's IAM policy allows
        ``ses:SendEmail`` for exactly this ``ses:FromAddress``. A task names the sender
        the api recorded when the email was scheduled, up to a year ago; if SENDER_EMAIL
        changed since, the email goes out from today's address (the old one may no longer
        be verified or allowed) instead of failing every email scheduled before the change.
    """
    allowed = sender_email.lower()

    def send_email(task: EmailTask) -> str:
        email = task.payload
        if email.sender.lower() != allowed:
            email = email.model_copy(update={"sender": sender_email})
        return sender.send(email, task_id=task.task_id, tenant_id=task.tenant_id)

    registry.register(EMAIL_SEND, EmailPayload, send_email, metrics=EMAIL_METRICS)
