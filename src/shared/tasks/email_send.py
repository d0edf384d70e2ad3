"""The ``email.send`` task kind: send one email through the ``EmailSender`` port."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.contracts import EMAIL_SEND, EmailPayload
from shared.errors import FailureCode, PermanentError
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
        The only address an email may come from (compared without case): the runner's
        IAM policy allows ``ses:SendEmail`` for exactly this ``ses:FromAddress``. Any
        other sender fails at once with a clear reason, rather than as an access-denied
        error retried into the dead-letter queue.
    """
    allowed = sender_email.lower()

    def send_email(task: EmailTask) -> str:
        email = task.payload
        if email.sender.lower() != allowed:
            raise PermanentError(
                f"sender {email.sender} is not allowed: Herald sends only from "
                f"{sender_email} (SENDER_EMAIL, the address its IAM policy allows)",
                code=FailureCode.SENDER_NOT_ALLOWED,
            )
        return sender.send(email, task_id=task.task_id)

    registry.register(EMAIL_SEND, EmailPayload, send_email, metrics=EMAIL_METRICS)
