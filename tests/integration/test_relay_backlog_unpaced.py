"""What of the relay's backlog and lag the send rate does not explain: the metrics the relay
alarms and the worker's scaling read (RelayBacklogUnpaced, RelayLagUnpaced), beside the
whole backlog and lag the dashboard shows.

A campaign the send rate holds must neither page nor scale the worker out; a relay that
fails, or is slow while the rate does not hold it, must. Against real PostgreSQL and the
moto server's SQS, as tests/integration/test_send_pacing.py.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from mypy_boto3_sqs import SQSClient
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from ecs_service.worker.send_rate import PostgresSendRateBucket
from shared.adapters.sqs import SqsTaskProducer
from shared.contracts import TaskEnvelope
from tests.integration.conftest import make_caller, new_queue, paced_relay
from tests.support.builders import insert_messages
from tests.support.fakes import FlakyProducer, RecordedMetrics

TEN_MINUTES_AGO = timedelta(minutes=10)


class SlowProducer:
    """The real SQS producer, each send taking ``seconds`` longer (a slow relay's pass)."""

    def __init__(self, sqs: SQSClient, queue_url: str, seconds: float) -> None:
        self._producer = SqsTaskProducer(sqs, queue_url)
        self._seconds = seconds

    def send(
        self,
        tasks: Sequence[TaskEnvelope[Any]],
        *,
        trace_contexts: Mapping[UUID, Mapping[str, str]] | None = None,
    ) -> None:
        time.sleep(self._seconds)
        self._producer.send(tasks, trace_contexts=trace_contexts)


class DatabaseLostOnce:
    """The real SQS producer, but the database connection is lost during the next send."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._producer = SqsTaskProducer(sqs, queue_url)
        self.lose_next = False

    def send(
        self,
        tasks: Sequence[TaskEnvelope[Any]],
        *,
        trace_contexts: Mapping[UUID, Mapping[str, str]] | None = None,
    ) -> None:
        if self.lose_next:
            self.lose_next = False
            raise OperationalError("UPDATE messages", {}, Exception("connection lost"))
        self._producer.send(tasks, trace_contexts=trace_contexts)


def due_ten_minutes_ago(engine: Engine, count: int) -> None:
    caller = make_caller(engine)
    then = datetime.now(UTC) - TEN_MINUTES_AGO
    insert_messages(engine, caller.tenant_id, count, send_at=then, created_at=then)


def test_a_relay_held_by_the_send_rate_reports_its_backlog_and_lag_but_none_unpaced(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given a campaign of 40 emails due 10 minutes ago and a relay paced to 2 recipients/s,
    # counting the backlog at most every 0.4 s
    due_ten_minutes_ago(engine, 40)
    metrics = RecordedMetrics()
    relay = paced_relay(
        engine,
        SqsTaskProducer(sqs, new_queue(sqs, "tasks")),
        bucket,
        2,
        metrics=metrics,
        backlog_interval_seconds=0.4,
    )

    # When it runs as the worker does for a second and a half, waiting what each pass says
    stopping_at = time.monotonic() + 1.5
    while time.monotonic() < stopping_at:
        result = relay.relay_due_messages()
        assert result.paced
        time.sleep(result.rate_wait_seconds)

    # Then the dashboard's metrics show the campaign waiting and late; the alarms' and
    # the scaling's show nothing the send rate does not explain
    counts = len(metrics.values["RelayBacklog"])
    assert counts >= 2
    assert all(35 <= backlog < 40 for backlog in metrics.values["RelayBacklog"])
    assert metrics.values["RelayBacklogUnpaced"] == [0.0] * counts
    assert min(metrics.values["RelayLag"]) >= TEN_MINUTES_AGO.total_seconds()
    assert metrics.values["RelayLagUnpaced"]
    assert set(metrics.values["RelayLagUnpaced"]) == {0.0}


def test_a_relay_its_claim_size_limits_reports_its_backlog_and_lag_unpaced(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given 30 emails due 10 minutes ago and a relay paced to 1,000 recipients/s that
    # claims 10 a pass: its claim, not the rate, limits it
    due_ten_minutes_ago(engine, 30)
    metrics = RecordedMetrics()
    relay = paced_relay(
        engine,
        SqsTaskProducer(sqs, new_queue(sqs, "tasks")),
        bucket,
        1_000,
        metrics=metrics,
        claim_size=10,
    )

    # When it runs a pass
    result = relay.relay_due_messages()

    # Then the pass was not paced, and the whole backlog and lag are the alarms' to judge
    assert (result.queued, result.paced) == (10, False)
    assert metrics.values["RelayBacklog"] == [20.0]
    assert metrics.values["RelayBacklogUnpaced"] == [20.0]
    assert metrics.values["RelayLagUnpaced"] == metrics.values["RelayLag"]
    assert metrics.values["RelayLagUnpaced"][0] >= TEN_MINUTES_AGO.total_seconds()


def test_a_paced_relay_sqs_fails_reports_its_backlog_unpaced(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given 30 due emails and a paced relay whose SQS is down
    due_ten_minutes_ago(engine, 30)
    metrics = RecordedMetrics()
    producer = FlakyProducer(SqsTaskProducer(sqs, new_queue(sqs, "tasks")), outages=1)
    relay = paced_relay(engine, producer, bucket, 2, metrics=metrics)

    # When it runs a pass the rate limits and SQS fails
    result = relay.relay_due_messages()

    # Then a failing relay is never held by the send rate: the whole backlog is reported
    assert (result.paced, result.not_queued) == (True, 1)
    assert metrics.values["RelayBacklogUnpaced"] == metrics.values["RelayBacklog"] == [30.0]
    assert "RelayLagUnpaced" not in metrics.values  # nothing was queued


def test_a_failure_among_paced_passes_makes_their_count_unpaced(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given 30 due emails and a relay paced to 2 recipients/s, counting at most every 0.4 s,
    # whose first pass is counted held by the rate
    due_ten_minutes_ago(engine, 30)
    metrics = RecordedMetrics()
    producer = FlakyProducer(SqsTaskProducer(sqs, new_queue(sqs, "tasks")), outages=0)
    relay = paced_relay(engine, producer, bucket, 2, metrics=metrics, backlog_interval_seconds=0.4)
    assert relay.relay_due_messages().queued == 1
    assert metrics.values["RelayBacklogUnpaced"] == [0.0]

    # When a pass the rate holds (the bucket is empty) is followed, once the rate allows,
    # by one SQS fails, and that one is counted
    producer.outages = 1
    held = relay.relay_due_messages()
    assert (held.claimed, held.paced) == (0, True)
    time.sleep(0.5)
    assert relay.relay_due_messages().not_queued == 1

    # Then that count reports the backlog whole: the held pass does not hide the failure
    assert metrics.values["RelayBacklog"] == [29.0, 29.0]
    assert metrics.values["RelayBacklogUnpaced"] == [0.0, 29.0]

    # When SQS is back and the next pass, held by the rate again, is counted
    time.sleep(0.5)
    last = relay.relay_due_messages()
    assert (last.queued, last.paced) == (1, True)

    # Then the backlog is the send rate's again
    assert metrics.values["RelayBacklogUnpaced"] == [0.0, 29.0, 0.0]


def test_a_pass_that_raises_makes_the_next_count_unpaced(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given 30 due emails and a relay paced to 2 recipients/s, counting at most every 0.4 s,
    # whose first pass is counted held by the rate
    due_ten_minutes_ago(engine, 30)
    metrics = RecordedMetrics()
    producer = DatabaseLostOnce(sqs, new_queue(sqs, "tasks"))
    relay = paced_relay(engine, producer, bucket, 2, metrics=metrics, backlog_interval_seconds=0.4)
    assert relay.relay_due_messages().queued == 1

    # When the next pass with tokens fails (it raises, and counts nothing), and the one
    # after it, held by the rate, succeeds and counts
    time.sleep(0.5)
    producer.lose_next = True
    with pytest.raises(OperationalError):
        relay.relay_due_messages()
    time.sleep(0.5)
    last = relay.relay_due_messages()
    assert (last.queued, last.paced) == (1, True)

    # Then that count reports the backlog whole: a relay whose passes fail is never paced
    assert metrics.values["RelayBacklog"] == [29.0, 28.0]
    assert metrics.values["RelayBacklogUnpaced"] == [0.0, 28.0]


def test_a_paced_relay_slower_than_the_bucket_refills_reports_its_backlog_unpaced(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given 30 due emails and a relay paced to 14 recipients/s (its bucket refills its
    # burst of 2 in 2/13 s) whose passes take 0.3 s: it releases less than the rate alone
    due_ten_minutes_ago(engine, 30)
    metrics = RecordedMetrics()
    producer = SlowProducer(sqs, new_queue(sqs, "tasks"), seconds=0.3)
    relay = paced_relay(engine, producer, bucket, 14, metrics=metrics)

    # When it runs a pass
    result = relay.relay_due_messages()

    # Then the pass is paced but slow, and the backlog is reported for more workers to help
    assert (result.queued, result.paced, result.slow) == (2, True, True)
    assert metrics.values["RelayBacklogUnpaced"] == metrics.values["RelayBacklog"] == [28.0]
