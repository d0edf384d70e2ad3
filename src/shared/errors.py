"""The errors every part of Herald understands.

Adapters translate provider errors (botocore ``ClientError`` codes) into these, so the
logic decides what to do by kind of failure, never by a provider's error code:

- ``PermanentError``: the task can never succeed as it is. Report ``failed``, no retry.
- ``TransientError``: it may succeed later. Retry; SQS redelivers it and, after
  ``maxReceiveCount`` receives, moves it to the dead-letter queue where an alarm fires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from uuid import UUID


class HeraldError(Exception):
    """Base class of every error Herald raises on purpose."""


class PermanentError(HeraldError):
    """The request is invalid and retrying it cannot help."""


class TransientError(HeraldError):
    """The request may succeed if retried later (throttling, outage, configuration)."""


class TaskBatchSendError(HeraldError):
    """Some tasks of a batch could not be queued, even after retries.

    Parameters
    ----------
    failed
        The task ids that were not queued, each with the reason of its last failure.
    sent
        The task ids that were queued; the caller may mark them as such.
    """

    def __init__(self, failed: Mapping[UUID, str], sent: Sequence[UUID]) -> None:
        self.failed = dict(failed)
        self.sent = tuple(sent)
        names = ", ".join(f"{task_id} ({reason})" for task_id, reason in self.failed.items())
        super().__init__(f"{len(self.failed)} task(s) could not be queued: {names}")
