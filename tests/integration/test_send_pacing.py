"""The relays keep to SES's send rate together, fairly, and a campaign at that rate goes out
whole (issue 19).

Against real PostgreSQL and the moto server's SQS, as tests/integration/test_relay.py; the
rate source against botocore's Stubber (moto has no sesv2 GetAccount); the last test runs
the whole local system (`herald-local run --ses-max-send-rate`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import boto3
import pytest
from aws_lambda_powertools import Logger, Metrics
from botocore.stub import Stubber
from mypy_boto3_sesv2 import SESV2Client
from mypy_boto3_sqs import SQSClient
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.pacing import build_result, run_campaign
from ecs_service.db.models import Message
from ecs_service.settings import WorkerSettings
from ecs_service.thread_safe_metrics import ThreadSafeMetrics
from ecs_service.worker.relay import Relay, RelayPass
from ecs_service.worker.send_rate import (
    PostgresSendRateBucket,
    SendPace,
    SesAccountSendRate,
    send_rate_from_settings,
)
from shared.adapters.sqs import SqsTaskProducer
from shared.contracts import AnyTask, TaskEnvelope
from tests.integration.conftest import drain, make_caller, new_queue, paced_relay
from tests.support.builders import PAYLOAD, insert_messages, statuses
from tests.support.fakes import FlakyProducer

QUEUE_SETTINGS = {
    "TASK_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/tasks",
    "RESULT_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/results",
}


class CountingProducer:
    """The real SQS producer, counting the tasks handed to it."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._producer = SqsTaskProducer(sqs, queue_url)
        self.sent = 0

    def send(
        self,
        tasks: Sequence[TaskEnvelope[Any]],
        *,
        trace_contexts: Mapping[UUID, Mapping[str, str]] | None = None,
    ) -> None:
        self._producer.send(tasks, trace_contexts=trace_contexts)
        self.sent += len(tasks)


def run_as_the_worker_does(relay: Relay, stop: threading.Event) -> None:
    """The worker's relay loop: wait what a paced pass says, else briefly when idle."""
    while not stop.is_set():
        result = relay.relay_due_messages()
        if result.paced:
            stop.wait(result.rate_wait_seconds)
        elif not result.claimed:
            stop.wait(0.05)


def most_in_any_second(releases: list[tuple[float, int]]) -> int:
    """The most emails released within any one second (a window starting at a release)."""
    ordered = sorted(releases)
    return max(
        sum(count for at, count in ordered if start <= at < start + 1.0) for start, _ in ordered
    )


def queued_times(engine: Engine) -> list[tuple[float, int]]:
    """When each queued message was released (its queued_at), as releases of one."""
    with Session(engine) as session:
        times = session.scalars(select(Message.queued_at))
        return [(at.timestamp(), 1) for at in times if at is not None]


def queued_ids(sqs: SQSClient, queue_url: str) -> list[UUID]:
    return [AnyTask.model_validate_json(str(m["Body"])).task_id for m in drain(sqs, queue_url)]


