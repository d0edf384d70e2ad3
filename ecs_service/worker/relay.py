"""The outbox relay: due messages from PostgreSQL to the SQS task queue.

One pass claims due rows with ``FOR UPDATE SKIP LOCKED`` (so any number of relays share
the work without waiting on each other), sends them in batches of 10, marks the ones
SQS accepted ``queued`` and commits. A crash after the send and before the commit
leaves the rows ``scheduled``: they are sent again later and the task runner's
idempotency record makes the second send a no-op. A row is never lost and never
marked ``queued`` unless SQS has it.

Fair across tenants. The claim takes due rows in turns: every tenant's first due row
(by its send_at), then every tenant's second, and so on; within a turn, the row that
has been due longest first, where a row is due since ``greatest(send_at, created_at)``,
so a send_at far in the past does not put a row ahead of other tenants' rows. A tenant's
turns start after its tasks in flight, so across passes a tenant whose backlog already
holds the queue waits behind one with nothing queued. A tenant with thousands of due
rows and a tenant with one: the one is in the next pass.

Never far ahead of the task runner. At most ``max_in_flight`` tasks are in flight
(``queued`` within the last ``in_flight_expiry_seconds``, no result yet); a pass claims
no more than what is left of that budget, so a backlog waits in PostgreSQL, where the
claim is fair, instead of in the task queue, where it is first come first served. A task
whose result never comes back stops counting after the expiry, so it cannot hold the
budget forever.

Paced to SES's send rate. With a ``send_rate``, a pass first takes tokens (recipients:
To + Cc + Bcc) from the bucket every relay shares in PostgreSQL
(``ecs_service.worker.send_rate``), claims no more rows than it holds tokens for, and
sends the claimed emails in claim order while their recipients fit; the rest stay
``scheduled``, where the claim's fairness works, not in the task queue. Unused tokens go
back. So every relay together releases no more recipients per second than SES accepts
(never more than the rate in any second), and a pass the rate held back says how long
until the bucket holds the next chunk, which the worker waits. An email with more
recipients than the tokens a relay holds waits while the relay takes the rest ahead
(the bucket goes into debt, every relay waits), then goes alone.

One bad row never stops a pass. A row that is not a valid task (by today's email rules),
would not fit in SQS, or has a time Python cannot hold becomes ``failed`` with a
fixed reason (a ``FailureCode``'s text, the vocabulary the results consumer uses too)
before anything is sent. A task SQS refuses through the sender's fault becomes
``failed`` too; one it fails through its own fault (after the producer's retries) stays
``scheduled`` for a later pass, and the worker backs off. Each failed row is logged and
counted in ``RelayRowsFailed``.

A recipient suppressed since the message was scheduled is not sent to (issue 14). The
api refuses a message to a suppressed address, but a bounce or complaint may list one
after a message to it was scheduled: before release, one query per pass looks up every
claimed email's recipients on their tenants' lists, and a message naming any is failed
(``FailureCode.RECIPIENT_SUPPRESSED``, its error naming them), as the api would have
refused it whole. Counted in ``MessagesSuppressed``: the tenant's matter, not a fault.

After a pass the relay reports ``RelayBacklog``: the messages due but still not queued.
``RelayLag`` only exists when something is queued; a relay that queues nothing while
messages pile up shows in the backlog. Counting is cheap (a range scan of the
partial index ``ix_messages_due``) but not free with a large backlog, so it is done at
most once every ``backlog_interval_seconds``, on the first pass after that.

A backlog the send rate holds is by design (a campaign of thousands at 14/s takes
minutes) and more relays would not release it sooner, so beside the count the relay
reports the part pacing does not explain, for the alarms and the scaling to read:
``RelayBacklogUnpaced``, the backlog, or 0 when the passes since the last count were
held by the send rate (one of them at least was ``paced`` and not ``slow``, and none
failed, left tasks SQS did not take, or was held by the in-flight budget); and
``RelayLagUnpaced``, the greatest ``RelayLag`` of those passes, 0 when they were held,
reported only when they queued something. Deciding over the passes, not the last one,
reads a relay whose passes alternate (a full claim, then an empty bucket) as held, and
one that fails between paced passes as not. A ``slow`` pass, one longer than the bucket
takes to refill its burst, is paced but not held: the relay's passes, not the rate, set
its pace, and more relays would release more.

Each message is sent inside a ``herald.relay`` span, child of the trace context the api
stored with it, and carries that span's context to the task runner in the ``_datadog``
message attribute: one email, one trace. Without Datadog the spans are no-ops.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ecs_service import feedback_store, messages
from ecs_service.messages import DueMessage, email_task
from ecs_service.worker.send_rate import PostgresSendRateBucket, SendPace
from shared.adapters.sqs import SQS_MAX_BATCH
from shared.contracts import (
    EmailPayload,
    TaskEnvelope,
    TaskTooLargeError,
    describe_validation_error,
    suppression_key,
    task_body,
    utc_now,
)
from shared.errors import FailureCode, TaskBatchSendError, failure_text
from shared.tracing import NO_TRACING, as_carrier

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from aws_lambda_powertools import Logger
    from sqlalchemy.engine import Engine

    from ecs_service.thread_safe_metrics import MetricRecorder
    from ecs_service.worker.send_rate import SendRate
    from shared.ports import TaskProducer, Tracing

# How often, at most, a relay counts the backlog: several datapoints per one-minute period.
BACKLOG_INTERVAL_SECONDS = 15.0
# A task queued longer ago than this no longer counts as in flight (see the module doc).
IN_FLIGHT_EXPIRY_SECONDS = 300.0
RELAY_SPAN = "herald.relay"


@dataclass(frozen=True)
class RelayPass:
    """What one pass did.

    ``not_queued`` rows stay scheduled (SQS failed them, not for what they are: back off);
    ``failed`` rows were made ``failed``; ``capped``: the in-flight budget, not the due
    rows, limited the claim; ``paced``: the send rate did, and the shared bucket holds
    enough for the next pass in ``rate_wait_seconds`` (0: now); ``slow``: a paced pass
    that took longer than the bucket takes to refill its burst, so the bucket overflowed
    meanwhile and this relay alone releases less than the rate.
    """

    claimed: int
    queued: int
    not_queued: int
    failed: int = 0
    capped: bool = False
    paced: bool = False
    rate_wait_seconds: float = 0.0
    slow: bool = False


@dataclass(frozen=True)
class _Failure:
    message_id: UUID
    tenant_id: UUID
    reason: FailureCode
    detail: str  # for the log only: the tenant sees ``reason``
    # Recipients the tenant's suppression list holds: the tenant reads them, logs do not.
    suppressed: tuple[str, ...] = ()

    @property
    def log_fields(self) -> dict[str, str]:
        """What a log line says of it: never the addresses."""
        return {
            "message_id": str(self.message_id),
            "tenant_id": str(self.tenant_id),
            "reason": self.reason.value,
            "error": self.detail,
        }

    @property
    def error(self) -> str:
        """What the tenant reads: Herald's text for the reason, and the listed recipients."""
        text = failure_text(self.reason)
        return f"{text} Suppressed: {', '.join(self.suppressed)}." if self.suppressed else text


