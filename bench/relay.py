"""Relay benchmark: rows per second moved from PostgreSQL to the task queue by Herald's
relay, against bare ``SendMessageBatch`` calls of the same batches on the same server.

What it measures
    ``ecs_service.worker.relay.Relay`` (the worker's own class, with the real
    ``shared.adapters.sqs.SqsTaskProducer`` and the worker's engine and claim size) draining
    N due rows: each pass claims rows ``FOR UPDATE SKIP LOCKED``, builds their tasks, sends
    them in batches of 10, marks them ``queued`` and commits; after each pass the metrics
    are flushed as the worker does. Rate: N / the time from the first pass to the first
    pass that finds nothing. The baseline sends the very same message bodies (built from
    the same rows beforehand, outside the timer) with plain ``send_message_batch`` calls of
    10 to another queue of the same server: the SQS floor with no database and no task
    building.

How
    PostgreSQL (``herald_local.postgres``, default durability: each pass's commit waits for
    a WAL flush) migrated with Herald's migrations; the moto server in a process of its own
    (``python -m moto.server``), reached over HTTP with boto3 as the worker reaches SQS.
    Each round inserts N due rows, then runs the relay and the baseline (alternating which
    goes first), checks both queues hold N messages, and purges them. Figures are medians
    over the rounds. CPU of this process (relay and baseline), moto and PostgreSQL is
    recorded per phase.

Run
    .venv/bin/python -m bench.relay [--rows 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import boto3
import httpx
from aws_lambda_powertools import Logger, Metrics
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from bench.result import RESULTS_DIR, BenchResult, Figure, at_least, print_and_write
from bench.support.processes import (
    cpu_seconds,
    postmaster_pid,
    run_bounded,
    stop,
    tail,
    tree_cpu_seconds,
)
from bench.support.servers import REPO_DIR, create_tenant, migrate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from mypy_boto3_sqs import SQSClient
    from sqlalchemy.engine import Engine

NAME = "relay"
RATE_FACTOR = 0.7
SQS_BATCH = 10
# Queues that ended a round with more messages than rows, for the report (see run_round).
EXTRA_MESSAGES: list[str] = []
MOTO_START_SECONDS = 30.0
REGION = "us-east-1"
PAYLOAD = {
    "sender": "herald@example.com",
    "to": ["reader@example.org"],
    "cc": [],
    "bcc": [],
    "reply_to": [],
    "subject": "Your order has shipped",
    "text": "Hello,\n\nYour order has shipped and should arrive within three working days. "
    "You can follow the parcel from your account page at any time.\n\nThanks, the shop",
    "html": None,
}


@dataclass(frozen=True)
class Phase:
    """One timed drain of N rows (relay) or N bodies (baseline)."""

    kind: str
    rows: int
    seconds: float
    own_cpu: float  # CPU seconds per wall second of this process
    moto_cpu: float
    postgres_cpu: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


@contextlib.contextmanager
def moto_server(log_path: Path) -> Iterator[tuple[str, int]]:
    """The moto server in its own process (group); yields its endpoint URL and pid."""
    from herald_local.postgres import free_port

    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + MOTO_START_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto exited ({process.returncode}):\n{tail(log_path)}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{endpoint}/moto-api/", timeout=2.0).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"moto not serving after {MOTO_START_SECONDS:.0f}s")
            time.sleep(0.1)
        yield endpoint, process.pid
    finally:
        stop(process, group=True)


def insert_due_rows(engine: Engine, tenant_id: Any, count: int) -> None:
    send_at = datetime.now(UTC) - timedelta(seconds=1)
    rows = [
        {"id": uuid4(), "tenant_id": tenant_id, "status": "scheduled", "payload": PAYLOAD,
         "send_at": send_at + timedelta(microseconds=number)}
        for number in range(count)
    ]  # fmt: skip
    from ecs_service.db.models import Message

    with engine.begin() as connection:
        connection.execute(insert(Message), rows)
        connection.exec_driver_sql("CHECKPOINT")


def due_bodies(engine: Engine) -> list[tuple[str, str]]:
    """(id, SQS body) of every due scheduled row, built as the relay builds them."""
    from ecs_service.db.models import Message
    from ecs_service.messages import task_of

    with Session(engine) as session:
        rows = session.scalars(
            select(Message).where(Message.status == "scheduled").order_by(Message.send_at)
        ).all()
        return [(str(row.id), task_of(row).to_message_body()) for row in rows]


def queue_size(sqs: SQSClient, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def timed(kind: str, rows: int, action: Callable[[], None], moto: int, postmaster: int) -> Phase:
    own, moto_before, pg_before = cpu_seconds(os.getpid()), cpu_seconds(moto), 0.0
    pg_before = tree_cpu_seconds(postmaster)
    started = time.perf_counter()
    action()
    wall = time.perf_counter() - started
    return Phase(
        kind=kind,
        rows=rows,
        seconds=wall,
        own_cpu=(cpu_seconds(os.getpid()) - own) / wall,
        moto_cpu=(cpu_seconds(moto) - moto_before) / wall,
        postgres_cpu=(tree_cpu_seconds(postmaster) - pg_before) / wall,
    )


def run(args: argparse.Namespace) -> None:
    from ecs_service.db.engine import build_engine
    from ecs_service.settings import DatabaseSettings, WorkerSettings
    from ecs_service.thread_safe_metrics import ThreadSafeMetrics
    from ecs_service.worker.relay import Relay
    from herald_local.postgres import LocalPostgres
    from shared.adapters.sqs import SqsTaskProducer

    claim_size = args.claim_size or WorkerSettings.model_fields["relay_claim_size"].default
    with contextlib.ExitStack() as cleanup:
        work_dir = Path(tempfile.mkdtemp(prefix="herald-bench-relay-"))
        cleanup.callback(shutil.rmtree, work_dir, ignore_errors=True)
        postgres = LocalPostgres(data_dir=work_dir / "pg")
        cleanup.callback(postgres.stop)
        postgres.start()
        migrate(postgres.url())
        tenant = create_tenant(postgres.url(), "bench")
        endpoint, moto_pid = cleanup.enter_context(moto_server(work_dir / "moto.log"))
        for variable, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                                ("AWS_DEFAULT_REGION", REGION)):  # fmt: skip
            os.environ.setdefault(variable, value)  # moto accepts any; never real ones
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
        engine = build_engine(
            DatabaseSettings(url=postgres.url()), application_name="herald-worker"
        )
        cleanup.callback(engine.dispose)
        published = ThreadSafeMetrics(Metrics(namespace="HeraldBench"))
        postmaster = postmaster_pid(postgres.pgdata)

        phases: list[Phase] = []
        print(f"{args.rows} rows per round, claim size {claim_size}, {args.rounds} round(s)")
        for number in range(1, args.rounds + 1):
            # Fresh, empty queues per round (moto, like SQS, purges a queue once a minute).
            relay_queue = sqs.create_queue(QueueName=f"bench-task-queue-{number}")["QueueUrl"]
            baseline_queue = sqs.create_queue(QueueName=f"bench-baseline-{number}")["QueueUrl"]
            relay = Relay(
                engine,
                SqsTaskProducer(sqs, relay_queue),
                claim_size=claim_size,
                logger=Logger(service="herald-bench-relay", level="WARNING"),
                metrics=published,
            )
            phases += run_round(number, args, relay, published, sqs, (relay_queue, baseline_queue),
                                engine, tenant.id, (moto_pid, postmaster))  # fmt: skip
        # A missed target shows in the report; unlike a lost email, it fails no run.
        print_and_write(build_result(args, claim_size, phases), args.results_dir)


def run_round(
    number: int,
    args: argparse.Namespace,
    relay: Any,
    published: Any,
    sqs: SQSClient,
    queues: tuple[str, str],
    engine: Engine,
    tenant_id: Any,
    pids: tuple[int, int],
) -> list[Phase]:
    """Insert N due rows; drain them with the relay and send their bodies bare (the order
    alternates per round); check both queues hold N messages and every row is queued."""
    relay_queue, baseline_queue = queues
    insert_due_rows(engine, tenant_id, args.rows)
    bodies = due_bodies(engine)

    def drain_with_relay() -> None:
        # The worker's loop without its waits: a pass, a metrics flush, until idle.
        while True:
            with contextlib.redirect_stdout(io.StringIO()):  # the EMF lines
                claimed = relay.relay_due_messages().claimed
                published.flush()
            if not claimed:
                return

    def send_bare() -> None:
        for start in range(0, len(bodies), SQS_BATCH):
            entries = [
                {"Id": task_id, "MessageBody": body}
                for task_id, body in bodies[start : start + SQS_BATCH]
            ]
            answer = sqs.send_message_batch(QueueUrl=baseline_queue, Entries=entries)  # type: ignore[arg-type]
            if answer.get("Failed"):
                raise RuntimeError(f"baseline send failed: {answer['Failed'][:1]}")

    phases = []
    order = [("relay", drain_with_relay), ("baseline", send_bare)]
    for kind, action in order if number % 2 else order[::-1]:
        phase = timed(kind, args.rows, action, *pids)
        phases.append(phase)
        print(
            f"  round {number} {kind:<8} {phase.rate:>8.0f} rows/s  "
            f"({phase.seconds:.2f} s; CPU: this process {phase.own_cpu:.0%}, "
            f"moto {phase.moto_cpu:.0%}, postgres {phase.postgres_cpu:.0%})",
            flush=True,
        )
    for url in queues:
        size = queue_size(sqs, url)
        if size < args.rows:
            raise RuntimeError(f"{url} holds {size} messages, fewer than {args.rows}: lost")
        if size > args.rows:
            # SQS is at-least-once: botocore retries a batch whose answer timed out although
            # the server had taken it. Not a loss (the runner's idempotency absorbs it), but
            # worth saying in the report.
            EXTRA_MESSAGES.append(f"round {number}: {url.rsplit('/', 1)[1]} +{size - args.rows}")
        sqs.delete_queue(QueueUrl=url)
    with engine.begin() as connection:
        left = connection.exec_driver_sql(
            "SELECT count(*) FROM messages WHERE status <> 'queued'"
        ).scalar_one()
        if left:
            raise RuntimeError(f"{left} rows were not marked queued")
        # CASCADE: delivery feedback's tables reference messages.
        connection.exec_driver_sql("TRUNCATE messages CASCADE")
    return phases


def build_result(args: argparse.Namespace, claim_size: int, phases: list[Phase]) -> BenchResult:
    relay = [p for p in phases if p.kind == "relay"]
    baseline = [p for p in phases if p.kind == "baseline"]
    relay_rate = statistics.median(p.rate for p in relay)
    baseline_rate = statistics.median(p.rate for p in baseline)

    def median(values: list[Phase], attribute: str) -> float:
        return statistics.median(float(getattr(p, attribute)) for p in values)

    notes = [
        f"CPU (median share of one core) during the relay: this process "
        f"{median(relay, 'own_cpu'):.0%}, moto {median(relay, 'moto_cpu'):.0%}, PostgreSQL "
        f"{median(relay, 'postgres_cpu'):.0%}; during the baseline: this process "
        f"{median(baseline, 'own_cpu'):.0%}, moto {median(baseline, 'moto_cpu'):.0%}. "
        "Both are bounded by moto's per-request cost (a Python server), which real SQS "
        "does not have; the relay adds a claim query, task building and validation, an "
        "UPDATE and a durable commit per pass of "
        f"{claim_size} rows.",
    ]
    if EXTRA_MESSAGES:
        notes.append(
            "More messages than rows arrived (botocore retried a batch moto had taken but "
            f"answered late; at-least-once, nothing lost): {'; '.join(EXTRA_MESSAGES)}."
        )
    if args.rounds < 3:
        notes.append(f"Only {args.rounds} round(s): a smoke run, not a measurement.")
    return BenchResult(
        name=NAME,
        title="Relay: due rows from PostgreSQL to the task queue",
        command=f"python -m bench.relay --rows {args.rows} --rounds {args.rounds}",
        method=(
            f"{args.rows} due rows per round, drained by the worker's `Relay` (claim size "
            f"{claim_size}, `SqsTaskProducer`, batches of {SQS_BATCH}, the worker's engine) "
            "from PostgreSQL (default durability) to a queue of the moto server (own "
            "process); the baseline sends the same bodies with bare `send_message_batch` "
            f"calls of {SQS_BATCH} to another queue of the same server. Order alternates per "
            f"round; medians over {args.rounds} round(s); every round checks both queues "
            "hold every message and every row is `queued`."
        ),
        figures=[
            Figure(
                "rows/s relayed",
                round(relay_rate, 1),
                "rows/s",
                baseline=round(baseline_rate, 1),
                baseline_name="bare SendMessageBatch",
                target=f">= {RATE_FACTOR} x baseline",
                met=at_least(relay_rate, baseline_rate, RATE_FACTOR),
            ),
        ],  # fmt: skip
        notes=notes,
        extra={"claim_size": claim_size, "phases": [asdict(p) | {"rate": p.rate} for p in phases]},
    )


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay", description=__doc__.split("\n")[0]
    )
    # moto's cost per request grows with a queue's size (about 170 rows/s at 1,000 rows per
    # queue, 40 at 5,000 on the same machine), so larger rounds measure moto, not the relay.
    parser.add_argument("--rows", type=int, default=1_000, help="due rows per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument(
        "--claim-size", type=int, default=0, help="rows per pass (default: the worker's)"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the result is written"
    )
    args = parser.parse_args(argv)
    if min(args.rows, args.rounds) < 1 or args.claim_size < 0:
        parser.error("--rows and --rounds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    # Generous: moto serves a few hundred batches per second on a busy 2-core machine.
    budget = 180 + args.rounds * (60 + args.rows / 50)
    return run_bounded(lambda: run(args), budget)


if __name__ == "__main__":
    sys.exit(main())
