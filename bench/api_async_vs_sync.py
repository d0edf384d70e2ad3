"""Sync or async database access for Herald's api: a measurement, not a guess.

What it measures
    Two minimal FastAPI apps over the same PostgreSQL table (shaped like Herald's messages
    table), identical but for the database access style (``bench/async_vs_sync/``):

    - ``sync``:  ``def`` endpoints, SQLAlchemy 2 sync engine (``postgresql+psycopg``),
      Session per request; FastAPI runs them in anyio's worker threads (40 by default);
    - ``async``: ``async def`` endpoints, ``create_async_engine`` with the same psycopg 3
      driver, AsyncSession per request; everything on the event loop.

    Both: pool of 10 connections + 10 overflow; ``POST /items`` validates a ~500-byte
    email-like JSON body with pydantic, INSERTs one row, commits and returns it;
    ``GET /items/{id}`` SELECTs one row by primary key (404 if missing).

How
    PostgreSQL is started with the project's harness (``herald_local.postgres``) in a temp
    folder, with the server's default durability settings (fsync and synchronous_commit on:
    every POST waits for a WAL flush to disk, as on a real server). Each app runs alone
    under uvicorn (one process, ``--workers 1``, uvloop + httptools, no access log) on a
    loopback port. ``wrk`` (one thread, keep-alive connections) drives it at a fixed
    concurrency: a warm-up (discarded), then the measured run, POST first, then GET on ids
    of rows created by that app's POST phase. The table is emptied and a CHECKPOINT taken
    before each app, so both start alike. The CPU time of uvicorn, PostgreSQL and wrk over
    each measured run is reported (as % of one core; the machine's total is cores x 100%),
    which shows what saturates and that the load generator is not the bottleneck; "other
    CPU" is the rest of the machine's busy time (other work, steal): noise, when high.
    ``--rounds N`` repeats sync and async on the same server, alternating their order,
    and adds a table of medians.

Run (from the repository root; needs ``wrk``: ``apt-get install -y wrk``)
    .venv/bin/python bench/api_async_vs_sync.py [--seconds 10] [--concurrency 32] [--rounds 1]

Everything is bounded in time (an overall deadline, per-step timeouts) and cleaned up
(servers stopped, temp folder removed) on success, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import httpx
from sqlalchemy import create_engine, text

from async_vs_sync.common import DATABASE_URL_VARIABLE, Base

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

    from sqlalchemy import Engine

    from herald_local.postgres import LocalPostgres

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "async_vs_sync" / "wrk_script.lua"
APPS = {"sync": "async_vs_sync.sync_app:app", "async": "async_vs_sync.async_app:app"}
UVICORN_OPTIONS = [
    "--workers", "1", "--loop", "uvloop", "--http", "httptools",
    "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "5",
]  # fmt: skip
WRK_TIMEOUT = "5s"  # a request slower than this counts as a timeout error
SERVER_START_SECONDS = 30.0
PROCESS_STOP_SECONDS = 10.0
BODY_VARIANTS = 200
TENANTS = 20
MAX_GET_IDS = 100_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measurement:
    """One measured wrk run against one endpoint of one app."""

    app: str
    endpoint: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    server_cpu: float  # CPU seconds per wall second (1.0 = one core busy)
    postgres_cpu: float
    wrk_cpu: float
    other_cpu: float  # everything else on the machine (other users' work, steal)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def server_ms_per_request(self) -> float:
        """uvicorn's CPU time per request: the cost of the style, less sensitive to noise."""
        return 1e3 * self.server_cpu / self.rate


# --- processes -----------------------------------------------------------------------------


