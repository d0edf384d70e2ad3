"""The ``herald-local`` command: the whole system on this machine, and its mailbox.

    herald-local run [--reset] [--api-port N] [--aws-port N] [--mailbox-port N] ...
    herald-local mailbox [--json] [--aws-port N] [--data-dir DIR]

``make run`` and ``make mailbox`` call these. ``herald-local event-source`` is the task
runner's process, started by ``run``; people do not call it, and ``--help`` hides it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from herald_local.aws_isolation import RealAwsRefusedError
from herald_local.postgres import PostgresNotFoundError
from herald_local.ses_faults import parse_throttle_rules
from herald_local.tcp_ports import PortInUseError
from herald_local.template import TemplateError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

DATA_DIR_VARIABLE = "HERALD_LOCAL_DATA_DIR"
SES_THROTTLE_VARIABLE = "HERALD_LOCAL_SES_THROTTLE"
SES_MAX_SEND_RATE_VARIABLE = "HERALD_LOCAL_SES_MAX_SEND_RATE"


def project_dir() -> Path:
    """The repository: the current folder if it holds template.yaml, else this package's."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (candidate / "template.yaml").is_file():
            return candidate
    raise SystemExit("herald-local: run it from the Herald repository (no template.yaml here)")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return port


def _send_rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = 0.0
    if not 0 < rate < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate above 0 (recipients/second)")
    return rate


def _env_send_rate() -> float | None:
    value = os.environ.get(SES_MAX_SEND_RATE_VARIABLE)
    if not value:
        return None
    try:
        return _send_rate(value)
    except argparse.ArgumentTypeError as error:
        raise SystemExit(f"herald-local: {SES_MAX_SEND_RATE_VARIABLE}: {error}") from None


def _env_port(variable: str, default: int) -> int:
    value = os.environ.get(variable)
    if not value:
        return default
    try:
        return _port(value)
    except (ValueError, argparse.ArgumentTypeError):
        raise SystemExit(
            f"herald-local: {variable}={value!r} is not a TCP port (1-65535)"
        ) from None


def run(args: argparse.Namespace) -> int:
    from herald_local.log_lines import Terminal
    from herald_local.system import PORTS, RunOptions, run_local_system

    project = project_dir()
    throttle_specs = [*filter(None, [os.environ.get(SES_THROTTLE_VARIABLE)]), *args.ses_throttle]
    try:
        ses_throttle = parse_throttle_rules(throttle_specs)
    except ValueError as error:
        raise SystemExit(f"herald-local: --ses-throttle: {error}") from error
    options = RunOptions(
        project_dir=project,
        data_dir=(project / args.data_dir).resolve(),
        ports={name: getattr(args, f"{name}_port") for name in PORTS},
        reset=args.reset,
        sender_email=args.sender_email,
        log_level=args.log_level,
        ses_throttle=ses_throttle,
        task_visibility_timeout=args.task_visibility_timeout,
        ses_max_send_rate=args.ses_max_send_rate,
    )
    try:
        return run_local_system(options, Terminal())
    except (PortInUseError, RealAwsRefusedError, TemplateError, PostgresNotFoundError) as error:
        print(f"herald-local: {error}", file=sys.stderr)
        return 2


def mailbox(args: argparse.Namespace) -> int:
    from herald_local.mailbox import (
        HeraldMessages,
        MailboxUnavailableError,
        format_mailbox,
        read_mailbox,
        with_herald_sends,
    )
    from herald_local.postgres import DATABASE_USER
    from herald_local.system import PORTS
    from herald_local.tcp_ports import read_running_ports

    # The running system's own port first (it may have been started with --aws-port),
    # then the flag's or variable's, then the default.
    project = project_dir()
    running = read_running_ports((project / args.data_dir).resolve())
    port = (
        args.aws_port
        or running.get("aws")
        or _env_port(PORTS["aws"].variable, PORTS["aws"].default)
    )
    try:
        emails = read_mailbox(f"http://127.0.0.1:{port}")
    except MailboxUnavailableError as error:
        print(f"herald-local: {error}", file=sys.stderr)
        return 1
    if "postgres" in running:
        # The running system's database names each email's Herald message and send time.
        herald = HeraldMessages(
            f"postgresql+psycopg://{DATABASE_USER}@127.0.0.1:{running['postgres']}/herald"
        )
        try:
            emails = with_herald_sends(emails, herald)
        finally:
            herald.close()
    if args.json:
        print(json.dumps([email.as_json() for email in emails], indent=2))
    else:
        print(format_mailbox(emails))
    return 0