@dataclass
class _Allowance:
    """The recipients one pass may release (see the module doc).

    ``credit``: tokens the relay took on an earlier pass, ahead, for an email larger than
    what it held; ``granted``: tokens this pass took; ``used``: recipients it released;
    ``held``: emails it claimed and kept back; ``ahead``: tokens to take ahead now.
    """

    pace: SendPace
    credit: int
    at_least: int = 0
    granted: int = 0
    level: float = 0.0
    used: int = 0
    held: int = 0
    ahead: int = 0

    @property
    def tokens(self) -> int:
        return self.granted + self.credit


@dataclass
class _Window:
    """What the passes since the last backlog count did (see the module doc)."""

    paced: bool = False  # a pass was held by the send rate
    unpaced: bool = False  # a pass failed, left tasks unqueued or hit the in-flight budget
    lag: float | None = None  # the greatest RelayLag of the passes that queued anything

    @property
    def held_by_send_rate(self) -> bool:
        return self.paced and not self.unpaced

    def add(self, result: RelayPass) -> None:
        self.paced = self.paced or (result.paced and not result.slow)
        self.unpaced = self.unpaced or result.capped or result.not_queued > 0

    def add_lag(self, lag: float) -> None:
        self.lag = lag if self.lag is None else max(self.lag, lag)


