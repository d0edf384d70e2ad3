"""The whole system on one machine: start every part, watch them, stop them all cleanly.

Start-up, in order (PostgreSQL starts in a thread while the template is read and the
local AWS endpoint is filled, since each takes a few seconds):

1. check every port is free, stop a PostgreSQL a killed previous run left behind;
2. PostgreSQL on ``<data dir>/postgres`` (kept between runs; ``--reset`` wipes it);
3. the local AWS endpoint (moto), and in it the template's queues, table, SES
   configuration set and the sender's SES identity; the local SES publishes SES's
   mailbox-simulator events by the template's EventBridge rule to the feedback queue;
   this process and every part get an environment that can only reach it
   (``aws_isolation``);
4. the migrations, the demo tenant and a fresh key, and the tasks of messages a
   previous run left ``queued``;
5. the api, the worker and the task runner (``sqs_event_source`` calling the real
   handler) as child processes; the mailbox page and, when built, the front-end;
6. once each part is ready, the URLs and the key.

On Ctrl-C (or SIGTERM, SIGHUP): the api stops taking requests, the queues get a few
seconds to drain, the worker and the task runner finish their batch, then the web
servers and moto stop, and PostgreSQL last, with a fast shutdown (nothing committed is
lost). A second Ctrl-C kills the parts at once; PostgreSQL is still shut down properly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import boto3

from herald_local.aws_isolation import REGION, isolated_environment, use_only_local_aws
from herald_local.local_aws import LocalAwsEndpoint
from herald_local.part_process import PartProcess
from herald_local.pipeline_resources import create_pipeline_resources
from herald_local.postgres import LocalPostgres
from herald_local.ses_simulator import SesEventRouting
from herald_local.tcp_ports import (
    PortRequest,
    check_ports_free,
    remove_running_ports,
    write_running_ports,
)
from herald_local.template import read_pipeline_template
from herald_local.web_servers import frontend_server, mailbox_server

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from types import FrameType

    from herald_local.local_database import DemoKey
    from herald_local.log_lines import Terminal
    from herald_local.pipeline_resources import LocalPipeline
    from herald_local.template import FunctionConfiguration
    from herald_local.web_servers import BackgroundHttpServer

READY_TIMEOUT_SECONDS = 90
DRAIN_SECONDS = 10
PART_STOP_SECONDS = 15
# Settings of the parts (ecs_service.settings) that the local system sets itself; the
# shell's values must not leak in (a DATABASE_URL of a real database, say).
PART_SETTINGS_PREFIXES = ("DATABASE_",)
# The worker's SES_MAX_SEND_RATE without --ses-max-send-rate: the local SES has no limit
# then, and the worker must not wait on SES GetAccount, which moto does not answer alike.
UNLIMITED_LOCAL_SEND_RATE = 1000.0


class StopRequestedError(Exception):
    """Ctrl-C or SIGTERM arrived while the system was starting."""


@dataclass(frozen=True)
class Port:
    """A configurable port: its default, flag and environment variable."""

    part: str
    flag: str
    variable: str
    default: int


PORTS = {
    "api": Port("api", "--api-port", "HERALD_LOCAL_API_PORT", 8000),
    "aws": Port("local AWS endpoint", "--aws-port", "HERALD_LOCAL_AWS_PORT", 4566),
    "mailbox": Port("mailbox", "--mailbox-port", "HERALD_LOCAL_MAILBOX_PORT", 8025),
    "frontend": Port("front-end", "--frontend-port", "HERALD_LOCAL_FRONTEND_PORT", 8080),
    "postgres": Port("PostgreSQL", "--postgres-port", "HERALD_LOCAL_POSTGRES_PORT", 5433),
}
DEMO_KEY_FILE = "demo-api-key"


@dataclass(frozen=True)
class RunOptions:
    """What ``herald-local run`` was asked for."""

    project_dir: Path
    data_dir: Path
    ports: Mapping[str, int]
    reset: bool = False
    sender_email: str = "herald@example.com"
    log_level: str | None = None
    ses_throttle: Mapping[str, int] = field(default_factory=dict)
    task_visibility_timeout: int | None = None
    # Recipients per second the local SES accepts (SES's MaximumSendRate); None: no limit.
    ses_max_send_rate: float | None = None

    @property
    def worker_send_rate(self) -> float:
        """The worker's SES_MAX_SEND_RATE: the local SES's limit, or a rate never reached."""
        return self.ses_max_send_rate or UNLIMITED_LOCAL_SEND_RATE

    @property
    def demo_key_file(self) -> Path:
        return self.data_dir / DEMO_KEY_FILE

    @property
    def frontend_dist(self) -> Path:
        return self.project_dir / "frontend" / "dist"

    @property
    def serves_frontend(self) -> bool:
        return (self.frontend_dist / "index.html").is_file()


class Stopping:
    """Turns Ctrl-C, SIGTERM and SIGHUP into an orderly stop; a second one forces it."""

    def __init__(self, terminal: Terminal) -> None:
        self.requested = threading.Event()
        self.starting = True
        self._terminal = terminal
        self._on_force: list[Callable[[], None]] = []

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._handle)

    def on_force(self, action: Callable[[], None]) -> None:
        self._on_force.append(action)

    def _handle(self, signum: int, _: FrameType | None) -> None:
        if self.requested.is_set():
            self._terminal.write("herald", "stopping now: killing the parts")
            for action in self._on_force:
                action()
            return
        self.requested.set()
        self._terminal.write("herald", f"{signal.Signals(signum).name}: stopping every part")
        if self.starting:
            raise StopRequestedError


def run_local_system(options: RunOptions, terminal: Terminal) -> int:
    """Run until Ctrl-C or SIGTERM (exit code 0), or until a part fails (1)."""
    started = time.monotonic()
    stopping = Stopping(terminal)
    stopping.install()

    def say(line: str) -> None:
        terminal.write("herald", line)

    postgres = LocalPostgres(options.data_dir / "postgres", port=options.ports["postgres"])
    with contextlib.ExitStack() as cleanup:
        try:
            _stop_leftover_postgres(postgres, say)
            if options.reset and postgres.data_dir.exists():
                shutil.rmtree(postgres.data_dir)
                say(f"--reset: removed {postgres.data_dir}")
            check_ports_free(_port_requests(options))

            # 2. PostgreSQL, in a thread, while the template is read and moto filled.
            _follow_log(postgres.log_file, terminal, cleanup)
            postgres_started = _start_in_thread(postgres.start)
            cleanup.callback(_stop_postgres, postgres, postgres_started, say)

            # 3. The local AWS endpoint and the template's resources in it.
            overrides = {"SenderEmail": options.sender_email}
            if options.log_level:
                overrides["LogLevel"] = options.log_level
            template = read_pipeline_template(options.project_dir / "template.yaml", overrides)
            aws = LocalAwsEndpoint(
                options.ports["aws"],
                ses_throttle=options.ses_throttle,
                ses_max_send_rate=options.ses_max_send_rate,
                log=lambda line: terminal.write("ses", line),
            )
            aws.start()
            cleanup.callback(aws.stop)
            environment = isolated_environment(os.environ, aws.url)
            if dropped := [name for name in environment.dropped if name != "AWS_CA_BUNDLE"]:
                say(f"ignoring {', '.join(dropped)} from your shell: local mode never uses AWS")
            use_only_local_aws(environment.variables)
            pipeline = create_pipeline_resources(
                template,
                sender_email=options.sender_email,
                visibility_timeout_override=options.task_visibility_timeout,
            )
            for warning in pipeline.warnings:
                say(f"warning: {warning}")
            aws.ses_simulator.publish_to(
                SesEventRouting(
                    sqs=boto3.client("sqs"),
                    event_types=pipeline.ses_event_types,
                    rules=pipeline.event_rules,
                )
            )

            # 4. The database: schema, demo key, tasks a previous run left queued.
            postgres_started.join_or_raise()
            from herald_local.local_database import prepare_database, resend_stranded_tasks
            from shared.adapters.sqs import SqsTaskProducer

            # Migrated by the schema's owner; the demo key, the parts and the mailbox page
            # use herald_app, the role the api and worker log in as in AWS.
            key = prepare_database(
                postgres.url(), options.demo_key_file, app_url=postgres.app_url()
            )
            producer = SqsTaskProducer(boto3.client("sqs"), pipeline.task_queue_url)
            if resent := resend_stranded_tasks(postgres.app_url(), producer):
                say(
                    f"{resent} message(s) were still queued when the last run stopped: "
                    "their tasks are queued again"
                )

            # 5. The parts.
            parts = _parts(options, pipeline, template.task_runner, postgres, terminal)
            servers: list[BackgroundHttpServer] = []
            cleanup.callback(_stop_servers, servers)
            cleanup.callback(_stop_parts, parts, pipeline, say)

            def kill_parts() -> None:
                for part in parts.values():
                    part.kill()

            stopping.on_force(kill_parts)
            for part in parts.values():
                part.start()
            servers.append(
                mailbox_server(options.ports["mailbox"], aws.url, postgres.app_url()).start()
            )
            api_url = f"http://127.0.0.1:{options.ports['api']}"
            if options.serves_frontend:
                servers.append(
                    frontend_server(
                        options.ports["frontend"], options.frontend_dist, api_url
                    ).start()
                )
            _wait_until_ready(parts, api_url)
            # `herald-local mailbox` finds this run's ports here, whatever flags it had.
            write_running_ports(options.data_dir, options.ports)
            cleanup.callback(remove_running_ports, options.data_dir)
        except StopRequestedError:
            return 0
        finally:
            stopping.starting = False
        terminal.block(
            banner(options, pipeline, key, aws.url, postgres, time.monotonic() - started)
        )
        return _supervise(parts, stopping, say)


# ----------------------------------------------------------------------------- start-up


class _Started:
    """The outcome of a start-up step run in a thread."""

    def __init__(self, thread: threading.Thread, errors: list[BaseException]) -> None:
        self.thread = thread
        self.errors = errors

    def join_or_raise(self) -> None:
        self.thread.join()
        if self.errors:
            raise self.errors[0]


def _start_in_thread(step: Callable[[], object]) -> _Started:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            step()
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)

    thread = threading.Thread(target=run, name="start-postgres", daemon=True)
    thread.start()
    return _Started(thread, errors)


def _stop_postgres(postgres: LocalPostgres, started: _Started, say: Callable[[str], None]) -> None:
    started.thread.join()
    if postgres.is_running():
        postgres.stop()
        say("PostgreSQL stopped (fast shutdown: every committed transaction is on disk)")


def _stop_leftover_postgres(postgres: LocalPostgres, say: Callable[[str], None]) -> None:
    if postgres.is_running():
        say(f"a PostgreSQL left running on {postgres.data_dir} by an earlier run: stopping it")
        postgres.stop()


def _port_requests(options: RunOptions) -> list[PortRequest]:
    names = ["api", "aws", "mailbox", "postgres"]
    if options.serves_frontend:
        names.append("frontend")
    return [
        PortRequest(PORTS[name].part, options.ports[name], PORTS[name].flag, PORTS[name].variable)
        for name in names
    ]


def _follow_log(path: Path, terminal: Terminal, cleanup: contextlib.ExitStack) -> None:
    """Stream the lines PostgreSQL appends to its log file from now on."""
    stop = threading.Event()
    offset = path.stat().st_size if path.is_file() else 0

    def follow() -> None:
        position = offset
        pending = ""
        while not stop.is_set():
            chunk = ""
            if path.is_file():
                with path.open(encoding="utf-8", errors="replace") as log:
                    log.seek(position)
                    chunk = log.read()
                    position = log.tell()
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                terminal.write("postgres", line)
            if not chunk:
                stop.wait(0.3)

    thread = threading.Thread(target=follow, name="postgres-log", daemon=True)
    thread.start()

    def stop_following() -> None:
        stop.set()
        thread.join(timeout=2)

    cleanup.callback(stop_following)


def _parts(
    options: RunOptions,
    pipeline: LocalPipeline,
    function: FunctionConfiguration,
    postgres: LocalPostgres,
    terminal: Terminal,
) -> dict[str, PartProcess]:
    """The api, the worker and the task runner, each with the environment it needs."""
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(PART_SETTINGS_PREFIXES)
    } | {"PYTHONUNBUFFERED": "1"}
    shared = {
        "DATABASE_URL": postgres.app_url(),
        "ENVIRONMENT": pipeline.function_environment.get("ENVIRONMENT", "dev"),
        "LOG_LEVEL": pipeline.function_environment.get("LOG_LEVEL", "INFO"),
        "POWERTOOLS_METRICS_NAMESPACE": pipeline.function_environment.get(
            "POWERTOOLS_METRICS_NAMESPACE", "Herald"
        ),
        "SENDER_EMAIL": options.sender_email,
    }
    frontend = options.ports["frontend"]
    api_environment = (
        base
        | shared
        | {
            "POWERTOOLS_SERVICE_NAME": "herald-api",
            "HOST": "127.0.0.1",
            "PORT": str(options.ports["api"]),
            "CORS_ALLOWED_ORIGINS": f"http://127.0.0.1:{frontend},http://localhost:{frontend}",
            # Ctrl-C should not wait the 20 s ECS gets.
            "GRACEFUL_SHUTDOWN_SECONDS": base.get("GRACEFUL_SHUTDOWN_SECONDS", "5"),
        }
    )
    worker_environment = (
        base
        | shared
        | {
            "POWERTOOLS_SERVICE_NAME": "herald-worker",
            "TASK_QUEUE_URL": pipeline.task_queue_url,
            "RESULT_QUEUE_URL": pipeline.result_queue_url,
            # Its results long poll bounds how fast it stops; 10 s feels hung after Ctrl-C.
            "RESULTS_WAIT_SECONDS": base.get("RESULTS_WAIT_SECONDS", "2"),
            "SES_MAX_SEND_RATE": f"{options.worker_send_rate:g}",
            # SES's events, as the EventBridge rule delivers them (empty: no feedback loop).
            "FEEDBACK_QUEUE_URL": pipeline.feedback_queue_url,
        }
    )
    # The function's environment is exactly the template's, resolved locally.
    runner_environment = base | dict(pipeline.function_environment)
    event = function.event
    runner_command = [
        sys.executable, "-m", "herald_local", "event-source",
        "--handler", function.handler,
        "--queue-url", pipeline.task_queue_url,
        "--queue-arn", pipeline.task_queue_arn,
        "--region", REGION,
        "--batch-size", str(event.batch_size),
        "--batching-window", str(event.maximum_batching_window_seconds),
        "--function-name", f"herald-local-{function.logical_id}",
        "--timeout", str(function.timeout_seconds),
        "--memory", str(function.memory_mb),
    ]  # fmt: skip
    if not event.report_batch_item_failures:
        runner_command.append("--no-report-batch-item-failures")
    common = {"terminal": terminal, "cwd": options.project_dir}
    return {
        "api": PartProcess(
            "api", [sys.executable, "-m", "ecs_service", "api"],
            environment=api_environment, **common,  # type: ignore[arg-type]
        ),
        "worker": PartProcess(
            "worker", [sys.executable, "-m", "ecs_service", "worker"],
            environment=worker_environment, ready_when="worker started",
            **common,  # type: ignore[arg-type]
        ),
        "runner": PartProcess(
            "runner", runner_command, environment=runner_environment, ready_when="ready: ",
            **common,  # type: ignore[arg-type]
        ),
    }  # fmt: skip


def _wait_until_ready(parts: Mapping[str, PartProcess], api_url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    waiting = dict(parts)
    while waiting:
        for name, part in list(waiting.items()):
            if (code := part.exit_code()) is not None:
                raise SystemExit(f"herald-local: the {name} exited during start-up (code {code})")
            ready = _answers(f"{api_url}/readyz") if name == "api" else part.ready.is_set()
            if ready:
                del waiting[name]
        if waiting and time.monotonic() > deadline:
            raise SystemExit(
                f"herald-local: not ready after {READY_TIMEOUT_SECONDS} s: {', '.join(waiting)}"
            )
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def banner(
    options: RunOptions,
    pipeline: LocalPipeline,
    key: DemoKey,
    aws_url: str,
    postgres: LocalPostgres,
    seconds: float,
) -> str:
    """What a person needs: the URLs, the key, a first request, how to stop."""
    api = f"http://127.0.0.1:{options.ports['api']}"
    mailbox = f"http://127.0.0.1:{options.ports['mailbox']}"
    if options.serves_frontend:
        frontend = f"http://127.0.0.1:{options.ports['frontend']}  (config.json -> {api})"
    else:
        frontend = (
            f"not built yet ({options.frontend_dist.relative_to(options.project_dir)} does "
            f"not exist); once it is, it is served on port {options.ports['frontend']}"
        )
    visibility = pipeline.queue_settings["TaskQueue"].get("VisibilityTimeout", "?")
    notes = []
    if options.task_visibility_timeout is not None:
        notes.append(
            f"  note: the task queue's visibility timeout is {visibility} s "
            "(--task-visibility-timeout; the template says 300 s)"
        )
    if options.ses_throttle:
        rules = ", ".join(f"{who} x{count}" for who, count in options.ses_throttle.items())
        notes.append(f"  note: the local SES throttles SendEmail for {rules} (--ses-throttle)")
    if options.ses_max_send_rate is not None:
        notes.append(
            f"  note: the local SES accepts at most {options.ses_max_send_rate:g} recipients/s "
            "and answers more with Throttling (--ses-max-send-rate)"
        )
    kept = "the same as last run" if key.reused else "new, kept for the next run"
    lines = [
        "",
        f"Herald is running (ready in {seconds:.1f} s). Ctrl-C stops everything.",
        "",
        f"  API          {api}   docs: {api}/docs",
        f"  API key      {key.plaintext}   (tenant demo; {kept}: {options.demo_key_file})",
        f"  mailbox      {mailbox}   or: make mailbox",
        f"  front-end    {frontend}",
        f"  local AWS    {aws_url}   (moto: task, result and feedback queues + DLQs, "
        "idempotency table, SES as its mailbox simulator)",
        f"  PostgreSQL   {postgres.url(driver='postgresql')}   data: {postgres.data_dir}",
        *notes,
        "",
        "Schedule an email, then watch it arrive in the mailbox:",
        f"  curl -s {api}/v1/messages -H 'Authorization: Bearer {key.plaintext}' \\",
        "    -H 'Content-Type: application/json' \\",
        '    -d \'{"to": ["you@example.org"], "subject": "Hello", "text": "Sent by Herald"}\'',
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------ running, stop


def _supervise(
    parts: Mapping[str, PartProcess], stopping: Stopping, say: Callable[[str], None]
) -> int:
    while not stopping.requested.wait(0.5):
        for name, part in parts.items():
            if (code := part.exit_code()) is not None:
                say(f"the {name} exited unexpectedly (code {code}): stopping everything")
                return 1
    return 0


def _stop_parts(
    parts: Mapping[str, PartProcess], pipeline: LocalPipeline, say: Callable[[str], None]
) -> None:
    # Nothing new comes in; what is in flight gets a moment to finish; then the rest.
    if "api" in parts:
        parts["api"].stop(PART_STOP_SECONDS)
    running = [part for part in parts.values() if part.exit_code() is None]
    if any(part.name in ("worker", "runner") for part in running):
        _drain(pipeline, say)
    for part in running:
        part.terminate()
    for part in running:
        part.wait_stopped(PART_STOP_SECONDS)
    say("api, worker and runner stopped")


def _drain(pipeline: LocalPipeline, say: Callable[[str], None]) -> None:
    """Give tasks, results and SES events in flight up to ``DRAIN_SECONDS`` to be finished."""
    sqs = boto3.client("sqs")
    deadline = time.monotonic() + DRAIN_SECONDS
    announced = False
    while True:
        in_flight = 0
        for url in filter(
            None, (pipeline.task_queue_url, pipeline.result_queue_url, pipeline.feedback_queue_url)
        ):
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            in_flight += sum(int(value) for value in attributes.values())
        if in_flight == 0:
            return
        if time.monotonic() > deadline:
            say(
                f"{in_flight} task(s)/result(s)/event(s) still in the local queues; their "
                "messages stay queued and their tasks are sent again on the next run"
            )
            return
        if not announced:
            say(
                f"waiting up to {DRAIN_SECONDS} s for {in_flight} task(s)/result(s)/event(s) "
                "in flight"
            )
            announced = True
        time.sleep(0.5)


def _stop_servers(servers: list[BackgroundHttpServer]) -> None:
    for server in servers:
        server.stop()