def event_source(args: argparse.Namespace) -> int:
    from herald_local.sqs_event_source import EventSourceSettings, run_event_source_process

    settings = EventSourceSettings(
        queue_url=args.queue_url,
        queue_arn=args.queue_arn,
        region=args.region,
        batch_size=args.batch_size,
        batching_window_seconds=args.batching_window,
        report_batch_item_failures=args.report_batch_item_failures,
        function_name=args.function_name,
        function_timeout_seconds=args.timeout,
        memory_mb=args.memory,
    )
    return run_event_source_process(settings, args.handler)


def parser() -> argparse.ArgumentParser:
    from herald_local.system import PORTS

    root = argparse.ArgumentParser(
        prog="herald-local",
        description="Herald on this machine: no AWS account, no Docker.",
    )
    # The metavar leaves out `event-source`, which only `run` starts.
    commands = root.add_subparsers(dest="command", required=True, metavar="{run,mailbox}")

    start = commands.add_parser(
        "run",
        help="start the whole system; Ctrl-C stops it",
        description="Start PostgreSQL, a local AWS endpoint (moto) with the template's "
        "queues, table, SES identity and configuration set (its SES behaving like SES's "
        "mailbox simulator), the api, the worker and the task runner; print the URLs and "
        "an API key; stream every part's logs. Ctrl-C stops everything.",
    )
    for name, port in PORTS.items():
        start.add_argument(
            port.flag,
            dest=f"{name}_port",
            type=_port,
            metavar="PORT",
            default=_env_port(port.variable, port.default),
            help=f"the {port.part}'s port (default {port.default}, or ${port.variable})",
        )
    start.add_argument(
        "--reset",
        action="store_true",
        help="wipe the local database first (tenants, keys, messages)",
    )
    start.add_argument(
        "--data-dir",
        default=os.environ.get(DATA_DIR_VARIABLE, ".local"),
        help="where PostgreSQL keeps its data and the demo API key is kept "
        f"(default .local, or ${DATA_DIR_VARIABLE})",
    )
    start.add_argument(
        "--sender-email",
        default="herald@example.com",
        help="the From address (the template's SenderEmail); its domain is the local SES "
        "identity (default herald@example.com)",
    )
    start.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the template's LogLevel, for every part (default: the template's, INFO)",
    )
    faults = start.add_argument_group(
        "fault injection (local only: to watch a retry, and for the tests)"
    )
    faults.add_argument(
        "--ses-throttle",
        action="append",
        default=[],
        metavar="RECIPIENT=COUNT",
        help="the local SES answers 429 TooManyRequestsException to the next COUNT "
        f"SendEmail requests naming RECIPIENT (repeatable; also ${SES_THROTTLE_VARIABLE}, "
        "comma-separated)",
    )
    faults.add_argument(
        "--ses-max-send-rate",
        type=_send_rate,
        default=_env_send_rate(),
        metavar="N",
        help="the local SES accepts at most N recipients per second, as SES's maximum send "
        "rate, and refuses more with SES's Throttling error; the worker gets "
        f"SES_MAX_SEND_RATE=N (default: no limit, SES_MAX_SEND_RATE=1000; also "
        f"${SES_MAX_SEND_RATE_VARIABLE})",
    )
    faults.add_argument(
        "--task-visibility-timeout",
        type=int,
        metavar="SECONDS",
        help="replace the task queue's VisibilityTimeout (300 s in the template), so a "
        "failed task comes back in seconds",
    )
    start.set_defaults(run=run)

    box = commands.add_parser("mailbox", help="list the emails the local SES sent")
    box.add_argument(
        "--aws-port",
        type=_port,
        default=None,
        help="the local AWS endpoint's port (default: the one the system running on "
        f"--data-dir uses, else ${PORTS['aws'].variable}, else {PORTS['aws'].default})",
    )
    box.add_argument(
        "--data-dir",
        default=os.environ.get(DATA_DIR_VARIABLE, ".local"),
        help=f"the running system's data directory (default .local, or ${DATA_DIR_VARIABLE})",
    )
    box.add_argument("--json", action="store_true", help="as JSON")
    box.set_defaults(run=mailbox)

    source = commands.add_parser("event-source")  # internal: started by `run`
    source.add_argument("--handler", required=True)
    source.add_argument("--queue-url", required=True)
    source.add_argument("--queue-arn", required=True)
    source.add_argument("--region", required=True)
    source.add_argument("--batch-size", type=int, required=True)
    source.add_argument("--batching-window", type=int, required=True)
    source.add_argument("--function-name", required=True)
    source.add_argument("--timeout", type=int, required=True)
    source.add_argument("--memory", type=int, required=True)
    source.add_argument(
        "--no-report-batch-item-failures", dest="report_batch_item_failures", action="store_false"
    )
    source.set_defaults(run=event_source)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.run
    return command(args)