@dataclass(frozen=True)
class _Sent:
    queued: list[UUID]
    not_queued: dict[UUID, str]
    refused: dict[UUID, str]


class Relay:
    """Moves due messages to the task queue, a claim of up to ``claim_size`` rows per pass.

    ``max_in_flight`` bounds the tasks queued and not yet finished (None: no bound, for
    benchmarks that drain a table without a task runner). ``send_rate`` paces the relay
    to SES's rate through ``send_rate_bucket`` (by default the engine's database's),
    shared by every relay (None: not paced).
    """

    def __init__(
        self,
        engine: Engine,
        producer: TaskProducer,
        *,
        claim_size: int,
        logger: Logger,
        metrics: MetricRecorder,
        max_in_flight: int | None = None,
        in_flight_expiry_seconds: float = IN_FLIGHT_EXPIRY_SECONDS,
        backlog_interval_seconds: float = BACKLOG_INTERVAL_SECONDS,
        tracing: Tracing = NO_TRACING,
        send_rate: SendRate | None = None,
        send_rate_bucket: PostgresSendRateBucket | None = None,
    ) -> None:
        self._engine = engine
        self._send_rate = send_rate
        self._bucket = send_rate_bucket or PostgresSendRateBucket(engine)
        self._credit = 0  # tokens taken ahead for an email larger than a pass's tokens
        self._tracing = tracing
        self._producer = producer
        self._claim_size = claim_size
        self._max_in_flight = max_in_flight
        self._in_flight_expiry = timedelta(seconds=in_flight_expiry_seconds)
        self._logger = logger
        self._metrics = metrics
        self._backlog_interval_seconds = backlog_interval_seconds
        self._backlog_counted_at: float | None = None
        self._window = _Window()

    def relay_due_messages(self) -> RelayPass:
        """One pass: claim, send, mark, commit, then report the backlog if it is time.

        Raises only if the database fails.
        """
        try:
            result = self._relay_pass()
        except BaseException:
            self._window.unpaced = True  # a failing relay is never held by the send rate
            raise
        self._window.add(result)
        now = time.monotonic()
        if (
            self._backlog_counted_at is None
            or now - self._backlog_counted_at >= self._backlog_interval_seconds
        ):
            self._backlog_counted_at = now
            self._report_backlog()
        return result

    def _report_backlog(self) -> None:
        """``RelayBacklog``, and what of it and of the lag the send rate does not explain,
        over the passes since the last count (see the module doc)."""
        backlog = self.count_backlog()
        window, self._window = self._window, _Window()
        held = window.held_by_send_rate
        self._metrics.add_metric(name="RelayBacklog", unit=MetricUnit.Count, value=backlog)
        self._metrics.add_metric(
            name="RelayBacklogUnpaced", unit=MetricUnit.Count, value=0 if held else backlog
        )
        if window.lag is not None:
            self._metrics.add_metric(
                name="RelayLagUnpaced",
                unit=MetricUnit.Seconds,
                value=0.0 if held else window.lag,
            )

    def count_backlog(self) -> int:
        """Messages due but not queued: scheduled with send_at now or earlier."""
        with Session(self._engine) as session:
            return messages.count_due(session)

    def count_in_flight(self, session: Session) -> int:
        """Tasks queued within the expiry and not finished."""
        return messages.count_in_flight(session, self._in_flight_expiry)

    def _budget(self, session: Session) -> int:
        """How many rows this pass may claim: 0 while the task queue holds enough.

        The send rate is the other bound, taken after this one (``_take_allowance``).
        """
        if self._max_in_flight is None:
            return self._claim_size
        room = self._max_in_flight - self.count_in_flight(session)
        # Wait for room for a whole SQS batch: every claim scans each tenant's first due
        # rows, so a backlog claimed a row at a time as results trickle in would cost a
        # scan of every tenant per email.
        if room < min(SQS_MAX_BATCH, self._max_in_flight, self._claim_size):
            return 0
        return min(self._claim_size, room)

    def _relay_pass(self) -> RelayPass:
        if self._send_rate is None:
            return self._claim_and_send(None)
        started = time.monotonic()
        allowance = _Allowance(SendPace(self._send_rate.per_second()), credit=self._credit)
        try:
            result = self._claim_and_send(allowance)
        except BaseException:
            with suppress(SQLAlchemyError):  # the pass's own error is the one to report
                self._settle(allowance)
            raise
        level = self._settle(allowance)
        if not result.paced:
            return result
        # Wait for the next chunk, or, with tokens to take ahead, until they are earned.
        until = 0 if self._credit else allowance.at_least
        refilled_in = allowance.pace.seconds_until(allowance.pace.burst, 0.0)
        return replace(
            result,
            rate_wait_seconds=allowance.pace.seconds_until(until, level),
            slow=time.monotonic() - started > refilled_in,
        )

    def _claim_and_send(self, allowance: _Allowance | None) -> RelayPass:
        with Session(self._engine) as session, session.begin():
            # The claim's cost grows with the backlog; JIT compiling it would cost more.
            session.execute(text("SET LOCAL jit = off"))
            budget = self._budget(session)
            if budget <= 0:
                return RelayPass(0, 0, 0, capped=True)
            limit = budget
            if allowance is not None:
                self._take_allowance(allowance, budget)
                if allowance.tokens == 0:
                    return RelayPass(0, 0, 0, paced=True)
                limit = min(budget, allowance.tokens)
            rows = messages.claim_due(session, limit, in_flight_expiry=self._in_flight_expiry)
            if not rows:
                return RelayPass(0, 0, 0)
            tasks, failures = self._tasks_of(rows)
            tasks, suppressed = self._without_suppressed(session, tasks)
            released = self._released(tasks, allowance)
            outcome = self._send_sorting_refusals(
                released, {row.id: row.trace_context for row in rows}
            )
            if allowance is not None:
                # What reached the task queue used its recipients; the rest go back.
                queued = set(outcome.queued)
                allowance.used = sum(_recipients(t) for t in released if t.task_id in queued)
            tenants = {row.id: row.tenant_id for row in rows}
            failures += [
                _Failure(task_id, tenants[task_id], FailureCode.QUEUE_REFUSED, reason)
                for task_id, reason in outcome.refused.items()
            ]
            messages.mark_queued(session, outcome.queued)
            messages.fail_unsendable(
                session, {failure.message_id: failure.error for failure in failures + suppressed}
            )
        self._report(rows, outcome, failures, suppressed)
        # The rate limited the pass: it kept claimed emails back, or claimed all it held
        # tokens for when the in-flight budget allowed more.
        paced = allowance is not None and (
            allowance.held > 0 or (limit < budget and len(rows) >= limit)
        )
        return RelayPass(
            claimed=len(rows),
            queued=len(outcome.queued),
            not_queued=len(outcome.not_queued),
            failed=len(failures) + len(suppressed),
            capped=not paced and budget < self._claim_size and len(rows) >= budget,
            paced=paced,
        )

    def _take_allowance(self, allowance: _Allowance, budget: int) -> None:
        """Take tokens for up to ``budget`` emails from the shared bucket, before the claim:
        a whole chunk (a twentieth of a second's rate) or nothing, so a backlog is claimed
        in chunks, not a row per claim; with tokens in hand from an earlier pass, any."""
        pace = allowance.pace
        allowance.at_least = min(pace.chunk, budget)
        at_least = 1 if allowance.credit else allowance.at_least
        want = max(0, budget - allowance.credit)
        if want == 0:
            return
        taken = self._bucket.take(pace, want=want, at_least=at_least)
        allowance.granted, allowance.level = taken.granted, taken.level

    def _released(
        self, tasks: list[TaskEnvelope[EmailPayload]], allowance: _Allowance | None
    ) -> list[TaskEnvelope[EmailPayload]]:
        """The tasks, in claim order, whose recipients the allowance covers."""
        if allowance is None:
            return tasks
        released: list[TaskEnvelope[EmailPayload]] = []
        for task in tasks:
            if allowance.used + _recipients(task) > allowance.tokens:
                break
            released.append(task)
            allowance.used += _recipients(task)
        allowance.held = len(tasks) - len(released)
        if tasks and not released:
            # The first email is larger than what the relay holds: take the rest ahead and
            # send it once the bucket has earned them back, alone in its second.
            allowance.ahead = _recipients(tasks[0]) - allowance.tokens
        return released

    def _settle(self, allowance: _Allowance) -> float:
        """After the pass: give back what it did not use (or take ahead); the bucket's level."""
        if allowance.ahead:
            level = self._bucket.give_back(allowance.pace, -allowance.ahead)
            self._credit = allowance.tokens + allowance.ahead
            return level
        self._credit = 0  # spent, or given back below (a failed give-back under-uses the rate)
        unused = allowance.tokens - allowance.used
        if unused == 0:
            return allowance.level
        return self._bucket.give_back(allowance.pace, unused)

    def _without_suppressed(
        self, session: Session, tasks: list[TaskEnvelope[EmailPayload]]
    ) -> tuple[list[TaskEnvelope[EmailPayload]], list[_Failure]]:
        """The tasks none of whose recipients is on its tenant's suppression list now, and a
        failure for each of the others: an address listed after the message was scheduled
        (the api refused it before) is not sent to. One query for the whole claim."""
        recipients = {task.task_id: _recipient_keys(task) for task in tasks}
        listed = feedback_store.suppressed_among(
            session,
            ((task.tenant_id, key) for task in tasks for key in recipients[task.task_id]),
        )
        if not listed:
            return tasks, []
        kept: list[TaskEnvelope[EmailPayload]] = []
        failures: list[_Failure] = []
        for task in tasks:
            named = tuple(
                address
                for key, address in recipients[task.task_id].items()
                if (task.tenant_id, key) in listed
            )
            if not named:
                kept.append(task)
                continue
            failures.append(
                _Failure(
                    task.task_id,
                    task.tenant_id,
                    FailureCode.RECIPIENT_SUPPRESSED,
                    f"{len(named)} recipient(s) on the tenant's suppression list",
                    suppressed=named,
                )
            )
        return kept, failures

    def _tasks_of(
        self, rows: Sequence[DueMessage]
    ) -> tuple[list[TaskEnvelope[EmailPayload]], list[_Failure]]:
        tasks: list[TaskEnvelope[EmailPayload]] = []
        failures: list[_Failure] = []
        for row in rows:
            task, reason, detail = _task_of(row)
            if task is not None:
                tasks.append(task)
            else:
                assert reason is not None
                failures.append(_Failure(row.id, row.tenant_id, reason, detail))
        return tasks, failures

    def _send_sorting_refusals(
        self,
        tasks: Sequence[TaskEnvelope[EmailPayload]],
        stored_contexts: dict[UUID, dict[str, str] | None],
    ) -> _Sent:
        """Send ``tasks``. What SQS refuses through the sender's fault (the message itself)
        is refused for good; what it fails through its own fault, after the producer's
        retries, stays scheduled for a later pass."""
        if not tasks:
            return _Sent([], {}, {})
        try:
            self._send(tasks, stored_contexts)
        except TaskBatchSendError as error:
            refused = {task_id: error.failed[task_id] for task_id in error.refused}
            not_queued = {
                task_id: reason
                for task_id, reason in error.failed.items()
                if task_id not in refused
            }
            return _Sent(list(error.sent), not_queued, refused)
        return _Sent([task.task_id for task in tasks], {}, {})

    def _send(
        self,
        tasks: Sequence[TaskEnvelope[EmailPayload]],
        stored_contexts: dict[UUID, dict[str, str] | None],
    ) -> None:
        """Send ``tasks``, each inside its own span, carrying that span's context."""
        trace_contexts: dict[UUID, dict[str, str]] = {}
        # Every span stays open across the batch send, so its duration is the send's.
        with ExitStack() as spans:
            for task in tasks:
                spans.enter_context(
                    self._tracing.start_span(
                        RELAY_SPAN,
                        as_carrier(stored_contexts.get(task.task_id)),
                        resource=task.kind,
                        tags={
                            "herald.task_id": str(task.task_id),
                            "herald.tenant_id": str(task.tenant_id),
                        },
                    )
                )
                carrier = self._tracing.inject_context()
                if carrier is not None:
                    trace_contexts[task.task_id] = carrier
            self._producer.send(tasks, trace_contexts=trace_contexts)

    def _report(
        self,
        rows: Sequence[DueMessage],
        outcome: _Sent,
        failures: list[_Failure],
        suppressed: list[_Failure],
    ) -> None:
        """Log and count what the committed pass did.

        A message failed for a suppressed recipient is the tenant's matter, not a fault of
        Herald's: counted in ``MessagesSuppressed``, apart from ``RelayRowsFailed``, whose
        alarm pages (and rolls a deployment back)."""
        for failure in suppressed:
            self._logger.info(
                "message not sent: a recipient was suppressed after it was scheduled; failed",
                extra=failure.log_fields,
            )
        for failure in failures:
            self._logger.error("message cannot be relayed; failed", extra=failure.log_fields)
        for name, failed in (("MessagesSuppressed", suppressed), ("RelayRowsFailed", failures)):
            if failed:
                self._metrics.add_metric(name=name, unit=MetricUnit.Count, value=len(failed))
        if outcome.not_queued:
            self._logger.warning(
                "SQS did not take some tasks (not for what they are); they stay scheduled",
                extra={
                    "not_queued": len(outcome.not_queued),
                    "first_error": next(iter(outcome.not_queued.values())),
                },
            )
        if outcome.queued:
            queued = set(outcome.queued)
            lag = max(_seconds_late(row) for row in rows if row.id in queued)
            self._metrics.add_metric(
                name="MessagesRelayed", unit=MetricUnit.Count, value=len(outcome.queued)
            )
            self._metrics.add_metric(name="RelayLag", unit=MetricUnit.Seconds, value=lag)
            self._window.add_lag(lag)


