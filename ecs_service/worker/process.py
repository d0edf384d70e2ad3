"""The worker process: the relay loop, the results loop and (with FEEDBACK_QUEUE_URL) the
feedback loop, (with MESSAGE_RETENTION_DAYS) the retention loop, and a clean stop on
SIGTERM.

Each loop runs in its own thread and checks the stop event between passes, so on
SIGTERM the current batch finishes (it is one transaction) and the process exits. Both
threads count into the process's one metric set, so they add and flush through
``ThreadSafeMetrics``; each loop flushes after each of its passes.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import TYPE_CHECKING

import boto3
import psycopg
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ecs_service import messages
from ecs_service.db.engine import build_engine
from ecs_service.db.models import MESSAGES_DUE_CHANNEL
from ecs_service.thread_safe_metrics import ThreadSafeMetrics
from ecs_service.worker.feedback import FeedbackConsumer, SqsFeedbackReceiver
from ecs_service.worker.relay import Relay
from ecs_service.worker.results import ResultsConsumer
from ecs_service.worker.retention import CATCH_UP_SECONDS, Retention
from ecs_service.worker.send_rate import SES_ACCOUNT_CONFIG, send_rate_from_settings
from shared.adapters.sqs import SqsTaskProducer
from shared.adapters.sqs_receiver import SqsResultReceiver
from shared.backoff import Backoff
from shared.contracts import utc_now
from shared.errors import HeraldError, TransientError
from shared.observability import logger, metrics
from shared.tracing import NO_TRACING

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from ecs_service.settings import DatabaseSettings, WorkerSettings
    from shared.ports import Tracing

# How often a waiting loop looks at the stop event.
STOP_CHECK_SECONDS = 0.5
# How soon a relay held back by its in-flight budget looks again: results free it.
IN_FLIGHT_RECHECK_SECONDS = 0.25


class DueWaiter:
    """Sleeps until a message may be due: a NOTIFY, the next send_at, or the poll interval.

    It LISTENs on a connection of its own, and reconnects after the database restarts.
    The engine opens it (with the engine's credentials, fresh after a rotation) and the
    pool lets it go: LISTEN is session state, so it must never serve anyone else.
    """

    def __init__(self, engine: Engine, poll_seconds: float, stop: threading.Event) -> None:
        self._engine = engine
        self._poll_seconds = poll_seconds
        self._stop = stop
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None

    def wait(self) -> None:
        deadline = time.monotonic() + self._seconds_until_next_due()
        while not self._stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            try:
                connection = self._listening()
                if any(
                    True
                    for _ in connection.notifies(
                        timeout=min(STOP_CHECK_SECONDS, remaining), stop_after=1
                    )
                ):
                    return
            except (psycopg.Error, SQLAlchemyError) as error:
                logger.warning(
                    "LISTEN connection lost; polling until it is back", extra={"error": str(error)}
                )
                self.close()
                self._stop.wait(min(STOP_CHECK_SECONDS, remaining))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _listening(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._connection is None or self._connection.closed:
            pooled = self._engine.raw_connection()
            connection = pooled.driver_connection
            pooled.detach()  # closed for good when we close it, never returned to the pool
            assert isinstance(connection, psycopg.Connection)  # the engine's driver: psycopg 3
            connection.autocommit = True
            connection.execute(f"LISTEN {MESSAGES_DUE_CHANNEL}")
            self._connection = connection
        return self._connection

    def _seconds_until_next_due(self) -> float:
        try:
            with Session(self._engine) as session:
                next_due = messages.next_send_at(session)
        except SQLAlchemyError:
            return self._poll_seconds
        if next_due is None:
            return self._poll_seconds
        return max(0.0, min(self._poll_seconds, (next_due - utc_now()).total_seconds()))


def run_loop(
    name: str,
    one_pass: Callable[[], None],
    stop: threading.Event,
    backoff: Backoff,
    published: ThreadSafeMetrics,
) -> None:
    """Call ``one_pass`` until stopped, publishing its metrics after each pass; back off
    exponentially while it fails."""
    while not stop.is_set():
        try:
            one_pass()
        except (SQLAlchemyError, HeraldError) as error:
            pause = backoff.failed()
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            logger.warning(
                f"{name} pass failed; retrying", extra={"error": first_line, "retry_in_s": pause}
            )
            stop.wait(pause)
        else:
            backoff.succeeded()
        finally:
            published.flush()


def run_worker(
    database: DatabaseSettings, settings: WorkerSettings, *, tracing: Tracing = NO_TRACING
) -> int:
    """Run the relay, the results consumer and (with FEEDBACK_QUEUE_URL) the feedback consumer
    until SIGTERM or SIGINT; return the exit code.

    ``tracing`` gives each relayed message its ``herald.relay`` span; none by default.
    """
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    engine = build_engine(database, application_name="herald-worker")
    sqs = boto3.client("sqs")
    published = ThreadSafeMetrics(metrics)
    relay = Relay(
        engine,
        SqsTaskProducer(sqs, settings.task_queue_url),
        claim_size=settings.relay_claim_size,
        max_in_flight=settings.relay_max_in_flight,
        in_flight_expiry_seconds=settings.relay_in_flight_expiry_seconds,
        logger=logger,
        metrics=published,
        tracing=tracing,
        send_rate=send_rate_from_settings(
            settings.ses_max_send_rate,
            lambda: boto3.client("sesv2", config=SES_ACCOUNT_CONFIG),
            logger=logger,
        ),
    )
    consumer = ResultsConsumer(
        engine,
        SqsResultReceiver(
            sqs, settings.result_queue_url, wait_seconds=settings.results_wait_seconds
        ),
        logger=logger,
        metrics=published,
    )
    waiter = DueWaiter(engine, settings.relay_poll_seconds, stop)

    def relay_pass() -> None:
        result = relay.relay_due_messages()
        if result.not_queued:
            # SQS took nothing: the rows stay scheduled; back off before claiming them again.
            raise TransientError(f"{result.not_queued} due message(s) could not be queued")
        if result.capped:
            # Due rows wait for results to free the in-flight budget, not for a NOTIFY.
            stop.wait(IN_FLIGHT_RECHECK_SECONDS)
        elif result.paced:
            # Due rows wait for SES's send rate: until the shared bucket holds the next chunk.
            stop.wait(result.rate_wait_seconds)
        elif result.claimed < settings.relay_claim_size:
            waiter.wait()

    failures: list[str] = []

    def guarded(name: str, one_pass: Callable[[], None]) -> None:
        try:
            run_loop(name, one_pass, stop, Backoff(settings.relay_max_backoff_seconds), published)
        except Exception:
            logger.exception(f"{name} loop crashed; stopping the worker")
            failures.append(name)
            stop.set()

    threads = [
        threading.Thread(target=guarded, args=("relay", relay_pass), name="relay"),
        threading.Thread(target=guarded, args=("results", consumer.consume_once), name="results"),
    ]
    if settings.feedback_queue_url:
        feedback = FeedbackConsumer(
            engine,
            SqsFeedbackReceiver(
                sqs, settings.feedback_queue_url, wait_seconds=settings.results_wait_seconds
            ),
            logger=logger,
            metrics=published,
        )
        threads.append(
            threading.Thread(
                target=guarded, args=("feedback", feedback.consume_once), name="feedback"
            )
        )
    if settings.message_retention_days:
        retention = Retention(
            engine, days=settings.message_retention_days, logger=logger, metrics=published
        )

        def retention_pass() -> None:
            expired = retention.expire_once()
            # A full batch means more are expired: catch up soon, never in one long burst.
            stop.wait(
                CATCH_UP_SECONDS if expired.full else settings.message_retention_interval_seconds
            )

        threads.append(
            threading.Thread(target=guarded, args=("retention", retention_pass), name="retention")
        )
    logger.info(
        "worker started",
        extra={
            "claim_size": settings.relay_claim_size,
            "max_in_flight": settings.relay_max_in_flight,
            "feedback": bool(settings.feedback_queue_url),
            "retention_days": settings.message_retention_days,
        },
    )
    for thread in threads:
        thread.start()
    stop.wait()
    logger.info("worker stopping: finishing the current batches")
    for thread in threads:
        thread.join()
    waiter.close()
    engine.dispose()
    logger.info("worker stopped")
    return 1 if failures else 0
