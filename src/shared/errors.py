"""The errors every part of Herald understands.

Adapters translate provider errors (botocore ``ClientError`` codes) into these, so the
logic decides what to do by kind of failure, never by a provider's error code:

- ``PermanentError``: the task can never succeed as it is. Report ``failed``, no retry.
- ``TransientError``: it may succeed later. Retry; SQS redelivers it and, after
  ``maxReceiveCount`` receives, moves it to the dead-letter queue where an alarm fires.

A permanent failure also says why in Herald's own words: a ``FailureCode``, the closed set
a ``failed`` task result names, each with the one fixed sentence a tenant is shown
(``failure_text``). The error's message is the detail for operators' logs; it never
reaches a tenant, because whoever can write to the result queue could write anything.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from uuid import UUID


class FailureCode(StrEnum):
    """Why a task failed for good, in Herald's vocabulary (``TaskResult.error_code``).

    The set is closed and small on purpose: each code has one fixed text in
    ``FAILURE_TEXTS``, and a code the backend does not know (a newer task runner's) or
    no code at all (an older one's) reads as ``SEND_FAILED``.
    """

    REJECTED = "rejected"
    """The email service refused this email (SES ``MessageRejected`` and the like)."""
    INVALID_ADDRESS = "invalid_address"
    """The email service refused an address of the email as invalid."""
    SENDER_NOT_ALLOWED = "sender_not_allowed"
    """The sender is not an identity Herald may send from."""
    INVALID_TASK = "invalid_task"
    """The task is not one Herald can run: an unknown kind or an invalid payload."""
    TOO_LARGE = "too_large"
    """The relay found the task too large for one SQS message."""
    UNREADABLE_TIME = "unreadable_time"
    """The relay found a stored time outside what it can read (year 1 to 9999)."""
    QUEUE_REFUSED = "queue_refused"
    """SQS refused the task, through the sender's fault, even sent alone."""
    RECIPIENT_SUPPRESSED = "recipient_suppressed"
    """The relay found a recipient on the tenant's suppression list when the message fell
    due (listed after it was scheduled)."""
    SEND_FAILED = "send_failed"
    """Any other permanent failure, and the reading of an unknown or missing code."""
    SES_REJECTED = "ses_rejected"
    """SES accepted the email, then rejected it (a Reject event: it found a virus)."""
    RENDERING_FAILED = "rendering_failed"
    """SES could not render the email (a Rendering Failure event)."""


# The codes a task runner publishes in a result. The others are the relay's or the
# feedback consumer's own: a result naming one is read as SEND_FAILED.
RESULT_FAILURE_CODES: Final = frozenset(
    {
        FailureCode.REJECTED,
        FailureCode.INVALID_ADDRESS,
        FailureCode.SENDER_NOT_ALLOWED,
        FailureCode.INVALID_TASK,
        FailureCode.SEND_FAILED,
    }
)

FAILURE_TEXTS: Final[Mapping[FailureCode, str]] = MappingProxyType(
    {
        FailureCode.REJECTED: "The email service rejected this email.",
        FailureCode.INVALID_ADDRESS: "The email service refused an address of this email.",
        FailureCode.SENDER_NOT_ALLOWED: "The sender address is not one Herald may send from.",
        FailureCode.INVALID_TASK: "Herald could not read this message as an email to send.",
        FailureCode.TOO_LARGE: "The email is too large for Herald's task queue.",
        FailureCode.UNREADABLE_TIME: "The message's stored time is outside the supported range.",
        FailureCode.QUEUE_REFUSED: "Herald's task queue refused this email.",
        FailureCode.RECIPIENT_SUPPRESSED: (
            "A recipient was put on this tenant's suppression list (a permanent bounce or a "
            "complaint) after the email was scheduled, so it was not sent."
        ),
        FailureCode.SEND_FAILED: "The email could not be sent.",
        FailureCode.SES_REJECTED: "The email service accepted this email, then rejected it.",
        FailureCode.RENDERING_FAILED: "The email service could not render this email.",
    }
)


def failure_text(code: FailureCode | None) -> str:
    """The sentence a tenant sees for a failure with ``code`` (the generic one for None)."""
    return FAILURE_TEXTS[code or FailureCode.SEND_FAILED]


class HeraldError(Exception):
    """Base class of every error Herald raises on purpose."""


class PermanentError(HeraldError):
    """The request is invalid and retrying it cannot help.

    Parameters
    ----------
    message
        What went wrong, in detail, for operators (logged, carried as the result's
        ``error``; never shown to a tenant).
    code
        Why, in Herald's vocabulary: what the tenant is told.
    """

    def __init__(self, message: str, *, code: FailureCode = FailureCode.SEND_FAILED) -> None:
        super().__init__(message)
        self.code = code


class TransientError(HeraldError):
    """The request may succeed if retried later (throttling, outage, configuration)."""


class ThrottledError(TransientError):
    """The provider refused the request for its rate or quota (SES's sending quota).

    Nothing is wrong with the request or the system: retry after a pause. The task
    runner retries it with backoff and then re-queues the task with a delay, so ordinary
    throttling never moves a task towards the dead-letter queue.
    """


class TaskBatchSendError(HeraldError):
    """Some tasks of a batch could not be queued, even after retries.

    Parameters
    ----------
    failed
        The task ids that were not queued, each with the reason of its last failure.
    sent
        The task ids that were queued; the caller may mark them as such.
    refused
        The failed task ids that SQS refused through the sender's fault (the message
        itself is wrong): sending them again cannot help. The others may go later.
    """

    def __init__(
        self,
        failed: Mapping[UUID, str],
        sent: Sequence[UUID],
        refused: Collection[UUID] = (),
    ) -> None:
        self.failed = dict(failed)
        self.sent = tuple(sent)
        self.refused = frozenset(refused)
        names = ", ".join(f"{task_id} ({reason})" for task_id, reason in self.failed.items())
        super().__init__(f"{len(self.failed)} task(s) could not be queued: {names}")
