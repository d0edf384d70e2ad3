"""The relay is fair across tenants and never floods the task queue (issue 13).

Against real PostgreSQL and the moto server's SQS, as tests/integration/test_relay.py; the
last test runs the whole local system (`herald-local run`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from aws_lambda_powertools import Logger, Metrics
from mypy_boto3_sqs import SQSClient
from sqlalchemy import create_engine, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service.db.models import Message
from ecs_service.worker.relay import Relay
from herald_local.harness import running_local_system, wait_for
from shared.adapters.sqs import SqsTaskProducer
from shared.contracts import AnyTask
from tests.integration.conftest import drain, make_caller, new_queue
from tests.support.builders import insert_messages, statuses

BACKLOG = 1_200


def fair_relay(
    engine: Engine,
    sqs: SQSClient,
    queue_url: str,
    *,
    claim_size: int = 50,
    max_in_flight: int | None = None,
    in_flight_expiry_seconds: float = 300,
) -> Relay:
    return Relay(
        engine,
        SqsTaskProducer(sqs, queue_url),
        claim_size=claim_size,
        max_in_flight=max_in_flight,
        in_flight_expiry_seconds=in_flight_expiry_seconds,
        logger=Logger(service="relay-fairness-test"),
        metrics=Metrics(namespace="HeraldTests"),
    )


def queued_tasks(sqs: SQSClient, queue_url: str) -> list[AnyTask]:
    return [AnyTask.model_validate_json(str(m["Body"])) for m in drain(sqs, queue_url)]


def finish(engine: Engine, count: int) -> None:
    """Results come back for ``count`` queued messages: they are sent."""
    with Session(engine) as session, session.begin():
        ids = session.scalars(select(Message.id).where(Message.status == "queued").limit(count))
        session.execute(
            update(Message)
            .where(Message.id.in_(list(ids)))
            .values(status="sent", finished_at=datetime.now(UTC))
        )


def test_one_tenants_single_email_is_claimed_in_the_first_pass_behind_anothers_backlog(
    engine: Engine, sqs: SQSClient
) -> None:
    # Given tenant A with 1,200 due emails, all due before tenant B's single one
    a, b = make_caller(engine, "a"), make_caller(engine, "b")
    insert_messages(engine, a.tenant_id, BACKLOG, send_at=datetime.now(UTC) - timedelta(hours=1))
    single = insert_messages(engine, b.tenant_id, 1)[0]
    queue_url = new_queue(sqs, "tasks")

    # When the relay runs one pass of 50
    outcome = fair_relay(engine, sqs, queue_url).relay_due_messages()

    # Then B's email is among the 50 it queued
    tasks = queued_tasks(sqs, queue_url)
    assert outcome.queued == len(tasks) == 50
    assert single in {task.task_id for task in tasks}


def test_a_pass_takes_due_rows_in_turns_across_tenants(engine: Engine, sqs: SQSClient) -> None:
    # Given tenants with 30, 3 and 1 due emails
    tenants = [make_caller(engine, name) for name in ("a", "b", "c")]
    for caller, count in zip(tenants, (30, 3, 1), strict=True):
        insert_messages(engine, caller.tenant_id, count)
    queue_url = new_queue(sqs, "tasks")

    # When the relay runs one pass of 7
    fair_relay(engine, sqs, queue_url, claim_size=7).relay_due_messages()

    # Then each tenant's first turn came first, then the second, then the third
    per_tenant = {c.tenant_id: 0 for c in tenants}
    for task in queued_tasks(sqs, queue_url):
        per_tenant[task.tenant_id] += 1
    assert list(per_tenant.values()) == [3, 3, 1]


def test_a_send_at_in_the_past_does_not_jump_ahead_of_rows_due_longer(
    engine: Engine, sqs: SQSClient
) -> None:
    # Given A's and B's emails, due for a minute and for ten seconds, and C's, created just
    # now with a send_at of yesterday (as old as the CHECK allows)
    a, b, c = (make_caller(engine, name) for name in ("a", "b", "c"))
    now = datetime.now(UTC)
    [due_for_a_minute] = insert_messages(
        engine, a.tenant_id, send_at=now - timedelta(minutes=1), created_at=now - timedelta(hours=1)
    )
    [due_for_ten_seconds] = insert_messages(
        engine,
        b.tenant_id,
        send_at=now - timedelta(seconds=10),
        created_at=now - timedelta(hours=1),
    )
    [backdated] = insert_messages(
        engine, c.tenant_id, send_at=now - timedelta(hours=23), created_at=now
    )
    queue_url = new_queue(sqs, "tasks")

    # When the relay runs one pass of 2
    fair_relay(engine, sqs, queue_url, claim_size=2).relay_due_messages()

    # Then A's and B's went out; C's waits for the next pass: it has only been due since now
    queued = {t.task_id for t in queued_tasks(sqs, queue_url)}
    assert queued == {due_for_a_minute, due_for_ten_seconds}
    assert backdated not in queued


def test_the_in_flight_cap_holds_until_results_free_it(engine: Engine, sqs: SQSClient) -> None:
    # Given 100 due emails and a relay that keeps at most 20 tasks in flight
    caller = make_caller(engine)
    insert_messages(engine, caller.tenant_id, 100)
    queue_url = new_queue(sqs, "tasks")
    relay = fair_relay(engine, sqs, queue_url, max_in_flight=20)

    # When it runs two passes with no result back
    first, second = relay.relay_due_messages(), relay.relay_due_messages()

    # Then the first queued 20 and the second nothing: it is capped
    assert (first.queued, second.claimed, second.capped) == (20, 0, True)
    assert statuses(engine) == {"queued": 20, "scheduled": 80}

    # When results come back for 15 of them, Then the next pass queues 15 more
    finish(engine, 15)
    assert relay.relay_due_messages().queued == 15
    assert statuses(engine) == {"sent": 15, "queued": 20, "scheduled": 65}


def test_the_relay_waits_for_room_for_a_whole_batch(engine: Engine, sqs: SQSClient) -> None:
    # Given a relay capped at 20 in flight with 20 queued and more due
    caller = make_caller(engine)
    insert_messages(engine, caller.tenant_id, 40)
    relay = fair_relay(engine, sqs, new_queue(sqs, "tasks"), max_in_flight=20)
    relay.relay_due_messages()

    # When 9 results come back, Then it claims nothing: each claim ranks every due row,
    # so it waits until an SQS batch of 10 fits
    finish(engine, 9)
    assert relay.relay_due_messages().claimed == 0

    # When a 10th comes back, Then it claims 10
    finish(engine, 1)
    assert relay.relay_due_messages().claimed == 10


def test_a_task_whose_result_never_comes_back_stops_holding_the_budget(
    engine: Engine, sqs: SQSClient
) -> None:
    # Given a relay capped at 10 in flight whose 10 tasks' results were lost: they were
    # queued 6 minutes ago, longer than the 5-minute expiry
    caller = make_caller(engine)
    insert_messages(engine, caller.tenant_id, 15)
    relay = fair_relay(engine, sqs, new_queue(sqs, "tasks"), max_in_flight=10)
    assert relay.relay_due_messages().queued == 10
    with engine.begin() as connection:
        connection.execute(
            update(Message)
            .where(Message.status == "queued")
            .values(queued_at=datetime.now(UTC) - timedelta(minutes=6))
        )

    # When the relay runs again, Then it queues the remaining 5
    assert relay.relay_due_messages().queued == 5


def test_on_the_local_system_one_tenants_email_goes_out_within_seconds_behind_a_backlog(
    tmp_path: Path,
) -> None:
    # Given the whole system running, and another tenant with 1,200 emails due at once
    # (written straight to PostgreSQL: through the api they would take 24 s of its rate limit)
    with running_local_system(tmp_path / "herald") as system:
        engine = create_engine(system.database_url)
        noisy = make_caller(engine, "noisy neighbour").tenant_id
        insert_messages(engine, noisy, BACKLOG)

        # When the demo tenant schedules one email right after
        started = time.monotonic()
        message_id = system.schedule("quiet@example.org", "Behind the backlog")

        # Then it is sent within seconds, long before the backlog is done (sent, or already
        # delivered: the local SES reports a delivery a moment after the send)
        wait_for(
            lambda: system.status(message_id) in {"sent", "delivered"},
            10,
            "the single email",
            system,
        )
        seconds = time.monotonic() - started
        backlog_left = statuses(engine).get("scheduled", 0)
        with Session(engine) as session:
            single = session.get_one(Message, UUID(message_id))
        engine.dispose()
    assert single.queued_at is not None and single.finished_at is not None
    print(
        f"single email sent after {seconds:.1f} s (queued after "
        f"{(single.queued_at - single.created_at).total_seconds():.1f} s, sent "
        f"{(single.finished_at - single.queued_at).total_seconds():.1f} s later); "
        f"{backlog_left} of the backlog still due"
    )
    assert seconds < 10
    assert backlog_left > 0


def test_a_newcomer_is_not_queued_behind_every_older_backlog_across_passes(
    engine: Engine, sqs: SQSClient
) -> None:
    # Given 20 tenants with 30 due emails each, all older than anything new, and a relay
    # of 10 rows a pass that has already run once (10 tenants have a task in flight)
    backlog_tenants = [make_caller(engine, f"busy-{n}") for n in range(20)]
    for caller in backlog_tenants:
        insert_messages(
            engine, caller.tenant_id, 30, send_at=datetime.now(UTC) - timedelta(hours=1)
        )
    queue_url = new_queue(sqs, "tasks")
    relay = fair_relay(engine, sqs, queue_url, claim_size=10)
    relay.relay_due_messages()

    # When a new tenant schedules one email
    newcomer = make_caller(engine, "newcomer")
    single = insert_messages(engine, newcomer.tenant_id, 1)[0]

    # Then it goes out within the passes it takes every tenant to have one task in
    # flight (two here), not after the 600-row backlog (61 passes, as before the fix)
    queued: set[UUID] = set()
    for _ in range(2):
        relay.relay_due_messages()
        queued |= {task.task_id for task in queued_tasks(sqs, queue_url)}
    assert single in queued
