"""Scenario 6: the worker SIGTERMed in the middle of relaying a batch, then replaced."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine

from herald_local.postgres import LocalPostgres
from tests.integration.conftest import Caller
from tests.integration.faults.conftest import RecordScenario
from tests.integration.faults.pipeline import (
    N,
    TaskPipeline,
    assert_no_email_lost_or_sent_twice,
    insert_due_messages,
    statuses_of,
)
from tests.integration.faults.tcp_proxy import TcpProxy
from tests.support.processes import herald_process, tail, wait_watching

# One SendMessageBatch per relay pass, and more than one pass however small N is.
CLAIM_SIZE = max(1, min(10, N // 2))
# The proxy counts a SendMessageBatch as it arrives, then holds it this long: SIGTERM,
# sent once it is counted, lands while that pass is still sending.
SQS_DELAY_SECONDS = 0.5


def test_a_worker_stopped_mid_batch_finishes_it_and_the_next_worker_sends_the_rest(
    engine: Engine,
    postgres: LocalPostgres,
    caller: Caller,
    pipeline: TaskPipeline,
    record_scenario: RecordScenario,
    tmp_path: Path,
) -> None:
    # Given N due messages and a worker relaying them, 10 a pass, to a slow SQS
    message_ids = insert_due_messages(engine, caller.tenant_id, N)
    moto = urlsplit(pipeline.endpoint_url)
    log = tmp_path / "worker.log"
    with TcpProxy(
        str(moto.hostname),
        int(moto.port or 80),
        delay_seconds=SQS_DELAY_SECONDS,
        watch=b"SendMessageBatch",
    ) as proxy:
        slow = pipeline.worker_environment(postgres.url(), proxy.url)
        with herald_process("worker", slow | {"RELAY_CLAIM_SIZE": str(CLAIM_SIZE)}, log) as first:
            # When ECS sends SIGTERM while a pass is sending its batch
            wait_watching(lambda: proxy.watched >= 1, 60, "a batch on its way", log)
            first.send_signal(signal.SIGTERM)

            # Then the worker finishes that batch and exits cleanly
            assert first.wait(timeout=60) == 0, tail(log)

    # And every row it marked queued is on the task queue, the rest still scheduled
    statuses = Counter(status for status, _ in statuses_of(engine, message_ids).values())
    on_queue = int(
        pipeline.sqs.get_queue_attributes(
            QueueUrl=pipeline.task_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
    )
    assert statuses["queued"] == on_queue > 0
    assert statuses["scheduled"] == N - on_queue > 0

    # When a new worker takes over, with the task runner at work
    direct = pipeline.worker_environment(postgres.url(), pipeline.endpoint_url)
    with (
        herald_process("worker", direct, tmp_path / "second-worker.log"),
        pipeline.task_runner(apply_results=False),
    ):
        outcome = assert_no_email_lost_or_sent_twice(pipeline, message_ids)

    # Then nothing was lost and nothing sent twice: each task was queued exactly once
    assert outcome.sent == N
    assert outcome.deliveries == N
    record_scenario(
        messages=N,
        sent=outcome.sent,
        ses_sends=outcome.ses_sends,
        deliveries=outcome.deliveries,
        queued_by_the_stopped_worker=on_queue,
    )