def test_two_relays_together_never_release_more_than_the_rate_in_any_second(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given 300 due single-recipient emails and two relays paced to 20 recipients/s
    caller = make_caller(engine)
    insert_messages(engine, caller.tenant_id, 300)
    queue_url = new_queue(sqs, "tasks")
    producers = [CountingProducer(sqs, queue_url) for _ in range(2)]
    metrics = ThreadSafeMetrics(Metrics(namespace="HeraldTests"))
    relays = [paced_relay(engine, p, bucket, 20, metrics=metrics) for p in producers]

    # When both run, as two workers do, for 4 seconds
    stop = threading.Event()
    threads = [threading.Thread(target=run_as_the_worker_does, args=(r, stop)) for r in relays]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    # Then both released emails, and together never more than 20 in any second by
    # PostgreSQL's clock (give or take a chunk per relay: queued_at is when a claim's
    # transaction began, a moment before its take)
    released, most = sum(p.sent for p in producers), most_in_any_second(queued_times(engine))
    print(f"released {released} in {elapsed:.2f} s; most in a second {most}")
    assert all(producer.sent for producer in producers)
    assert most <= 20 + len(relays) * SendPace(20).chunk
    # And over the run, the rate, not less: 19/s sustained after a first burst of 2
    assert 0.8 * 19 * elapsed <= released <= 2 + 20 * elapsed
    assert statuses(engine) == {"queued": released, "scheduled": 300 - released}


def test_rows_the_rate_holds_back_stay_scheduled_and_the_pass_says_when_to_come_back(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given 30 due emails and a relay paced to 2 recipients/s (one at a time)
    caller = make_caller(engine)
    insert_messages(engine, caller.tenant_id, 30)
    queue_url = new_queue(sqs, "tasks")
    relay = paced_relay(engine, SqsTaskProducer(sqs, queue_url), bucket, 2)

    # When it runs two passes at once
    first, second = relay.relay_due_messages(), relay.relay_due_messages()

    # Then the first released one email and the second none, saying the next may go
    # within half a second; the other 29 are still scheduled in PostgreSQL
    assert (first.queued, first.paced) == (1, True)
    assert (second.claimed, second.paced) == (0, True)
    assert 0 < second.rate_wait_seconds <= 0.5
    assert len(queued_ids(sqs, queue_url)) == 1
    assert statuses(engine) == {"queued": 1, "scheduled": 29}


def test_tokens_a_relay_did_not_use_go_back_for_the_next(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given a relay paced to 100 recipients/s (a burst of 10) and one due email
    caller = make_caller(engine)
    insert_messages(engine, caller.tenant_id, 1)
    relay = paced_relay(engine, SqsTaskProducer(sqs, new_queue(sqs, "tasks")), bucket, 100)

    # When it runs a pass, taking the 10 and releasing the one email
    assert relay.relay_due_messages().queued == 1

    # Then the 9 tokens it did not use are back in the bucket, for any relay to take now
    assert bucket.take(SendPace(100), want=9, at_least=9).granted == 9


def test_tokens_of_emails_sqs_did_not_take_go_back(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given a relay paced to 100 recipients/s (a burst of 10), 10 due emails, and SQS
    # failing the next send
    caller = make_caller(engine)
    insert_messages(engine, caller.tenant_id, 10)
    producer = FlakyProducer(SqsTaskProducer(sqs, new_queue(sqs, "tasks")), outages=1)
    relay = paced_relay(engine, producer, bucket, 100)

    # When the relay runs a pass, Then SQS queued none of the 10 it claimed
    assert relay.relay_due_messages().not_queued == 10

    # And the 10 tokens are back in the bucket: nothing reached SES's side of the queue
    assert bucket.take(SendPace(100), want=10, at_least=10).granted == 10


def test_under_pacing_one_tenants_email_goes_in_the_first_pass_behind_anothers_backlog(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given tenant A with 200 emails due for an hour and tenant B's single one, just due
    a, b = make_caller(engine, "a"), make_caller(engine, "b")
    insert_messages(engine, a.tenant_id, 200, send_at=datetime.now(UTC) - timedelta(hours=1))
    single = insert_messages(engine, b.tenant_id, 1)[0]
    queue_url = new_queue(sqs, "tasks")
    relay = paced_relay(engine, SqsTaskProducer(sqs, queue_url), bucket, 20)

    # When the paced relay runs its first pass (the burst: 2)
    outcome = relay.relay_due_messages()

    # Then B's email is one of the 2: turns across tenants, as without pacing
    queued = queued_ids(sqs, queue_url)
    assert outcome.queued == len(queued) == 2
    assert single in queued


def test_an_email_larger_than_the_burst_waits_until_the_bucket_has_earned_its_recipients(
    engine: Engine, sqs: SQSClient, bucket: PostgresSendRateBucket
) -> None:
    # Given a relay paced to 20 recipients/s (a burst of 2), an email to 10 recipients
    # due first and a single-recipient one after it
    caller = make_caller(engine)
    large = insert_messages(
        engine,
        caller.tenant_id,
        1,
        send_at=datetime.now(UTC) - timedelta(minutes=1),
        payload=PAYLOAD | {"to": [f"reader-{n}@example.org" for n in range(10)]},
    )[0]
    insert_messages(engine, caller.tenant_id, 1)
    queue_url = new_queue(sqs, "tasks")
    relay = paced_relay(engine, SqsTaskProducer(sqs, queue_url), bucket, 20)

    # When the relay runs a pass
    held = relay.relay_due_messages()

    # Then it releases nothing yet: it takes the 8 recipients it lacks ahead and says to
    # come back once the bucket has earned them (8/19 s after the take, at most)
    assert (held.queued, held.paced) == (0, True)
    assert 0.1 < held.rate_wait_seconds <= 8 / 19

    # When it comes back then, Then the large email goes, alone
    time.sleep(held.rate_wait_seconds)
    assert relay.relay_due_messages().queued == 1
    assert queued_ids(sqs, queue_url) == [large]


def test_a_relay_without_a_send_rate_is_not_paced(engine: Engine, sqs: SQSClient) -> None:
    # Given 60 due emails and a relay with no send rate (the benchmarks' relay)
    caller = make_caller(engine)
    insert_messages(engine, caller.tenant_id, 60)
    relay = Relay(
        engine,
        SqsTaskProducer(sqs, new_queue(sqs, "tasks")),
        claim_size=50,
        logger=Logger(service="send-pacing-test"),
        metrics=Metrics(namespace="HeraldTests"),
    )

    # When it runs a pass, Then it queues a whole claim
    assert relay.relay_due_messages() == RelayPass(claimed=50, queued=50, not_queued=0)


# The rate's source: configured, or SES's GetAccount.


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def account(max_send_rate: float) -> dict[str, Any]:
    """sesv2 GetAccount's answer, as SES gives it for a production account."""
    return {
        "DedicatedIpAutoWarmupEnabled": True,
        "EnforcementStatus": "HEALTHY",
        "ProductionAccessEnabled": True,
        "SendQuota": {
            "Max24HourSend": 50_000.0,
            "MaxSendRate": max_send_rate,
            "SentLast24Hours": 12.0,
        },
        "SendingEnabled": True,
    }


@contextmanager
def stubbed_ses() -> Iterator[tuple[SESV2Client, Stubber]]:
    client = boto3.client("sesv2", region_name="eu-west-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_a_configured_rate_is_used_and_ses_is_not_asked(caplog: pytest.LogCaptureFixture) -> None:
    # Given SES_MAX_SEND_RATE=14
    settings = WorkerSettings.model_validate(QUEUE_SETTINGS | {"SES_MAX_SEND_RATE": "14"})

    # When the worker builds its send rate (with no SES client to be had)
    def no_client() -> SESV2Client:
        raise AssertionError("a configured rate must not build an SES client")

    rate = send_rate_from_settings(
        settings.ses_max_send_rate, no_client, logger=Logger(service="send-pacing-test")
    )

    # Then it is 14/s, and the log says where it came from
    assert rate.per_second() == 14
    (logged,) = [r for r in caplog.records if r.getMessage() == "SES send rate"]
    assert (logged.__dict__["send_rate"], logged.__dict__["source"]) == (14, "SES_MAX_SEND_RATE")


def test_the_send_rate_setting_is_zero_by_default_and_never_negative() -> None:
    # Given no SES_MAX_SEND_RATE, Then it is 0 (ask SES)
    assert WorkerSettings.model_validate(QUEUE_SETTINGS).ses_max_send_rate == 0
    # Given a negative one or not a number, Then the worker refuses it at start-up
    for value in ("-1", "nan", "inf"):
        with pytest.raises(ValidationError, match="SES_MAX_SEND_RATE"):
            WorkerSettings.model_validate(QUEUE_SETTINGS | {"SES_MAX_SEND_RATE": value})


def test_with_rate_zero_the_worker_paces_to_ses_accounts_max_send_rate() -> None:
    with stubbed_ses() as (client, stubber):
        # Given SES_MAX_SEND_RATE=0 and SES answering GetAccount with a rate of 14/s
        stubber.add_response("get_account", account(14.0), {})

        # When the worker builds its send rate and the relay asks it
        rate = send_rate_from_settings(0, lambda: client, logger=Logger(service="t"))

        # Then it is SES's 14/s
        assert rate.per_second() == 14


def test_ses_accounts_rate_is_read_again_every_five_minutes() -> None:
    with stubbed_ses() as (client, stubber):
        # Given SES answering 14/s, and later 50/s (a raised quota)
        stubber.add_response("get_account", account(14.0), {})
        stubber.add_response("get_account", account(50.0), {})
        clock = Clock()
        rate = SesAccountSendRate(client, logger=Logger(service="t"), clock=clock)

        # When asked now and 4 min 59 s later, Then it is 14: SES was asked once
        first = rate.per_second()
        clock.now += 299
        assert (first, rate.per_second()) == (14, 14)

        # When asked after 5 minutes, Then SES is asked again: 50
        clock.now += 2
        assert rate.per_second() == 50


def test_when_ses_cannot_be_read_the_last_known_rate_stays_and_the_read_is_retried() -> None:
    with stubbed_ses() as (client, stubber):
        # Given SES answering 14/s, then refusing (no ses:GetAccount), then answering 20/s
        stubber.add_response("get_account", account(14.0), {})
        stubber.add_client_error("get_account", "AccessDeniedException", http_status_code=403)
        stubber.add_response("get_account", account(20.0), {})
        clock = Clock()
        rate = SesAccountSendRate(client, logger=Logger(service="t"), clock=clock)
        assert rate.per_second() == 14

        # When the cache has expired and SES refuses, Then the last known rate stays
        clock.now += 301
        assert rate.per_second() == 14

        # When 30 s have passed since, Then SES is asked again
        clock.now += 29
        assert rate.per_second() == 14
        clock.now += 1
        assert rate.per_second() == 20


def test_when_ses_was_never_read_the_rate_is_one_per_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with stubbed_ses() as (client, stubber):
        # Given SES refusing GetAccount from the start
        stubber.add_client_error("get_account", "AccessDeniedException", http_status_code=403)
        rate = SesAccountSendRate(client, logger=Logger(service="t"), clock=Clock())

        # When the relay asks, Then it paces at 1/s (a new account's sandbox rate), and says so
        assert rate.per_second() == 1
    (logged,) = [r for r in caplog.records if "cannot read the SES send rate" in r.getMessage()]
    assert logged.levelname == "WARNING"
    assert "AccessDeniedException" in logged.__dict__["error"]


# The whole local system.


def test_on_the_local_system_a_campaign_goes_out_at_the_ses_rate_once_each_and_none_dead(
    tmp_path: Path,
) -> None:
    # Given the local system with SES at 20 recipients/s (the worker paced to it)
    # When 60 emails, each to its own recipient, come due at once (`make bench` runs
    # bench.pacing's 2,000 at 14/s the same way)
    campaign = run_campaign(tmp_path / "herald", emails=60, rate=20, timeout=120)
    print(build_result(campaign).figures)

    # Then every one went out (sent, and delivered as the local SES reports), exactly
    # once, and no dead-letter queue holds anything
    assert set(campaign.statuses) <= {"sent", "delivered"}
    assert sum(campaign.statuses.values()) == 60
    assert campaign.sends == [1] * 60
    assert campaign.dead_letters and campaign.dead == 0
    # And the relays released them at the rate: never more than 20 in a second (give or
    # take a chunk: queued_at is a moment before the take), over about 3 s
    assert campaign.most_released_in_a_second <= 20 + SendPace(20).chunk
    assert max(campaign.queued_at) - min(campaign.queued_at) >= (60 - 20) / 20