def _cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (plus its reaped children's); 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICKS


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs; steal included), from boot."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _postgres_cpu_seconds(postmaster_pid: int) -> float:
    """CPU seconds of the postmaster and all its processes (backends, WAL writer, ...)."""
    total = _cpu_seconds(postmaster_pid, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == postmaster_pid:
                total += _cpu_seconds(int(entry.name))
    return total


def _stop(process: subprocess.Popen[Any], *, group: bool) -> None:
    """Stop a child we started (and its process group if it leads one): TERM, then KILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
    try:
        process.wait(timeout=PROCESS_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        process.wait(timeout=PROCESS_STOP_SECONDS)


@dataclass(frozen=True)
class Server:
    pid: int
    port: int


@contextlib.contextmanager
def running_server(app: str, database_url: str, port: int, log_path: Path) -> Iterator[Server]:
    """Run ``app`` under uvicorn in its own process (group) until the block ends."""
    command = [
        sys.executable, "-m", "uvicorn", APPS[app], "--app-dir", str(BENCH_DIR),
        "--host", "127.0.0.1", "--port", str(port), *UVICORN_OPTIONS,
    ]  # fmt: skip
    environment = {**os.environ, DATABASE_URL_VARIABLE: database_url}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_DIR,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to us; we stop it in order
        )
    try:
        _wait_until_serving(process, port, log_path)
        yield Server(pid=process.pid, port=port)
    finally:
        _stop(process, group=True)


def _wait_until_serving(process: subprocess.Popen[Any], port: int, log_path: Path) -> None:
    """Wait until the app answers (a GET of a missing id: 404, through the database)."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    url = f"http://127.0.0.1:{port}/items/{uuid.UUID(int=0)}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited ({process.returncode}):\n{_tail(log_path)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2.0).status_code == 404:
                return
        time.sleep(0.1)
    raise TimeoutError(f"uvicorn not serving after {SERVER_START_SECONDS:.0f}s:\n{_tail(log_path)}")


def _tail(path: Path, characters: int = 3_000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-characters:]
    return ""


# --- load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkRun:
    result: dict[str, float]
    cpu_seconds: float
    wall_seconds: float


def wrk_command(
    url: str, mode: str, data: Path, seconds: float, args: argparse.Namespace
) -> list[str]:
    return [
        "wrk", f"-t{args.wrk_threads}", f"-c{args.concurrency}", f"-d{seconds:g}s",
        "--timeout", WRK_TIMEOUT, "-s", str(WRK_SCRIPT), url, "--", mode, str(data),
    ]  # fmt: skip


def run_wrk(command: list[str], seconds: float) -> WrkRun:
    """Run wrk to completion; its result line and its own CPU time (from wait4's rusage)."""
    started = time.monotonic()
    deadline = started + seconds + 30.0
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"wrk still running after {seconds + 30:.0f}s")
            time.sleep(0.02)
    finally:
        if process.returncode is None:
            _stop(process, group=False)
    wall = time.monotonic() - started
    assert process.stdout is not None and process.stderr is not None
    output = process.stdout.read().decode(errors="replace")
    errors = process.stderr.read().decode(errors="replace")
    process.stdout.close()
    process.stderr.close()
    for line in output.splitlines():
        if line.startswith("WRK_RESULT "):
            result: dict[str, float] = json.loads(line.removeprefix("WRK_RESULT "))
            return WrkRun(result, usage.ru_utime + usage.ru_stime, wall)
    raise RuntimeError(f"wrk failed ({process.returncode}): {errors.strip()}\n{output}")


def measure(
    app: str,
    endpoint: str,
    command: list[str],
    seconds: float,
    server: Server,
    postmaster_pid: int,
) -> Measurement:
    """Run ``command`` (wrk) and attribute CPU time to uvicorn, PostgreSQL and wrk."""
    machine_before = _machine_busy_seconds()
    server_before = _cpu_seconds(server.pid)
    postgres_before = _postgres_cpu_seconds(postmaster_pid)
    run = run_wrk(command, seconds)
    server_cpu = _cpu_seconds(server.pid) - server_before
    postgres_cpu = _postgres_cpu_seconds(postmaster_pid) - postgres_before
    machine = _machine_busy_seconds() - machine_before
    other_cpu = max(0.0, machine - server_cpu - postgres_cpu - run.cpu_seconds)
    result = run.result
    errors = sum(int(result[kind]) for kind in ("connect", "read", "write", "status", "timeout"))
    return Measurement(
        app=app,
        endpoint=endpoint,
        requests=int(result["requests"]),
        seconds=result["duration_us"] / 1e6,
        errors=errors,
        p50_ms=result["p50_us"] / 1e3,
        p99_ms=result["p99_us"] / 1e3,
        server_cpu=server_cpu / run.wall_seconds,
        postgres_cpu=postgres_cpu / run.wall_seconds,
        wrk_cpu=run.cpu_seconds / run.wall_seconds,
        other_cpu=other_cpu / run.wall_seconds,
    )


