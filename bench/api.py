"""API benchmark: Herald's ``POST /v1/messages`` and ``GET /v1/messages/{id}`` against a
bare baseline doing the same single INSERT / SELECT, on real PostgreSQL, in the same run.

What it measures
    Requests per second, p50 and p99 latency of both endpoints of the real api (its
    middleware, authentication with a real API key, validation, SQLAlchemy session,
    problem details, request log line and metrics), and the same figures for the
    baseline (``bench.support.baseline_app``: a bare ASGI app, one INSERT or SELECT on the
    same ``messages`` table with the same driver, psycopg 3, pooled, and nothing else).

How
    PostgreSQL is started with the project's harness (``herald_local.postgres``) in a temp
    folder with its default durability (fsync and synchronous_commit on: every POST waits
    for a WAL flush), migrated with Herald's migrations; a tenant and an API key are made as
    the ``herald`` CLI makes them. Each app runs under the same uvicorn settings and the
    same number of worker processes (``--workers``, 2 by default: one per core of the
    reference machine); Herald's is built as ``herald api`` builds it in each of its
    ``API_WORKERS`` processes (``ecs_service.api.asgi:create_app``). ``wrk`` (another
    process, keep-alive, concurrency 32) drives each app: POST for a warm-up (discarded)
    then the measured duration, then GET on ids the measured POST phase created. The table
    is emptied and checkpointed before each app. The CPU time of uvicorn (all its
    processes), PostgreSQL (all backends) and wrk is recorded as a share of one core;
    "other" is the rest of the machine's busy time: noise from other work. Finally, unless
    ``--profile-requests 0``, Herald's api is profiled in this process with cProfile, one
    request at a time (``bench.support.profile_api``), to name where its per-request CPU
    goes; that run is not part of the figures.

Run
    .venv/bin/python -m bench.api [--seconds 10] [--workers 2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, text

from bench.result import RESULTS_DIR, BenchResult, Figure, at_least
from bench.support.processes import (
    machine_busy_seconds,
    postmaster_pid,
    run_bounded,
    tail,
    tree_cpu_seconds,
)
from bench.support.profile_api import profile_api
from bench.support.servers import (
    BENCH_RATE_LIMIT,
    UVICORN_OPTIONS,
    Server,
    create_tenant,
    migrate,
    uvicorn_server,
)
from bench.support.wrk import WRK_GRACE_SECONDS, run_wrk, wrk_command

if TYPE_CHECKING:
    import uuid

NAME = "api"
APPS = {
    "herald": ["ecs_service.api.asgi:create_app", "--factory"],
    "baseline": ["bench.support.baseline_app:app"],
}
BODY_VARIANTS = 200
MAX_GET_IDS = 100_000
P99_TARGET_MS = 50.0
RATE_FACTOR = 0.5
# The batch run: full batches (ecs_service.messages.MAX_BATCH_MESSAGES), this many at once.
BATCH_SIZE = 500
BATCH_CONCURRENCY = 4
BATCH_TARGET_PER_SECOND = 5_000
# The overload run: this many connections; goodput must stay >= this share of the c=32 rate.
OVERLOAD_CONCURRENCY = 256
OVERLOAD_GOODPUT_FACTOR = 0.8
# POST /v1/messages counting each answer's status: 201 is goodput, 429 and 503 are the
# refusals an overloaded api may answer, anything else is wrong. One wrk thread.
OVERLOAD_SCRIPT = """
local requests, position, threads = {}, 1, {}
created, refused, wrong = 0, 0, 0
function setup(thread)
  threads[#threads + 1] = thread
end
function init(args)
  local headers = { ["Authorization"] = "Bearer " .. args[2],
                    ["Content-Type"] = "application/json" }
  for line in io.lines(args[1]) do
    if line ~= "" then
      requests[#requests + 1] = wrk.format("POST", "/v1/messages", headers, line)
    end
  end
end
function request()
  local r = requests[position]
  position = position % #requests + 1
  return r
end
function response(status, _, _)
  if status == 201 then created = created + 1
  elseif status == 429 or status == 503 then refused = refused + 1
  else wrong = wrong + 1 end
end
function done(summary, latency, _)
  local e = summary.errors
  -- done() runs in the main Lua state: the counts live in each thread's.
  created, refused, wrong = 0, 0, 0
  for _, thread in ipairs(threads) do
    created = created + thread:get("created")
    refused = refused + thread:get("refused")
    wrong = wrong + thread:get("wrong")
  end
  io.write(string.format('WRK_RESULT {"requests": %d, "duration_us": %d, "connect": %d, '
    .. '"read": %d, "write": %d, "status": 0, "timeout": %d, "unexpected": 0, "p50_us": %d, '
    .. '"p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, "created": %d, '
    .. '"refused": %d, "wrong": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, created, refused, wrong))
end
"""


@dataclass(frozen=True)
class Measurement:
    """One measured wrk run against one endpoint of one app."""

    app: str
    endpoint: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    server_cpu: float  # CPU seconds per wall second (1.0 = one core busy)
    postgres_cpu: float
    wrk_cpu: float
    other_cpu: float  # the rest of the machine (other users' work, steal)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def server_ms_per_request(self) -> float:
        """uvicorn's CPU time per request: the app's cost, less sensitive to noise."""
        return 1e3 * self.server_cpu / self.rate if self.rate else 0.0


def write_bodies(path: Path) -> None:
    """``BODY_VARIANTS`` POST bodies (one JSON per line), due in a month: nothing relays them."""
    generator = random.Random(20_240_601)
    send_at = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    text_body = (
        "Hello {name},\n\nYour order {order} has shipped and should arrive within three "
        "working days. You can follow the parcel from your account page at any time. If "
        "anything is wrong with it, reply to this email and we will sort it out.\n\nThanks, "
        "the Example Shop team"
    )
    lines = []
    for number in range(BODY_VARIANTS):
        name = f"customer{number:04d}"
        body = {
            "to": [f"{name}@mail.example.org"],
            "subject": f"Your order {100_000 + number} has shipped",
            "text": text_body.format(name=name, order=100_000 + number),
            "send_at": (send_at + timedelta(minutes=generator.randrange(600))).isoformat(),
        }
        lines.append(json.dumps(body, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n")


def reset_table(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("TRUNCATE messages CASCADE"))
        connection.execute(text("CHECKPOINT"))


def prepare_reads(engine: Engine, ids_path: Path) -> int:
    """Write ids of rows the POST phase created; vacuum, analyze and checkpoint."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        ids = connection.execute(
            text("SELECT id FROM messages ORDER BY random() LIMIT :limit"), {"limit": MAX_GET_IDS}
        ).scalars()
        lines = [str(row_id) for row_id in ids]
        connection.execute(text("VACUUM ANALYZE messages"))
        connection.execute(text("CHECKPOINT"))
    ids_path.write_text("\n".join(lines) + "\n")
    return len(lines)


def measure(
    app: str, endpoint: str, command: list[str], seconds: float, server: Server, postmaster: int
) -> Measurement:
    """Run wrk and attribute CPU time to uvicorn, PostgreSQL and wrk."""
    machine_before = machine_busy_seconds()
    server_before = tree_cpu_seconds(server.pid)
    postgres_before = tree_cpu_seconds(postmaster)
    run = run_wrk(command, seconds)
    server_cpu = tree_cpu_seconds(server.pid) - server_before
    postgres_cpu = tree_cpu_seconds(postmaster) - postgres_before
    machine = machine_busy_seconds() - machine_before
    other = max(0.0, machine - server_cpu - postgres_cpu - run.cpu_seconds)
    result = run.result
    return Measurement(
        app=app,
        endpoint=endpoint,
        requests=int(result["requests"]),
        seconds=result["duration_us"] / 1e6,
        errors=run.errors,
        p50_ms=result["p50_us"] / 1e3,
        p90_ms=result["p90_us"] / 1e3,
        p99_ms=result["p99_us"] / 1e3,
        server_cpu=server_cpu / run.wall_seconds,
        postgres_cpu=postgres_cpu / run.wall_seconds,
        wrk_cpu=run.cpu_seconds / run.wall_seconds,
        other_cpu=other / run.wall_seconds,
    )


@dataclass(frozen=True)
class Setup:
    args: argparse.Namespace
    database_url: str
    engine: Engine
    postmaster: int
    work_dir: Path
    bodies: Path
    tenant_id: uuid.UUID
    api_key: str

    def environment(self, app: str) -> dict[str, str]:
        pool = str(self.args.pool_size)
        overflow = str(self.args.max_overflow)
        if app == "baseline":
            return {
                "HERALD_BENCH_DATABASE_URL": self.database_url.replace("+psycopg", ""),
                "HERALD_BENCH_TENANT_ID": str(self.tenant_id),
                "HERALD_BENCH_POOL_SIZE": pool,
                "HERALD_BENCH_POOL_MAX": str(self.args.pool_size + self.args.max_overflow),
            }
        return {
            "DATABASE_URL": self.database_url,
            "DATABASE_POOL_SIZE": pool,
            "DATABASE_MAX_OVERFLOW": overflow,
            "SENDER_EMAIL": "herald@example.com",
            **BENCH_RATE_LIMIT,
            "POWERTOOLS_SERVICE_NAME": "herald-api",
            "POWERTOOLS_METRICS_NAMESPACE": "HeraldBench",
        }


@dataclass
class Extra:
    """The batch and overload runs (Herald's server, and the bare batch INSERT)."""

    batch: BatchMeasurement | None = None
    bare_batch: BatchMeasurement | None = None
    overload: OverloadMeasurement | None = None


def benchmark_app(app: str, setup: Setup, extra: Extra | None = None) -> list[Measurement]:
    args = setup.args
    reset_table(setup.engine)
    log_path = setup.work_dir / f"uvicorn-{app}.log"
    results = []
    with uvicorn_server(
        APPS[app],
        port=_free_port(),
        workers=args.workers,
        environment=setup.environment(app),
        log_path=log_path,
        api_key=setup.api_key,
    ) as server:
        for endpoint, mode in (("POST", "post"), ("GET", "get")):
            data = setup.bodies
            if mode == "get":
                data = setup.work_dir / f"ids-{app}.txt"
                print(f"  {app}: {prepare_reads(setup.engine, data)} ids for GET", flush=True)

            def command(seconds: float, mode: str = mode, data: Path = data) -> list[str]:
                return wrk_command(
                    server.url, mode, data, setup.api_key, seconds=seconds,
                    concurrency=args.concurrency, threads=args.wrk_threads,
                )  # fmt: skip

            print(f"  {app} {endpoint}: warm-up {args.warmup:g}s", flush=True)
            run_wrk(command(args.warmup), args.warmup)
            if mode == "post":
                # GETs read rows of the measured POST phase only.
                reset_table(setup.engine)
            print(f"  {app} {endpoint}: measuring {args.seconds:g}s", flush=True)
            measured = measure(
                app, endpoint, command(args.seconds), args.seconds, server, setup.postmaster
            )
            results.append(measured)
            print(f"    {_line(measured)}", flush=True)
        if extra is not None:
            reset_table(setup.engine)
            print(f"  {app} batch: {BATCH_SIZE}-message batches, c={BATCH_CONCURRENCY}", flush=True)
            extra.batch = measure_batches(server, setup)
            print(f"    {_batch_line(extra.batch)}", flush=True)
            reset_table(setup.engine)
            extra.bare_batch = measure_bare_batches(setup)
            print(f"    {_batch_line(extra.bare_batch)}", flush=True)
            reset_table(setup.engine)
            print(f"  {app} overload: POST at c={OVERLOAD_CONCURRENCY}", flush=True)
            extra.overload = measure_overload(server, setup)
            o = extra.overload
            print(
                f"    goodput {o.goodput:.0f} created/s, refused (429/503) {o.refused}, "
                f"other {o.wrong}, socket errors {o.socket_errors}, p99 {o.p99_ms:.1f} ms",
                flush=True,
            )
    return results


def _batch_line(m: BatchMeasurement) -> str:
    return (
        f"{m.app:<8} batch {m.rate:>8.0f} messages/s  p50 {m.p50_ms:>7.1f} ms  "
        f"p99 {m.p99_ms:>7.1f} ms per batch  errors {m.errors}"
    )


@dataclass(frozen=True)
class BatchMeasurement:
    """Messages/s scheduled in full batches: Herald's POST /v1/messages/batch, or the bare
    multi-row INSERT of the same rows."""

    app: str
    messages: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def batch_bodies(setup: Setup) -> list[list[dict[str, object]]]:
    """Batches of ``BATCH_SIZE`` items, cycling through the POST bodies."""
    bodies = [json.loads(line) for line in setup.bodies.read_text().splitlines() if line]
    return [
        [bodies[(start + i) % len(bodies)] for i in range(BATCH_SIZE)]
        for start in range(0, len(bodies), 7)
    ]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def measure_batches(server: Server, setup: Setup) -> BatchMeasurement:
    """``BATCH_CONCURRENCY`` clients posting full batches for ``--seconds``."""
    import asyncio
    import time

    import httpx

    payloads = [json.dumps({"messages": items}).encode() for items in batch_bodies(setup)]
    headers = {"Authorization": f"Bearer {setup.api_key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    created = errors = 0

    async def client(number: int, until: float) -> None:
        nonlocal created, errors
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            sent = number
            while time.monotonic() < until:
                started = time.monotonic()
                answer = await http.post(
                    "/v1/messages/batch",
                    content=payloads[sent % len(payloads)],
                    headers=headers,
                )
                latencies.append(time.monotonic() - started)
                sent += BATCH_CONCURRENCY
                if answer.status_code == 200 and answer.json()["created"] == BATCH_SIZE:
                    created += BATCH_SIZE
                else:
                    errors += 1

    async def main(seconds: float) -> float:
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(*(client(n, until) for n in range(BATCH_CONCURRENCY)))
        return time.monotonic() - started

    asyncio.run(main(min(3.0, setup.args.warmup)))  # warm-up, discarded
    latencies.clear()
    created = errors = 0
    wall = asyncio.run(main(setup.args.seconds))
    return BatchMeasurement(
        "herald", created, wall, errors,
        1e3 * _percentile(latencies, 0.5), 1e3 * _percentile(latencies, 0.99),
    )  # fmt: skip


def measure_bare_batches(setup: Setup) -> BatchMeasurement:
    """The baseline: the same rows, ``BATCH_SIZE`` per multi-row INSERT and commit, from
    ``BATCH_CONCURRENCY`` connections (psycopg 3), nothing else."""
    import threading
    import time
    import uuid as uuid_module

    from psycopg.types.json import Jsonb

    url = setup.database_url.replace("+psycopg", "")
    batches = batch_bodies(setup)
    placeholders = ", ".join(["(%s, %s, 'scheduled', %s, %s)"] * BATCH_SIZE)
    statement = (
        f"INSERT INTO messages (id, tenant_id, status, payload, send_at) VALUES {placeholders} "
        "RETURNING id, created_at"
    )
    latencies: list[float] = []
    counts = [0] * BATCH_CONCURRENCY
    lock = threading.Lock()

    def rows(items: list[dict[str, object]]) -> list[object]:
        values: list[object] = []
        for body in items:
            payload = {
                "sender": "herald@example.com", "to": body["to"], "cc": [], "bcc": [],
                "reply_to": [], "subject": body["subject"], "text": body["text"], "html": None,
            }  # fmt: skip
            values += [uuid_module.uuid4(), setup.tenant_id, Jsonb(payload), body["send_at"]]
        return values

    def connection_loop(number: int, until: float) -> None:
        import psycopg

        with psycopg.connect(url) as connection:
            sent = number
            while time.monotonic() < until:
                started = time.monotonic()
                with connection.transaction():
                    connection.execute(statement, rows(batches[sent % len(batches)])).fetchall()
                with lock:
                    latencies.append(time.monotonic() - started)
                counts[number] += BATCH_SIZE
                sent += BATCH_CONCURRENCY

    def run(seconds: float) -> float:
        started = time.monotonic()
        threads = [
            threading.Thread(target=connection_loop, args=(n, started + seconds))
            for n in range(BATCH_CONCURRENCY)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.monotonic() - started

    run(min(3.0, setup.args.warmup))
    latencies.clear()
    counts[:] = [0] * BATCH_CONCURRENCY
    wall = run(setup.args.seconds)
    return BatchMeasurement(
        "baseline", sum(counts), wall, 0,
        1e3 * _percentile(latencies, 0.5), 1e3 * _percentile(latencies, 0.99),
    )  # fmt: skip


@dataclass(frozen=True)
class OverloadMeasurement:
    """POST /v1/messages at ``OVERLOAD_CONCURRENCY`` connections: what was stored, what
    was refused as it may be (429, 503), anything else."""

    created: int
    refused: int
    wrong: int
    socket_errors: int
    seconds: float
    p99_ms: float

    @property
    def goodput(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0


def measure_overload(server: Server, setup: Setup) -> OverloadMeasurement:
    script = setup.work_dir / "overload.lua"
    script.write_text(OVERLOAD_SCRIPT)
    seconds = max(1, round(setup.args.seconds))
    command = [
        "wrk", "-t1", f"-c{OVERLOAD_CONCURRENCY}", f"-d{seconds}s", "--timeout", "5s",
        "-s", str(script), server.url, "--", str(setup.bodies), setup.api_key,
    ]  # fmt: skip
    run = run_wrk(command, seconds)
    result = run.result
    return OverloadMeasurement(
        created=int(result["created"]),
        refused=int(result["refused"]),
        wrong=int(result["wrong"]),
        socket_errors=run.errors,
        seconds=result["duration_us"] / 1e6,
        p99_ms=result["p99_us"] / 1e3,
    )


def profile_herald(setup: Setup) -> dict[str, object]:
    """Herald's api under cProfile, in this process (``bench.support.profile_api``)."""
    from ecs_service.api.app import create_app
    from ecs_service.settings import ApiSettings, DatabaseSettings

    args = setup.args
    print(f"  herald: profiling {args.profile_requests} requests per endpoint", flush=True)
    app = create_app(
        ApiSettings.model_validate({"SENDER_EMAIL": "herald@example.com", **BENCH_RATE_LIMIT}),
        DatabaseSettings(url=setup.database_url, pool_size=args.pool_size),
    )
    bodies = setup.bodies.read_text().splitlines()
    read = setup.work_dir / "ids-herald.txt"
    # --profile-only: no ids written; the GETs read what the profiled POSTs created.
    ids = read.read_text().split() if read.exists() else []
    # The api's log lines go to /dev/null inside profile_api.
    return profile_api(app, setup.api_key, bodies, ids, args.profile_requests)


def _free_port() -> int:
    from herald_local.postgres import free_port

    return free_port()


def _line(m: Measurement) -> str:
    return (
        f"{m.app:<8} {m.endpoint:<4} {m.rate:>7.0f} req/s  p50 {m.p50_ms:>7.2f} ms  "
        f"p99 {m.p99_ms:>7.2f} ms  errors {m.errors}  CPU: uvicorn {m.server_cpu:.0%} "
        f"postgres {m.postgres_cpu:.0%} wrk {m.wrk_cpu:.0%} other {m.other_cpu:.0%}  "
        f"uvicorn {m.server_ms_per_request:.2f} ms CPU/req"
    )


def build_result(
    args: argparse.Namespace,
    results: list[Measurement],
    profiles: dict[str, object],
    server_settings: str,
    extra: Extra | None = None,
) -> BenchResult:
    by = {(m.app, m.endpoint): m for m in results}
    figures: list[Figure] = []
    notes: list[str] = []
    if extra is not None and extra.batch is not None and extra.bare_batch is not None:
        batch, bare = extra.batch, extra.bare_batch
        figures.append(
            Figure(
                f"batch messages/s ({BATCH_SIZE} per request, c={BATCH_CONCURRENCY})",
                round(batch.rate), "messages/s", baseline=round(bare.rate),
                baseline_name="bare multi-row INSERT of the same rows",
                target=f">= {BATCH_TARGET_PER_SECOND:,} messages/s",
                met=batch.errors == 0 and batch.rate >= BATCH_TARGET_PER_SECOND,
            )
        )  # fmt: skip
    if extra is not None and extra.overload is not None:
        overload, post = extra.overload, by[("herald", "POST")]
        figures.append(
            Figure(
                f"POST goodput at c={OVERLOAD_CONCURRENCY}", round(overload.goodput, 1),
                "created/s", baseline=round(post.rate, 1),
                baseline_name=f"Herald's POST at c={args.concurrency}",
                target=f">= {OVERLOAD_GOODPUT_FACTOR} x baseline, only 429/503 refused",
                met=overload.wrong == 0 and overload.socket_errors == 0
                and at_least(overload.goodput, post.rate, OVERLOAD_GOODPUT_FACTOR),
            )
        )  # fmt: skip
        notes.append(
            f"Overload (c={OVERLOAD_CONCURRENCY}): {overload.created} created, "
            f"{overload.refused} refused with 429/503, {overload.wrong} other answers, "
            f"{overload.socket_errors} socket failures; p99 {overload.p99_ms:.1f} ms."
        )
    for endpoint in ("POST", "GET"):
        herald, baseline = by[("herald", endpoint)], by[("baseline", endpoint)]
        clean = herald.errors == 0
        figures += [
            Figure(
                f"{endpoint} requests/s", round(herald.rate, 1), "req/s",
                baseline=round(baseline.rate, 1), baseline_name="bare INSERT/SELECT app",
                target=f">= {RATE_FACTOR} x baseline",
                met=clean and at_least(herald.rate, baseline.rate, RATE_FACTOR),
            ),
            Figure(
                f"{endpoint} p50 latency", round(herald.p50_ms, 2), "ms",
                baseline=round(baseline.p50_ms, 2), baseline_name="bare INSERT/SELECT app",
                higher_is_better=False,
            ),
            Figure(
                f"{endpoint} p99 latency", round(herald.p99_ms, 2), "ms",
                baseline=round(baseline.p99_ms, 2), baseline_name="bare INSERT/SELECT app",
                target=f"< {P99_TARGET_MS:g} ms", met=clean and herald.p99_ms < P99_TARGET_MS,
                higher_is_better=False,
            ),
            Figure(
                f"{endpoint} uvicorn CPU per request", round(herald.server_ms_per_request, 3),
                "ms", baseline=round(baseline.server_ms_per_request, 3),
                baseline_name="bare INSERT/SELECT app", higher_is_better=False,
            ),
        ]  # fmt: skip
        for m in (herald, baseline):
            if m.errors:
                notes.append(f"{m.app} {endpoint}: {m.errors} errors (non-2xx or socket errors).")
        busy = herald.server_cpu + herald.postgres_cpu + herald.wrk_cpu + herald.other_cpu
        if busy > 0.85 * (os.cpu_count() or 1):
            notes.append(
                f"{endpoint}: the machine was CPU-bound during Herald's run "
                f"(uvicorn {herald.server_cpu:.0%}, PostgreSQL {herald.postgres_cpu:.0%}, "
                f"wrk {herald.wrk_cpu:.0%}, other {herald.other_cpu:.0%} of one core, "
                f"{os.cpu_count()} cores): requests/s and p99 are bounded by Herald's CPU cost "
                f"per request ({herald.server_ms_per_request:.2f} ms vs the baseline's "
                f"{baseline.server_ms_per_request:.2f} ms) sharing the cores with PostgreSQL."
            )
        if herald.other_cpu > 0.2:
            notes.append(
                f"{endpoint}: other work took {herald.other_cpu:.0%} of a core during Herald's "
                "run: a noisy machine; rerun on a quiet one."
            )
    for endpoint, found in profiles.items():
        profile: dict[str, Any] = found  # type: ignore[assignment]
        steps = ", ".join(
            f"{name} {ms:.2f}" for name, ms in profile["steps_ms_per_request"].items()
        )
        shares = ", ".join(
            f"{name} {share:.0%}" for name, share in profile["self_share_by_package"].items()
        )
        cpu = profile.get("cpu_ms_per_request_unprofiled")
        unprofiled = "" if cpu is None else f"{cpu:.2f} ms CPU/request unprofiled, "
        notes.append(
            f"{endpoint} profile (cProfile, one request at a time into the ASGI app, threads "
            f"inline, no HTTP server or client; {unprofiled}"
            f"{profile['profiled_ms_per_request']:.2f} ms CPU/request profiled, "
            f"{profile['statements_per_request']:g} SQL statements + "
            f"{profile['commits_per_request']:g} commits per request): CPU ms per request "
            f"by step (inclusive, steps overlap): {steps}. Self time by package: {shares}."
        )
    method = (
        "Herald's api (`herald api`'s app, real API-key auth, Alembic schema) and a bare ASGI "
        "baseline doing one INSERT / SELECT on the same `messages` table with psycopg 3 "
        f"(pooled), each under uvicorn with `--workers {args.workers}` (uvloop, httptools, no "
        "access log), against PostgreSQL with default durability "
        f"({server_settings}). Pool per process: {args.pool_size} + {args.max_overflow} "
        f"overflow for both. Load: `wrk -t{args.wrk_threads} -c{args.concurrency}` keep-alive, "
        f"{args.warmup:g} s warm-up then {args.seconds:g} s measured per endpoint; POST "
        f"cycles through {BODY_VARIANTS} ~500-byte bodies, GET draws ids the POST phase "
        "created. Any status other than 201/200 is an error. CPU of uvicorn, PostgreSQL and "
        "wrk is from /proc; the profile comes from a separate cProfile run, one request at a "
        "time in process."
    )
    return BenchResult(
        name=NAME,
        title="API: POST and GET /v1/messages against a bare INSERT/SELECT",
        command=f"python -m bench.api --seconds {args.seconds:g} --workers {args.workers}",
        method=method,
        figures=figures,
        notes=notes,
        plots=[_plot(results, args.results_dir)],
        extra={
            "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
            "uvicorn": " ".join(UVICORN_OPTIONS),
            "measurements": [asdict(m) | {"rate": m.rate} for m in results],
            "profiles": profiles,
            "batch": asdict(extra.batch) if extra and extra.batch else None,
            "bare_batch": asdict(extra.bare_batch) if extra and extra.bare_batch else None,
            "overload": asdict(extra.overload) if extra and extra.overload else None,
        },
    )


def _plot(results: list[Measurement], directory: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = "api_latency.png"
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, endpoint in zip(axes, ("POST", "GET"), strict=True):
        for offset, app in enumerate(("herald", "baseline")):
            found = [m for m in results if m.app == app and m.endpoint == endpoint]
            if found:
                m = found[0]
                positions = [i + offset * 0.4 for i in range(3)]
                axis.bar(positions, [m.p50_ms, m.p90_ms, m.p99_ms], width=0.4, label=app)
        axis.set_xticks([i + 0.2 for i in range(3)], ["p50", "p90", "p99"])
        axis.axhline(P99_TARGET_MS, color="red", linestyle="--", linewidth=1, label="p99 target")
        axis.set_title(f"{endpoint} /v1/messages latency")
        axis.set_ylabel("ms")
        axis.legend(fontsize=8)
    figure.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    figure.savefig(directory / name, dpi=110)
    plt.close(figure)
    return name


def run(args: argparse.Namespace) -> None:
    from herald_local.postgres import LocalPostgres

    with contextlib.ExitStack() as cleanup:
        work_dir = Path(tempfile.mkdtemp(prefix="herald-bench-api-"))
        cleanup.callback(shutil.rmtree, work_dir, ignore_errors=True)
        postgres = LocalPostgres(data_dir=work_dir / "pg")
        cleanup.callback(postgres.stop)
        postgres.start()
        migrate(postgres.url())
        tenant = create_tenant(postgres.url(), "bench")
        engine = create_engine(postgres.url(), pool_size=1, max_overflow=0)
        cleanup.callback(engine.dispose)
        bodies = work_dir / "bodies.jsonl"
        write_bodies(bodies)
        names = ["fsync", "synchronous_commit", "shared_buffers", "max_wal_size"]
        with engine.connect() as connection:
            settings = ", ".join(
                f"{name}={connection.execute(text(f'SHOW {name}')).scalar_one()}" for name in names
            )
        setup = Setup(
            args, postgres.url(), engine, postmaster_pid(postgres.pgdata), work_dir, bodies,
            tenant.id, tenant.api_key,
        )  # fmt: skip
        print(f"postgres: {settings}; uvicorn --workers {args.workers}", flush=True)
        results: list[Measurement] = []
        extra = Extra()
        if args.profile_only:
            for endpoint, profile in profile_herald(setup).items():
                print(f"{endpoint}: {json.dumps(profile, indent=1)}", flush=True)
            return
        for app in ("baseline", "herald"):
            print(f"{app}:", flush=True)
            results += benchmark_app(app, setup, extra if app == "herald" else None)
            # Herald logs a line per request; show the rest: warnings, errors, uvicorn's own.
            lines = tail(work_dir / f"uvicorn-{app}.log", 20_000).splitlines()[1:]
            # (EMF metric lines, '{"_aws":…', are neither.)
            others = [line for line in lines if '"level":"INFO"' not in line]
            if shown := [line for line in others if not line.startswith('{"_aws"')][-15:]:
                print(f"  {app}: uvicorn logged:\n" + "\n".join(shown), flush=True)
        if args.profile_requests > 0:
            # The batch and overload runs emptied the table the GET ids came from: read
            # ids of the rows the overload run left.
            prepare_reads(engine, work_dir / "ids-herald.txt")
        profiles = profile_herald(setup) if args.profile_requests > 0 else {}
        result = build_result(args, results, profiles, settings, extra)
        print(f"\n{result.title}")
        for figure in result.figures:
            ratio = f"x{figure.ratio:.2f}" if figure.ratio is not None else ""
            print(
                f"  {figure.name:<30} {figure.value:>9g} {figure.unit:<5} baseline "
                f"{figure.baseline:>9g} {ratio:>6}  {figure.target or ''} "
                f"{'' if figure.met is None else 'met' if figure.met else 'NOT met'}"
            )
        for note in result.notes:
            print(f"  - {note}")
        print(f"written: {result.write(args.results_dir)}")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per run")
    parser.add_argument("--concurrency", type=int, default=32, help="open connections (wrk -c)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (wrk -t)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    # 32 + 5: one tenant may hold ~3/4 of the api's admission slots (pool + overflow - 1),
    # so every wrk connection is admitted even when the kernel hands most of them to one
    # uvicorn process, and the bench measures speed, not load shedding (503s).
    parser.add_argument("--pool-size", type=int, default=32, help="pool per process (api's)")
    parser.add_argument("--max-overflow", type=int, default=5, help="pool overflow (api's)")
    parser.add_argument(
        "--profile-requests", type=int, default=300, help="profiled requests per endpoint (0: none)"
    )
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="only the cProfile run (CPU per request, less sensitive to a shared machine)",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the result is written"
    )
    args = parser.parse_args(argv)
    if min(args.seconds, args.warmup, args.concurrency, args.workers) < 1:
        parser.error("--seconds, --warmup (whole seconds: wrk's), --concurrency, --workers >= 1")
    args.seconds, args.warmup = round(args.seconds), round(args.warmup)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    per_run = args.warmup + args.seconds + 2 * WRK_GRACE_SECONDS
    # Herald's batch (2 runs), the bare batch (2) and the overload run come on top.
    budget = 240 + 2 * (120 + 2 * per_run) + 3 * per_run + 120 + args.profile_requests * 0.2
    return run_bounded(lambda: run(args), budget)


if __name__ == "__main__":
    sys.exit(main())
