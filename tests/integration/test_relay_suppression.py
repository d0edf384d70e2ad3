"""The relay and the suppression list (issue 14's bug): an address suppressed after a
message to it was scheduled is not sent to when the message falls due."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest
from aws_lambda_powertools import Logger, Metrics
from mypy_boto3_sqs import SQSClient
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.engine import Engine

from ecs_service.worker.relay import Relay
from shared.adapters.sqs import SqsTaskProducer
from shared.contracts import AnyTask
from shared.errors import FailureCode, failure_text
from tests.integration.conftest import new_queue
from tests.support.builders import PAYLOAD, Caller, insert_messages, status_of, statuses
from tests.support.emf import emitted_metrics
from tests.support.feedback import bounced, event, record
from tests.support.queues import drain

BOB = "bob@example.org"
CY = "cy@example.org"


def to(*addresses: str, cc: tuple[str, ...] = ()) -> dict[str, object]:
    return PAYLOAD | {"to": list(addresses), "cc": list(cc)}


def bounce_for_good(engine: Engine, tenant_id: UUID, address: str) -> None:
    """SES reports a permanent bounce of an earlier email to ``address``: the tenant's
    suppression list now holds it."""
    [earlier] = insert_messages(engine, tenant_id, 1, payload=to(address), status="sent")
    record(engine, event(earlier, tenant_id, "Bounce", bounced(address)))


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    recorded = Metrics(namespace="HeraldTests")
    recorded.clear_metrics()
    yield recorded
    recorded.clear_metrics()


def relay_on(engine: Engine, sqs: SQSClient, queue_url: str, metrics: Metrics) -> Relay:
    return Relay(
        engine,
        SqsTaskProducer(sqs, queue_url),
        claim_size=50,
        logger=Logger(service="relay-test"),
        metrics=metrics,
    )


def queued_task_ids(sqs: SQSClient, queue_url: str) -> set[UUID]:
    return {AnyTask.model_validate_json(str(m["Body"])).task_id for m in drain(sqs, queue_url)}


def test_a_message_to_an_address_suppressed_after_it_was_scheduled_fails_naming_it(
    engine: Engine, sqs: SQSClient, caller: Caller, metrics: Metrics
) -> None:
    # Given a message to Bob and Cy scheduled while neither was suppressed, then a
    # permanent bounce that puts Bob on the tenant's list before it falls due
    [message] = insert_messages(engine, caller.tenant_id, 1, payload=to(CY, cc=(BOB,)))
    bounce_for_good(engine, caller.tenant_id, BOB)
    queue_url = new_queue(sqs, "tasks")

    # When the relay releases it
    outcome = relay_on(engine, sqs, queue_url, metrics).relay_due_messages()

    # Then nothing is sent, and the message fails saying why and which recipient
    assert (outcome.claimed, outcome.queued, outcome.failed) == (1, 0, 1)
    assert queued_task_ids(sqs, queue_url) == set()
    assert status_of(engine, message) == (
        "failed",
        f"{failure_text(FailureCode.RECIPIENT_SUPPRESSED)} Suppressed: {BOB}.",
    )


def test_the_suppressed_message_fails_alone_and_its_neighbours_are_sent(
    engine: Engine, sqs: SQSClient, caller: Caller, metrics: Metrics
) -> None:
    # Given five due messages to Cy and one to Bob, who is then suppressed
    to_cy = insert_messages(engine, caller.tenant_id, 5, payload=to(CY))
    [to_bob] = insert_messages(engine, caller.tenant_id, 1, payload=to(BOB))
    bounce_for_good(engine, caller.tenant_id, BOB)
    queue_url = new_queue(sqs, "tasks")

    # When the relay releases them
    relay_on(engine, sqs, queue_url, metrics).relay_due_messages()

    # Then Cy's five are queued in the same pass, and Bob's is failed (beside the email
    # that bounced)
    assert queued_task_ids(sqs, queue_url) == set(to_cy)
    assert status_of(engine, to_bob)[0] == "failed"
    assert statuses(engine) == {"queued": 5, "failed": 1, "bounced": 1}


def test_another_tenants_suppression_does_not_stop_the_send(
    engine: Engine, sqs: SQSClient, caller: Caller, other_caller: Caller, metrics: Metrics
) -> None:
    # Given Bob suppressed by another tenant, and this tenant's message to Bob due
    bounce_for_good(engine, other_caller.tenant_id, BOB)
    [message] = insert_messages(engine, caller.tenant_id, 1, payload=to(BOB))
    queue_url = new_queue(sqs, "tasks")

    # When the relay releases it
    relay_on(engine, sqs, queue_url, metrics).relay_due_messages()

    # Then it is sent: each tenant's list is its own
    assert queued_task_ids(sqs, queue_url) == {message}
    assert status_of(engine, message) == ("queued", None)


def test_an_address_suppressed_in_another_case_still_matches(
    engine: Engine, sqs: SQSClient, caller: Caller, metrics: Metrics
) -> None:
    # Given Bob suppressed, and a message that names him in capitals
    bounce_for_good(engine, caller.tenant_id, BOB)
    [message] = insert_messages(engine, caller.tenant_id, 1, payload=to("Bob@Example.ORG"))
    queue_url = new_queue(sqs, "tasks")

    # When the relay releases it
    relay_on(engine, sqs, queue_url, metrics).relay_due_messages()

    # Then it is failed, naming the address as the email holds it (a domain is lower case)
    assert queued_task_ids(sqs, queue_url) == set()
    assert status_of(engine, message)[1] == (
        f"{failure_text(FailureCode.RECIPIENT_SUPPRESSED)} Suppressed: Bob@example.org."
    )


def test_the_relay_reads_the_lists_once_per_pass_whatever_the_messages_and_tenants(
    engine: Engine,
    sqs: SQSClient,
    caller: Caller,
    other_caller: Caller,
    metrics: Metrics,
) -> None:
    # Given 20 due messages of two tenants, each with two recipients
    for tenant in (caller, other_caller):
        insert_messages(engine, tenant.tenant_id, 10, payload=to(BOB, CY))
    queue_url = new_queue(sqs, "tasks")
    relay = relay_on(engine, sqs, queue_url, metrics)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    # When the relay releases them in one pass
    sqlalchemy_event.listen(engine, "before_cursor_execute", count)
    try:
        outcome = relay.relay_due_messages()
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", count)

    # Then one statement read the suppression lists, and every message went out
    assert outcome.queued == 20
    assert sum("suppressions" in statement for statement in statements) == 1


def test_a_suppressed_message_is_counted_apart_from_the_relays_failures(
    engine: Engine,
    sqs: SQSClient,
    caller: Caller,
    metrics: Metrics,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a due message to an address suppressed since it was scheduled
    insert_messages(engine, caller.tenant_id, 1, payload=to(BOB))
    bounce_for_good(engine, caller.tenant_id, BOB)
    relay = relay_on(engine, sqs, new_queue(sqs, "tasks"), metrics)
    capsys.readouterr()

    # When the relay releases it
    relay.relay_due_messages()
    metrics.flush_metrics()

    # Then it counts in MessagesSuppressed, not in RelayRowsFailed (whose alarm pages)
    emitted = emitted_metrics(capsys.readouterr().out)
    assert emitted["MessagesSuppressed"] == [1.0]
    assert "RelayRowsFailed" not in emitted