def _task_of(
    row: DueMessage,
) -> tuple[TaskEnvelope[EmailPayload] | None, FailureCode | None, str]:
    """The task of a claimed row, or why it cannot be one (a reason and a detail to log)."""
    if row.send_at is None or row.created_at is None:
        return None, FailureCode.UNREADABLE_TIME, "send_at or created_at outside year 1..9999"
    try:
        task = email_task(
            message_id=row.id,
            tenant_id=row.tenant_id,
            created_at=row.created_at,
            send_at=row.send_at,
            email=EmailPayload.model_validate(row.payload),
        )
        # The one serialization of the task: the producer sends the body checked here.
        task_body(task)
    except ValidationError as error:
        return None, FailureCode.INVALID_TASK, describe_validation_error(error)
    except TaskTooLargeError as error:
        return None, FailureCode.TOO_LARGE, str(error)
    return task, None, ""


def _recipient_keys(task: TaskEnvelope[EmailPayload]) -> dict[str, str]:
    """The email's recipients (To, Cc, Bcc) by their suppression key, each once."""
    email = task.payload
    keys: dict[str, str] = {}
    for address in [*email.to, *email.cc, *email.bcc]:
        keys.setdefault(suppression_key(address), address)
    return keys


def _recipients(task: TaskEnvelope[EmailPayload]) -> int:
    """What an email counts against SES's send rate: its recipients, To + Cc + Bcc."""
    return len(task.payload.to) + len(task.payload.cc) + len(task.payload.bcc)


def _seconds_late(row: DueMessage) -> float:
    """How long a relayed row had been due: since its send_at, or its creation if later."""
    assert row.send_at is not None and row.created_at is not None  # else it was not relayed
    due_since = max(row.send_at, row.created_at)
    return max(0.0, (utc_now() - due_since).total_seconds())
