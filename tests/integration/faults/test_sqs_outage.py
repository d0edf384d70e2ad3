"""Scenario 1: SQS unreachable for a few seconds while the worker relays."""

from __future__ import annotations

import time
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

OUTAGE_SECONDS = 2


def test_the_worker_rides_out_an_sqs_outage_and_catches_up(
    engine: Engine,
    postgres: LocalPostgres,
    caller: Caller,
    pipeline: TaskPipeline,
    record_scenario: RecordScenario,
    tmp_path: Path,
) -> None:
    # Given a worker that reaches SQS through a link we can cut, and half the messages
    # relayed through it
    moto = urlsplit(pipeline.endpoint_url)
    log = tmp_path / "worker.log"
    first_half = insert_due_messages(engine, caller.tenant_id, N // 2)
    with (
        TcpProxy(str(moto.hostname), int(moto.port or 80)) as proxy,
        herald_process(
            "worker", pipeline.worker_environment(postgres.url(), proxy.url), log
        ) as worker,
        pipeline.task_runner(apply_results=False),
    ):
        wait_watching(
            lambda: {s for s, _ in statuses_of(engine, first_half).values()} <= {"queued", "sent"},
            60,
            "the first half relayed",
            log,
        )

        # When SQS becomes unreachable and the other half falls due
        proxy.cut()
        second_half = insert_due_messages(engine, caller.tenant_id, N - N // 2)
        wait_watching(
            lambda: proxy.refused >= 2, 30, "the worker to try SQS during the outage", log
        )
        time.sleep(OUTAGE_SECONDS)

        # Then nothing of the second half was marked queued while SQS was away
        during = {status for status, _ in statuses_of(engine, second_half).values()}
        assert during == {"scheduled"}

        # When SQS comes back, Then the same worker catches up: all sent, each once
        proxy.restore()
        outcome = assert_no_email_lost_or_sent_twice(pipeline, first_half + second_half)
        assert worker.poll() is None, tail(log)
    assert outcome.sent == N
    record_scenario(
        messages=N,
        sent=outcome.sent,
        ses_sends=outcome.ses_sends,
        deliveries=outcome.deliveries,
        connections_refused=proxy.refused,
        outage_seconds=OUTAGE_SECONDS,
    )
