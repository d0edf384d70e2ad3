"""What the worker's queue consumers (task results, SES feedback) do alike with a batch.

Each received batch is applied in one transaction; if the database refuses one of its
items, the batch is applied again with a savepoint per item, so the refused one is rolled
back alone (and left on its queue for the DLQ) while its neighbours are applied. The
common batch pays no savepoint round trips; a refused one is rare. Handled messages are
deleted only after the transaction committed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.exc import DataError, IntegrityError

from shared.errors import HeraldError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from contextlib import AbstractContextManager

    from aws_lambda_powertools import Logger
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from ecs_service.thread_safe_metrics import MetricRecorder
    from shared.ports import QueueReceiver

ParsedT = TypeVar("ParsedT")
ItemT = TypeVar("ItemT")
OutcomeT = TypeVar("OutcomeT")
# What the database refuses of one item's values: that item alone is rolled back.
REFUSED_BY_THE_DATABASE = (DataError, IntegrityError)


def item_scope(session: Session, isolate: bool) -> AbstractContextManager[Any]:
    """Where one item is applied: its own savepoint when isolating, else the transaction."""
    return session.begin_nested() if isolate else nullcontext()


class QueueConsumer(ABC, Generic[ParsedT, ItemT, OutcomeT]):
    """A consumer of one queue whose bodies parse to ``ParsedT``, applying batches of
    ``ItemT`` to the database with an ``OutcomeT`` each.

    Parameters
    ----------
    engine
        The database.
    receiver
        The queue (``shared.adapters.sqs_receiver.SqsReceiver``).
    logger, metrics
        The process's Powertools Logger and (thread-safe) metrics.
    """

    # The queue's messages in log lines ("results", "feedback").
    what: str

    def __init__(
        self,
        engine: Engine,
        receiver: QueueReceiver[ParsedT],
        *,
        logger: Logger,
        metrics: MetricRecorder,
    ) -> None:
        self._engine = engine
        self._receiver = receiver
        self._logger = logger
        self._metrics = metrics

    @abstractmethod
    def _apply_in_one_transaction(self, batch: Sequence[ItemT], isolate: bool) -> OutcomeT:
        """Apply ``batch`` in one transaction, each item in ``item_scope``; with
        ``isolate``, catch ``REFUSED_BY_THE_DATABASE`` per item and leave it out."""

    def _apply(self, batch: Sequence[ItemT]) -> OutcomeT:
        """The batch in one transaction; if the database refuses one of its items, again,
        each item in its own savepoint."""
        try:
            return self._apply_in_one_transaction(batch, isolate=False)
        except REFUSED_BY_THE_DATABASE:
            return self._apply_in_one_transaction(batch, isolate=True)

    def _delete(self, receipt_handles: Sequence[str]) -> None:
        """Delete the handled messages; a failure is only logged: handled messages that
        come back change nothing."""
        if not receipt_handles:
            return
        try:
            not_deleted = self._receiver.delete(receipt_handles)
        except HeraldError as error:
            self._logger.warning(
                f"could not delete handled {self.what}", extra={"error": str(error)}
            )
            return
        if not_deleted:
            self._logger.warning(
                f"some handled {self.what} messages were not deleted", extra={"failed": not_deleted}
            )