def write_bodies(path: Path) -> float:
    """``BODY_VARIANTS`` POST bodies, one JSON per line; returns their mean size in bytes."""
    generator = random.Random(20_240_601)
    tenants = [uuid.UUID(int=generator.getrandbits(128), version=4) for _ in range(TENANTS)]
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
            "tenant_id": str(generator.choice(tenants)),
            "send_at": f"2030-01-{1 + number % 28:02d}T09:{number % 60:02d}:00Z",
            "sender": "orders@shop.example.com",
            "to": [f"{name}@mail.example.org"],
            "subject": f"Your order {100_000 + number} has shipped",
            "text": text_body.format(name=name, order=100_000 + number),
        }
        lines.append(json.dumps(body, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n")
    return sum(len(line) for line in lines) / len(lines)


# --- database --------------------------------------------------------------------------------


def reset_table(engine: Engine) -> None:
    """Empty the table and checkpoint, so each app starts from the same state."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("TRUNCATE items"))
        connection.execute(text("CHECKPOINT"))


def prepare_reads(engine: Engine, ids_path: Path) -> int:
    """Write ids of the rows the POST phase created; vacuum, analyze and checkpoint."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        ids = connection.execute(
            text("SELECT id FROM items ORDER BY random() LIMIT :limit"), {"limit": MAX_GET_IDS}
        ).scalars()
        lines = [str(row_id) for row_id in ids]
        connection.execute(text("VACUUM ANALYZE items"))
        connection.execute(text("CHECKPOINT"))
    ids_path.write_text("\n".join(lines) + "\n")
    return len(lines)


def server_settings(engine: Engine) -> str:
    names = ["server_version", "fsync", "synchronous_commit", "full_page_writes",
             "wal_sync_method", "shared_buffers", "max_wal_size", "checkpoint_timeout"]  # fmt: skip
    with engine.connect() as connection:
        values = [connection.execute(text(f"SHOW {name}")).scalar_one() for name in names]
    return ", ".join(f"{name}={value}" for name, value in zip(names, values, strict=True))


# --- run -------------------------------------------------------------------------------------


def benchmark_app(
    app: str,
    args: argparse.Namespace,
    postgres: LocalPostgres,
    engine: Engine,
    work_dir: Path,
    port: int,
    bodies: Path,
) -> list[Measurement]:
    reset_table(engine)
    postmaster_pid = int((postgres.pgdata / "postmaster.pid").read_text().split()[0])
    log_path = work_dir / f"uvicorn-{app}.log"
    results = []
    with running_server(app, postgres.url(), port, log_path) as server:
        base = f"http://127.0.0.1:{server.port}"
        phases = [("POST", f"{base}/items", "post", bodies)]
        phases.append(("GET", base, "get", work_dir / f"ids-{app}.txt"))
        for endpoint, url, mode, data in phases:
            if mode == "get":
                count = prepare_reads(engine, data)
                print(f"  {app}: {count} ids for GET", flush=True)
            print(f"  {app} {endpoint}: warm-up {args.warmup:g}s", flush=True)
            run_wrk(wrk_command(url, mode, data, args.warmup, args), args.warmup)
            print(f"  {app} {endpoint}: measuring {args.seconds:g}s", flush=True)
            command = wrk_command(url, mode, data, args.seconds, args)
            results.append(measure(app, endpoint, command, args.seconds, server, postmaster_pid))
    if log := _tail(log_path).strip():
        print(f"  {app}: uvicorn logged:\n{log}", flush=True)
    return results


def print_report(title: str, results: list[Measurement]) -> None:
    """One table (app x endpoint) and the async/sync ratios per endpoint."""
    header = (
        f"{'app':<6} {'endpoint':<8} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'requests':>8} {'uvicorn CPU':>11} {'postgres CPU':>12} {'wrk CPU':>7} "
        f"{'other CPU':>9} {'uvicorn CPU ms/req':>18}"
    )
    print(f"\n{title}\n{header}\n{'-' * len(header)}")
    for m in sorted(results, key=lambda m: (list(APPS).index(m.app), m.endpoint != "POST")):
        print(
            f"{m.app:<6} {m.endpoint:<8} {m.rate:>7.0f} {m.p50_ms:>8.2f} {m.p99_ms:>8.2f} "
            f"{m.errors:>6} {m.requests:>8} {m.server_cpu:>11.0%} {m.postgres_cpu:>12.0%} "
            f"{m.wrk_cpu:>7.0%} {m.other_cpu:>9.0%} {m.server_ms_per_request:>18.2f}"
        )
    by_key = {(m.app, m.endpoint): m for m in results}
    print("async / sync:")
    for endpoint in ("POST", "GET"):
        sync, asynchronous = by_key.get(("sync", endpoint)), by_key.get(("async", endpoint))
        if sync and asynchronous:
            print(
                f"  {endpoint:<5} req/s x{asynchronous.rate / sync.rate:.2f}   "
                f"p50 x{asynchronous.p50_ms / sync.p50_ms:.2f}   "
                f"p99 x{asynchronous.p99_ms / sync.p99_ms:.2f}   uvicorn CPU ms/req "
                f"x{asynchronous.server_ms_per_request / sync.server_ms_per_request:.2f}"
            )


def median_results(results: list[Measurement]) -> list[Measurement]:
    """Per app and endpoint, the median of each figure over the rounds."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in results:
        groups.setdefault((m.app, m.endpoint), []).append(m)
    return [
        Measurement(
            app=app,
            endpoint=endpoint,
            # requests: the total over the rounds; rate (requests / seconds): the median rate
            requests=sum(m.requests for m in group),
            seconds=sum(m.requests for m in group) / statistics.median(m.rate for m in group),
            errors=sum(m.errors for m in group),
            p50_ms=statistics.median(m.p50_ms for m in group),
            p99_ms=statistics.median(m.p99_ms for m in group),
            server_cpu=statistics.median(m.server_cpu for m in group),
            postgres_cpu=statistics.median(m.postgres_cpu for m in group),
            wrk_cpu=statistics.median(m.wrk_cpu for m in group),
            other_cpu=statistics.median(m.other_cpu for m in group),
        )
        for (app, endpoint), group in groups.items()
    ]


def print_setup(args: argparse.Namespace, engine: Engine, mean_body: float) -> None:
    packages = ["fastapi", "starlette", "uvicorn", "uvloop", "httptools", "sqlalchemy",
                "psycopg", "pydantic", "anyio"]  # fmt: skip
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in packages)
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    print(f"python {platform.python_version()}, {versions}")
    print(f"{(wrk_version.stdout or wrk_version.stderr).splitlines()[0]}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"postgres (default durability, not EPHEMERAL_SETTINGS): {server_settings(engine)}")
    print(f"uvicorn: python -m uvicorn <app> --host 127.0.0.1 {' '.join(UVICORN_OPTIONS)}")
    print(f"anyio thread limiter (FastAPI's def path): {anyio.run(_thread_tokens):g} threads")
    print(
        f"wrk: -t{args.wrk_threads} -c{args.concurrency} --timeout {WRK_TIMEOUT}, "
        f"{args.warmup:g}s warm-up + {args.seconds:g}s measured per endpoint; "
        f"POST bodies: {BODY_VARIANTS} variants, {mean_body:.0f} bytes on average"
    )


async def _thread_tokens() -> float:
    return anyio.to_thread.current_default_thread_limiter().total_tokens


def run(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO_DIR / "src"))
    from herald_local.postgres import LocalPostgres, free_port

    with contextlib.ExitStack() as cleanup:
        work_dir = Path(tempfile.mkdtemp(prefix="herald-bench-"))
        cleanup.callback(shutil.rmtree, work_dir, ignore_errors=True)
        postgres = LocalPostgres(data_dir=work_dir / "pg")
        cleanup.callback(postgres.stop)
        postgres.start()
        engine = create_engine(postgres.url(), pool_size=1, max_overflow=0)
        cleanup.callback(engine.dispose)
        with engine.begin() as connection:
            Base.metadata.create_all(connection)
        bodies = work_dir / "bodies.jsonl"
        print_setup(args, engine, write_bodies(bodies))
        results: list[Measurement] = []
        for number in range(1, args.rounds + 1):
            # Odd rounds run the apps in the order given, even rounds in reverse.
            order = args.apps if number % 2 else args.apps[::-1]
            round_results: list[Measurement] = []
            for app in order:
                print(f"round {number}, {app}:", flush=True)
                port = free_port()
                round_results += benchmark_app(app, args, postgres, engine, work_dir, port, bodies)
            print_report(f"round {number} of {args.rounds} ({', '.join(order)})", round_results)
            results += round_results
        if args.rounds > 1:
            print_report(
                f"median over {args.rounds} rounds (requests and errors: totals)",
                median_results(results),
            )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    parser.add_argument("--concurrency", type=int, default=32, help="open connections (wrk -c)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (wrk -t)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds on the same server; even rounds run the apps in reverse order",
    )
    parser.add_argument(
        "--apps",
        type=lambda value: value.split(","),
        default=["sync", "async"],
        help="apps in run order, comma-separated (default: sync,async)",
    )
    args = parser.parse_args()
    if unknown := set(args.apps) - APPS.keys():
        parser.error(f"unknown apps: {', '.join(sorted(unknown))}")
    if (
        min(args.rounds, args.concurrency, args.wrk_threads) < 1
        or min(args.seconds, args.warmup) <= 0
    ):
        parser.error("--rounds, --concurrency, --wrk-threads, --seconds, --warmup must be positive")
    if args.concurrency < args.wrk_threads:
        parser.error("--concurrency must be at least --wrk-threads")
    return args


def _raise_on_signal(signum: int, _: FrameType | None) -> None:
    """Turn SIGINT, SIGTERM and the deadline (SIGALRM) into an exception, once: after the
    first, all three are ignored so that the cleanup (bounded on its own) runs to the end."""
    for ignored in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(ignored, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    if signum == signal.SIGALRM:
        raise TimeoutError("the benchmark ran past its overall deadline")
    raise SystemExit(128 + signum)


def main() -> int:
    args = parse_arguments()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    per_endpoint = args.warmup + args.seconds + 2 * 30.0
    per_app = SERVER_START_SECONDS + 2 * per_endpoint + 60
    budget = 120 + args.rounds * len(args.apps) * per_app
    for handled in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(handled, _raise_on_signal)
    signal.alarm(int(budget))
    try:
        run(args)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
