"""Pacing benchmark: a campaign of N emails, all due at once, through the local system
with the local SES refusing more than R recipients per second (issue 19).

What it measures
    ``herald-local run --ses-max-send-rate R``: the local SES throttles over R recipients
    in any second with SES's own error, and the worker's relay is paced to R
    (``SES_MAX_SEND_RATE``). N emails (2,000 by default, at 14/s: SES's usual first
    production rate), each to its own recipient, become due in the same instant. Checked:
    every one sent exactly once (the local SES's mailbox holds one email per recipient),
    none in any dead-letter queue, and the relays never released more than R in a
    second (by each message's ``queued_at``). Measured: the release rate, the whole
    campaign's duration, and the throttles SES still answered (the task runner retries
    them).

How
    The system runs in a temp folder on free ports. The emails are POSTed through the api
    for an hour ahead (the api's rate limit lifted, as in ``bench.end_to_end``), then one
    UPDATE brings every ``send_at`` to now, as a campaign's time arriving; its NOTIFY wakes
    the relay. Progress is polled in PostgreSQL.

Run
    .venv/bin/python -m bench.pacing [--emails 2000] [--rate 14]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import boto3
import httpx
from sqlalchemy import create_engine, text

from bench.result import RESULTS_DIR, BenchResult, Figure, print_and_write
from bench.support.processes import run_bounded
from bench.support.servers import BENCH_RATE_LIMIT
from ecs_service.worker.send_rate import SendPace
from herald_local.aws_isolation import FAKE_CREDENTIALS, REGION
from herald_local.harness import RunningSystem, running_local_system
from herald_local.mailbox import read_mailbox

NAME = "pacing"
RECIPIENT = "paced-{number}@bench.example.org"
POLL_SECONDS = 0.5
POST_ATTEMPTS = 10
# Statuses of an email SES accepted: sent, or delivered once the local SES reported it.
WENT_OUT = ("sent", "delivered")
# The task runner's count of SES's throttled SendEmail calls (one attempt each), as the
# local system prints its metrics: "TasksThrottled=1" or "TasksThrottled=[1.0, 1.0]".
THROTTLED_METRIC = re.compile(r"TasksThrottled=(\[[^\]]*\]|[\d.]+)")


@dataclass
class Campaign:
    """What happened to a paced campaign on the local system."""

    emails: int
    rate: float
    statuses: dict[str, int]
    sends: list[int]  # SES emails per recipient, one per email: 1 each is exactly once
    dead_letters: dict[str, int]  # queue URL -> messages, for every dead-letter queue
    queued_at: list[float]  # each email's release (UNIX time)
    finished_at: list[float]  # each email's SES send (UNIX time)
    due_at: float
    throttles: int
    notes: list[str] = field(default_factory=list)

    @property
    def sent_exactly_once(self) -> int:
        return sum(1 for count in self.sends if count == 1)

    @property
    def dead(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def most_released_in_a_second(self) -> int:
        """The most emails the relays released within any one second."""
        ordered = sorted(self.queued_at)
        most, first = 0, 0
        for last, at in enumerate(ordered):
            while at - ordered[first] >= 1.0:
                first += 1
            most = max(most, last - first + 1)
        return most

    @property
    def release_rate(self) -> float:
        """Emails released per second after the first second (the bucket's burst aside)."""
        ordered = sorted(self.queued_at)
        later = [at for at in ordered if at >= ordered[0] + 1.0]
        if len(later) < 2:
            return float("nan")
        return (len(later) - 1) / (later[-1] - later[0])

    @property
    def duration(self) -> float:
        """Seconds from the emails being due to the last one sent."""
        return max(self.finished_at) - self.due_at


def run_campaign(
    data_dir: Path, *, emails: int, rate: float, timeout: float, concurrency: int = 4
) -> Campaign:
    """Run the local system in ``data_dir`` with SES at ``rate``, make ``emails`` emails
    due at once, wait until SES has accepted every one; what happened."""
    with running_local_system(
        data_dir, environment=BENCH_RATE_LIMIT, ses_max_send_rate=rate
    ) as system:
        engine = create_engine(system.database_url, pool_size=1, max_overflow=0)
        try:
            ids = schedule(system, emails, concurrency)
            with engine.begin() as connection:
                connection.execute(
                    text("UPDATE messages SET send_at = now() WHERE id = ANY(:ids)"), {"ids": ids}
                )
                due_at = connection.execute(text("SELECT now()")).scalar_one()
            statuses = wait_until_out(engine, emails, timeout, system)
            with engine.connect() as connection:
                rows = connection.execute(
                    text("SELECT queued_at, finished_at FROM messages WHERE id = ANY(:ids)"),
                    {"ids": ids},
                ).all()
        finally:
            engine.dispose()
        # What the local SES holds, read as bench.end_to_end does (moto's data, at once).
        emails_at_ses = read_mailbox(system.aws_url, timeout=60)
        per_recipient = Counter(address for email in emails_at_ses for address in email.to)
        dead = dead_letter_counts(system.aws_url)
        throttles = throttled_sends(system.text())
    return Campaign(
        emails=emails,
        rate=rate,
        statuses=statuses,
        sends=[per_recipient[RECIPIENT.format(number=n)] for n in range(emails)],
        dead_letters=dead,
        queued_at=[row.queued_at.timestamp() for row in rows if row.queued_at is not None],
        finished_at=[row.finished_at.timestamp() for row in rows if row.finished_at is not None],
        due_at=due_at.timestamp(),
        throttles=throttles,
    )


def schedule(system: RunningSystem, emails: int, concurrency: int) -> list[UUID]:
    """POST ``emails`` emails, each to its own recipient, for an hour from now; their ids."""
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    local = threading.local()

    def post(number: int) -> UUID:
        client: httpx.Client | None = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(
                base_url=system.api_url, headers=system.headers, timeout=30.0
            )
        body = {
            "to": [RECIPIENT.format(number=number)],
            "subject": f"Paced email {number}",
            "text": f"Email {number} of the pacing benchmark.",
            "send_at": later,
        }
        for _ in range(POST_ATTEMPTS):
            answer = client.post("/v1/messages", json=body)
            if answer.status_code not in (429, 503):
                break
            # The api sheds load it cannot take now: come back when it says.
            time.sleep(float(answer.headers.get("Retry-After", "1")))
        if answer.status_code != 201:
            raise RuntimeError(f"POST answered {answer.status_code}: {answer.text[:500]}")
        return UUID(answer.json()["id"])

    with ThreadPoolExecutor(concurrency, thread_name_prefix="bench-post") as pool:
        return list(pool.map(post, range(emails)))


def wait_until_out(
    engine: Any, emails: int, timeout: float, system: RunningSystem
) -> dict[str, int]:
    """Poll PostgreSQL until SES has accepted every email; the counts by status."""
    deadline = time.monotonic() + timeout
    query = text("SELECT status, count(*) FROM messages GROUP BY status")
    while True:
        with engine.connect() as connection:
            counts: dict[str, int] = dict(connection.execute(query).all())
        if sum(counts.get(status, 0) for status in WENT_OUT) >= emails:
            return counts
        if time.monotonic() > deadline or system.process.poll() is not None:
            raise TimeoutError(
                f"not all {emails} emails went out in {timeout:.0f} s: {counts}; "
                f"output:\n{system.text()[-4000:]}"
            )
        time.sleep(POLL_SECONDS)


def throttled_sends(output: str) -> int:
    """The task runner's ``TasksThrottled`` over the run, from the system's metric lines."""
    return round(
        sum(
            float(value)
            for found in THROTTLED_METRIC.findall(output)
            for value in found.strip("[]").split(",")
            if value.strip()
        )
    )


def dead_letter_counts(aws_url: str) -> dict[str, int]:
    """Messages in each queue another queue dead-letters to, on the local AWS endpoint."""
    # The local system's own region and fake credentials: the shell may have none.
    sqs = boto3.client(
        "sqs",
        endpoint_url=aws_url,
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    attributes = {
        url: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        for url in sqs.list_queues().get("QueueUrls", [])
    }
    targets = {
        json.loads(found["RedrivePolicy"])["deadLetterTargetArn"]
        for found in attributes.values()
        if "RedrivePolicy" in found
    }
    return {
        url: int(found["ApproximateNumberOfMessages"])
        + int(found["ApproximateNumberOfMessagesNotVisible"])
        for url, found in attributes.items()
        if found["QueueArn"] in targets
    }


def build_result(campaign: Campaign) -> BenchResult:
    rate, emails = campaign.rate, campaign.emails
    # A release's queued_at is its claim transaction's start, a moment before its take.
    window_cap = int(rate) + SendPace(rate).chunk
    figures = [
        Figure(
            "emails sent exactly once", campaign.sent_exactly_once, "emails",
            target=f"all {emails}", met=campaign.sent_exactly_once == emails,
        ),
        Figure(
            "messages in a dead-letter queue", campaign.dead, "messages", target="0",
            met=campaign.dead == 0 and bool(campaign.dead_letters), higher_is_better=False,
        ),
        Figure(
            "most released in any second", campaign.most_released_in_a_second, "emails",
            target=f"<= {rate:g} (+{SendPace(rate).chunk} clock skew)",
            met=campaign.most_released_in_a_second <= window_cap, higher_is_better=False,
        ),
        Figure(
            "release rate after the first second", round(campaign.release_rate, 2),
            "emails/s", baseline=rate, baseline_name="SES max send rate",
        ),
        Figure(
            "campaign duration, due to last sent", round(campaign.duration, 1), "s",
            higher_is_better=False,
        ),
        Figure(
            "sends SES still throttled (retried)", campaign.throttles, "sends",
            higher_is_better=False,
        ),
    ]  # fmt: skip
    pace = SendPace(rate)
    notes = [
        f"Statuses at the end: {campaign.statuses}.",
        f"The relay's bucket at {rate:g}/s: a burst of {pace.burst:g}, refilled at "
        f"{pace.refill_per_second:g}/s, claimed in chunks of {pace.chunk}: never more than "
        f"{int(rate)} taken in a second (docs/ses-quota.md).",
        "The release rate is the relay's; the send rate also depends on the task runner, "
        "one local batch of at most 10 at a time, which on a busy machine may be the slower "
        "of the two (then the in-flight cap holds the relay back).",
        *campaign.notes,
    ]
    return BenchResult(
        name=NAME,
        title=f"Pacing: {emails} emails due at once, SES at {rate:g} recipients/s",
        command=f"python -m bench.pacing --emails {emails} --rate {rate:g}",
        method=(
            f"`herald-local run --ses-max-send-rate {rate:g}` in a temp folder: the local SES "
            "refuses over that many recipients in any second with SES's `Throttling` error, "
            f"and the worker is paced to it. {emails} emails, each to its own recipient, "
            "POSTed for later, then made due in one UPDATE. Exactly once: the local SES's "
            "mailbox holds one email per recipient. Dead letters: every queue another "
            "dead-letters to, after the run. Releases: each message's `queued_at`."
        ),
        figures=figures,
        notes=notes,
        extra={"dead_letters": campaign.dead_letters, "statuses": campaign.statuses},
    )


def run(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as cleanup:
        work_dir = Path(tempfile.mkdtemp(prefix="herald-bench-pacing-"))
        cleanup.callback(shutil.rmtree, work_dir, ignore_errors=True)
        print(f"starting herald-local run --ses-max-send-rate {args.rate:g} ...", flush=True)
        campaign = run_campaign(
            work_dir / "data", emails=args.emails, rate=args.rate, timeout=args.timeout
        )
    result = build_result(campaign)
    if not print_and_write(result, args.results_dir):
        raise RuntimeError("the paced campaign missed a target: see above")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pacing", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--emails", type=int, default=2_000, help="emails in the campaign")
    parser.add_argument(
        "--rate", type=float, default=14.0, help="the local SES's max send rate (recipients/s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds to wait for every email to go out"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the result is written"
    )
    args = parser.parse_args(argv)
    if args.emails < 1 or args.rate <= 0 or args.timeout <= 0:
        parser.error("--emails, --rate and --timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    return run_bounded(lambda: run(args), 300 + args.timeout)


if __name__ == "__main__":
    sys.exit(main())
