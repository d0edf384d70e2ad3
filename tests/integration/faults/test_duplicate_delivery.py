"""Scenario 4: the same task delivered twice, at once and again after it was sent."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from tests.integration.conftest import Caller
from tests.integration.faults.conftest import RecordScenario
from tests.integration.faults.pipeline import (
    N,
    TaskPipeline,
    assert_no_email_lost_or_sent_twice,
    insert_due_messages,
)
from tests.support.queues import drain


def send_bodies(pipeline: TaskPipeline, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        pipeline.sqs.send_message_batch(
            QueueUrl=pipeline.task_queue_url,
            Entries=[
                {"Id": str(index), "MessageBody": body}
                for index, body in enumerate(bodies[start : start + 10])
            ],
        )


def test_a_task_delivered_twice_is_sent_once(
    engine: Engine, caller: Caller, pipeline: TaskPipeline, record_scenario: RecordScenario
) -> None:
    # Given N messages relayed, and each task put on the queue a second time (as a
    # relay that crashed before its commit, or SQS's at-least-once delivery, does)
    message_ids = insert_due_messages(engine, caller.tenant_id, N)
    pipeline.relay_until_idle()
    bodies = [str(message["Body"]) for message in drain(pipeline.sqs, pipeline.task_queue_url)]
    assert len(bodies) == N
    send_bodies(pipeline, bodies + bodies)

    # When the task runner works through them, and an operator later redrives them all
    # once more (a late duplicate, after the messages were sent)
    with pipeline.task_runner():
        first = assert_no_email_lost_or_sent_twice(pipeline, message_ids)
        send_bodies(pipeline, bodies)
        outcome = assert_no_email_lost_or_sent_twice(pipeline, message_ids)

    # Then the runner was handed every task three times, and SES saw each email once
    assert first.sent == outcome.sent == N
    assert outcome.deliveries == 3 * N
    assert outcome.ses_sends == N
    record_scenario(
        messages=N, sent=outcome.sent, ses_sends=outcome.ses_sends, deliveries=outcome.deliveries
    )
