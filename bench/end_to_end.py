"""End-to-end benchmark: N emails scheduled through the API, all sent by the local system.

What it measures
    The whole pipeline of ``herald-local run`` (the api, PostgreSQL, the worker's relay,
    the task queue on the local AWS endpoint, the local SQS event source invoking the real
    task runner, SES, the result queue and the worker's results consumer): N emails (1,000
    by default), each due the moment it is created (no ``send_at``), POSTed by
    ``--concurrency`` clients. Throughput: N / the time from the first POST to the last
    message's ``finished_at`` (the task runner's time of the SES send, carried by the
    result). Due-to-sent latency: ``finished_at - send_at`` per message, p50 and p99.

How
    The system runs in a temp folder on free ports, started and stopped as a person does
    (``herald-local run``, Ctrl-C). Each email goes to its own recipient, so the check
    after the run is exact: every message ``sent`` and the local SES (moto's
    ``/moto-api/data.json``) holding exactly one email per message. Progress is polled in
    PostgreSQL (a count by status every half second), not through the api. The CPU time
    of each part of the system and of PostgreSQL is recorded over the run.

Run
    .venv/bin/python -m bench.end_to_end [--emails 1000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import create_engine, text

from bench.result import RESULTS_DIR, BenchResult, Figure, print_and_write
from bench.support.processes import machine_busy_seconds, run_bounded, tree_cpu_seconds
from bench.support.servers import BENCH_RATE_LIMIT
from herald_local.harness import RunningSystem, postmaster_pid, running_local_system

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy.engine import Engine

    from herald_local.mailbox import SentEmail

NAME = "end_to_end"
RECIPIENT = "e2e-{number}@bench.example.org"
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Delivered:
    """One message after the run, as PostgreSQL has it."""

    status: str
    send_at: datetime
    finished_at: datetime | None


def schedule(system: RunningSystem, emails: int, concurrency: int) -> tuple[float, float]:
    """POST ``emails`` messages from ``concurrency`` threads; (first start, last end) as
    UNIX times."""
    headers = {"Authorization": f"Bearer {system.key}"}
    local = threading.local()

    def post(number: int) -> None:
        client: httpx.Client | None = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=system.api_url, timeout=30.0)
        body = {
            "to": [RECIPIENT.format(number=number)],
            "subject": f"Benchmark email {number}",
            "text": f"Email {number} of the end-to-end benchmark.",
        }
        answer = client.post("/v1/messages", headers=headers, json=body)
        if answer.status_code != 201:
            raise RuntimeError(f"POST answered {answer.status_code}: {answer.text[:500]}")

    started = time.time()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="bench-post") as pool:
        for future in [pool.submit(post, number) for number in range(emails)]:
            future.result()
    return started, time.time()


# What SES accepted: sent, and what its delivery events make of sent (issue 14's states).
ACCEPTED_BY_SES = frozenset({"sent", "delivered", "bounced", "complained"})


def wait_until_done(engine: Engine, emails: int, timeout: float) -> dict[str, int]:
    """Poll PostgreSQL until SES accepted or Herald failed every message; the counts by
    status."""
    deadline = time.monotonic() + timeout
    query = text("SELECT status, count(*) FROM messages GROUP BY status")
    while True:
        with engine.connect() as connection:
            counts: dict[str, int] = dict(connection.execute(query).all())
        done = sum(counts.get(status, 0) for status in ACCEPTED_BY_SES) + counts.get("failed", 0)
        if done >= emails:
            return counts
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all {emails} messages finished in {timeout:.0f}s: {counts}")
        time.sleep(POLL_SECONDS)


def delivered(engine: Engine) -> list[Delivered]:
    query = text("SELECT status, send_at, finished_at FROM messages")
    with engine.connect() as connection:
        return [Delivered(*row) for row in connection.execute(query)]


def part_cpu(system: RunningSystem) -> dict[str, float]:
    """CPU seconds so far of each part (the runner's children, by command) and PostgreSQL."""
    from bench.support.processes import descendants

    found: dict[str, float] = {}
    runner = system.process.pid
    for pid in descendants(runner):
        with contextlib.suppress(OSError):
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent != runner:
                continue
            words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            label = _label([word.decode(errors="replace") for word in words if word])
            found[label] = found.get(label, 0.0) + tree_cpu_seconds(pid)
    found["runner (local AWS endpoint, moto)"] = _own_cpu(runner)
    if (postmaster := postmaster_pid(system)) is not None:
        found["postgres"] = tree_cpu_seconds(postmaster)
    return found


def _own_cpu(pid: int) -> float:
    from bench.support.processes import cpu_seconds

    return cpu_seconds(pid)


def _label(words: list[str]) -> str:
    for known in ("event-source", "api", "worker", "mailbox", "frontend"):
        if known in words:
            return "task runner (event source)" if known == "event-source" else known
    return " ".join(Path(word).name for word in words[:3])


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (share in 0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


def run(args: argparse.Namespace) -> None:
    from herald_local.mailbox import read_mailbox

    with contextlib.ExitStack() as cleanup:
        work_dir = Path(tempfile.mkdtemp(prefix="herald-bench-e2e-"))
        cleanup.callback(shutil.rmtree, work_dir, ignore_errors=True)
        print("starting herald-local run ...", flush=True)
        system = cleanup.enter_context(
            running_local_system(work_dir / "data", environment=BENCH_RATE_LIMIT)
        )
        engine = create_engine(system.database_url, pool_size=1, max_overflow=0)
        cleanup.callback(engine.dispose)
        print(f"running: api {system.api_url}; scheduling {args.emails} emails", flush=True)
        cpu_before, machine_before = part_cpu(system), machine_busy_seconds()
        clock_started = time.monotonic()
        first_post, last_post = schedule(system, args.emails, args.concurrency)
        print(f"  scheduled in {last_post - first_post:.1f} s; waiting for sent", flush=True)
        counts = wait_until_done(engine, args.emails, args.timeout)
        wall = time.monotonic() - clock_started
        cpu_after, machine = part_cpu(system), machine_busy_seconds() - machine_before
        rows = delivered(engine)
        emails = read_mailbox(system.aws_url, timeout=30)
        result = build_result(
            args, rows, emails, counts, first_post, last_post,
            {name: (cpu_after[name] - cpu_before.get(name, 0.0)) / wall for name in cpu_after},
            machine / wall,
        )  # fmt: skip
        if not print_and_write(result, args.results_dir):
            raise RuntimeError("the end-to-end run lost or duplicated emails: see above")


def build_result(
    args: argparse.Namespace,
    rows: list[Delivered],
    emails: Sequence[SentEmail],
    counts: dict[str, int],
    first_post: float,
    last_post: float,
    cpu: dict[str, float],
    machine_cpu: float,
) -> BenchResult:
    sent = [row for row in rows if row.status in ACCEPTED_BY_SES and row.finished_at is not None]
    latencies = [(row.finished_at - row.send_at).total_seconds() for row in sent]  # type: ignore[operator]
    last_sent = max(row.finished_at.timestamp() for row in sent)  # type: ignore[union-attr]
    throughput = len(sent) / (last_sent - first_post)
    wanted = {RECIPIENT.format(number=number) for number in range(args.emails)}
    per_recipient = Counter(
        address for email in emails for address in email.to if address in wanted
    )
    duplicates = sum(1 for count in per_recipient.values() if count > 1)
    missing = len(wanted - per_recipient.keys())
    figures = [
        Figure("throughput, first POST to last sent", round(throughput, 1), "emails/s"),
        Figure(
            "due-to-sent latency p50", round(percentile(latencies, 0.5), 3), "s",
            higher_is_better=False,
        ),
        Figure(
            "due-to-sent latency p99", round(percentile(latencies, 0.99), 3), "s",
            higher_is_better=False,
        ),
        Figure(
            "messages sent", len(sent), "messages", target=f"all {args.emails}",
            met=len(sent) == args.emails == len(rows),
        ),
        Figure(
            "SES sends per message", round(sum(per_recipient.values()) / args.emails, 4),
            "sends", target="exactly 1 each", met=duplicates == 0 and missing == 0,
        ),
    ]  # fmt: skip
    scheduling = last_post - first_post
    shares = ", ".join(f"{name} {share:.0%}" for name, share in sorted(cpu.items()))
    notes = [
        f"Scheduling took {scheduling:.1f} s ({args.emails / scheduling:.0f} POST/s from "
        f"{args.concurrency} clients); statuses at the end: {counts}.",
        f"CPU over the run (share of one core; {os.cpu_count()} cores): {shares}; whole "
        f"machine {machine_cpu:.0%} (the rest is other work, this script included).",
        "What limits it: every part shares the cores; the local event source runs one batch of "
        "at most 10 at a time (the template's BatchSize, batching window 0) and calls SES, "
        "DynamoDB (idempotency) and SQS on moto, a Python server in the runner's process; the "
        "relay sends batches of 10 per claim of 50 and is woken by NOTIFY. Latency adds the "
        "queueing behind earlier emails, since all are due at once as they are created.",
    ]
    if duplicates or missing:
        notes.append(f"SES: {duplicates} recipients got more than one email, {missing} none.")
    return BenchResult(
        name=NAME,
        title=f"End to end: {args.emails} emails through the local system",
        command=f"python -m bench.end_to_end --emails {args.emails}",
        method=(
            f"`herald-local run` in a temp folder; {args.emails} emails POSTed by "
            f"{args.concurrency} concurrent clients, each due when created and addressed to "
            "its own recipient; wait until PostgreSQL has every message `sent` or `failed`. "
            "Throughput: emails / (last `finished_at` - first POST). Latency: `finished_at` "
            "(the task runner's SES send time, from its result) - `send_at`. Exactly-once: "
            "moto's SES store holds one email per recipient."
        ),
        figures=figures,
        notes=notes,
        plots=[_plot(rows, first_post, args.results_dir)],
        extra={"counts": counts, "cpu_share": cpu, "latency_mean_s": statistics.fmean(latencies)},
    )


def _plot(rows: list[Delivered], first_post: float, directory: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = "end_to_end_progress.png"
    created = sorted(row.send_at.timestamp() - first_post for row in rows)
    finished = sorted(
        row.finished_at.timestamp() - first_post for row in rows if row.finished_at is not None
    )
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.plot(created, range(1, len(created) + 1), label="scheduled (due)")
    axis.plot(finished, range(1, len(finished) + 1), label="sent")
    axis.set_xlabel("seconds since the first POST")
    axis.set_ylabel("emails")
    axis.set_title("End to end: emails due and sent over time")
    axis.legend()
    figure.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    figure.savefig(directory / name, dpi=110)
    plt.close(figure)
    return name


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.end_to_end", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--emails", type=int, default=1_000, help="emails to schedule")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent POST clients")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for every email to finish"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the result is written"
    )
    args = parser.parse_args(argv)
    if min(args.emails, args.concurrency) < 1 or args.timeout <= 0:
        parser.error("--emails, --concurrency and --timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    budget = 300 + args.emails * 0.5 + args.timeout
    return run_bounded(lambda: run(args), budget)


if __name__ == "__main__":
    sys.exit(main())
