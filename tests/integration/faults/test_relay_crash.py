"""Scenario 2: the relay killed between its send to SQS and its commit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from sqlalchemy.engine import Engine

from herald_local.postgres import LocalPostgres
from tests.integration.conftest import REPO_ROOT, Caller
from tests.integration.faults.conftest import RecordScenario
from tests.integration.faults.pipeline import (
    N,
    TaskPipeline,
    assert_no_email_lost_or_sent_twice,
    insert_due_messages,
    statuses_of,
)


def test_a_relay_killed_before_its_commit_leaves_rows_scheduled_and_each_email_goes_once(
    engine: Engine,
    postgres: LocalPostgres,
    caller: Caller,
    pipeline: TaskPipeline,
    record_scenario: RecordScenario,
) -> None:
    # Given N due messages
    message_ids = insert_due_messages(engine, caller.tenant_id, N)

    # When a relay process claims them all, sends them to SQS and is killed before its commit
    crashed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.faults.crashing_relay",
            postgres.url(),
            pipeline.task_queue_url,
            str(N),
        ],
        cwd=REPO_ROOT,
        env=os.environ
        | {
            "AWS_ENDPOINT_URL": pipeline.endpoint_url,
            "PYTHONPATH": f"{REPO_ROOT / 'src'}:{REPO_ROOT}",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Then SQS holds every task, yet every row is still scheduled
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    on_queue = pipeline.sqs.get_queue_attributes(
        QueueUrl=pipeline.task_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert int(on_queue) == N
    assert {status for status, _ in statuses_of(engine, message_ids).values()} == {"scheduled"}

    # When the next relay sends them again and the task runner works through both copies
    with pipeline.task_runner():
        pipeline.relay_until_idle()
        outcome = assert_no_email_lost_or_sent_twice(pipeline, message_ids)

    # Then each task reached the runner twice, and each email went out once
    assert outcome.sent == N
    assert outcome.deliveries == 2 * N
    assert outcome.ses_sends == N
    record_scenario(
        messages=N, sent=outcome.sent, ses_sends=outcome.ses_sends, deliveries=outcome.deliveries
    )
