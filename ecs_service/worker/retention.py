"""Retention: the worker deletes finished messages older than the environment keeps them.

A message is expired when it is in a final state (sent, delivered, bounced, complained,
failed, canceled) and finished more than ``MESSAGE_RETENTION_DAYS`` days ago (its
``finished_at``: when it was sent, failed or canceled, so an email scheduled far ahead is
kept that long after it went out, not after it was written). Its recipients' states and
its SES events go with it (their foreign keys cascade, migration 0007). Scheduled and
queued messages are never touched, whatever their age.

What stays: each tenant's suppression list (the tenant's own list of addresses it may not
send to, not message data: deleting it would let a bounced address be mailed again) and
the daily usage counts (``tenant_daily_usage``), so quotas and counts survive the messages.

The work is bounded: one pass deletes at most ``batch_size`` rows (oldest first, through
``ix_messages_finished``), skipping rows another transaction holds (``SKIP LOCKED``: a
results consumer or a second worker's pass), in one short transaction. Every worker
replica runs passes; SKIP LOCKED keeps them from waiting on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit

from ecs_service import messages

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger
    from sqlalchemy.engine import Engine

    from ecs_service.thread_safe_metrics import MetricRecorder

MESSAGES_EXPIRED = "MessagesExpired"
# At most this many messages per pass: a short transaction whose cascade (a few recipient
# and event rows each) stays small next to the api's and relay's work.
DEFAULT_BATCH_SIZE = 500
# After a pass that deleted a full batch, the next one comes this soon: a first run over
# years of messages catches up at up to 500 every 5 s (8.6 million a day), in short
# transactions, instead of one batch per interval.
CATCH_UP_SECONDS = 5.0


@dataclass(frozen=True)
class RetentionPass:
    """What one pass did: how many messages it deleted, and whether it hit its bound."""

    deleted: int
    full: bool


class Retention:
    """Deletes expired messages, a bounded batch per pass.

    Parameters
    ----------
    engine
        The worker's engine.
    days
        Messages that finished more than this many days ago are deleted (at least 1; the
        worker runs no retention at all for ``MESSAGE_RETENTION_DAYS=0``).
    batch_size
        The most messages one pass deletes.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        days: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
        logger: Logger,
        metrics: MetricRecorder,
    ) -> None:
        if days < 1:
            raise ValueError("retention needs at least 1 day; 0 means: do not run it")
        if batch_size < 1:
            raise ValueError("a retention batch holds at least 1 message")
        self._engine = engine
        self._days = days
        self._batch_size = batch_size
        self._logger = logger
        self._metrics = metrics

    def expire_once(self) -> RetentionPass:
        """Delete at most one batch of expired messages (with their recipients and events)."""
        with self._engine.begin() as connection:
            deleted = messages.delete_expired(connection, days=self._days, limit=self._batch_size)
        if deleted:
            self._metrics.add_metric(MESSAGES_EXPIRED, MetricUnit.Count, deleted)
            self._logger.info(
                "expired messages deleted",
                extra={"deleted": deleted, "retention_days": self._days},
            )
        return RetentionPass(deleted=deleted, full=deleted >= self._batch_size)
