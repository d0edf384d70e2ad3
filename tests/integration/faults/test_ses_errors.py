"""Scenario 3: SES throttles a fifth of the sends; the task runner retries them in place."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from tests.integration.conftest import Caller
from tests.integration.faults.conftest import RecordScenario
from tests.integration.faults.pipeline import (
    FlakySes,
    N,
    TaskPipeline,
    assert_no_email_lost_or_sent_twice,
    insert_due_messages,
)


def test_transient_ses_errors_are_retried_until_every_email_is_sent_once(
    engine: Engine, caller: Caller, pipeline: TaskPipeline, record_scenario: RecordScenario
) -> None:
    # Given N due messages, and SES throttling the first send of one message in five
    message_ids = insert_due_messages(engine, caller.tenant_id, N)
    throttled = dict.fromkeys(message_ids[::5], 1)
    ses = FlakySes(pipeline.client("sesv2"), throttled)

    # When the relay queues them and the task runner works through them
    with pipeline.task_runner(ses):
        pipeline.relay_until_idle()
        outcome = assert_no_email_lost_or_sent_twice(pipeline, message_ids)

    # Then every message was sent, once: each throttled one retried within the same
    # delivery (a throttle is not a failure SQS has to redeliver)
    assert ses.injected == len(throttled)
    assert outcome.sent == N
    assert {pipeline.deliveries[str(message_id)] for message_id in throttled} == {1}
    record_scenario(
        messages=N,
        sent=outcome.sent,
        ses_sends=outcome.ses_sends,
        throttled_sends=ses.injected,
        deliveries=outcome.deliveries,
    )
