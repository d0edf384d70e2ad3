"""The whole system on one machine, started as a person starts it: ``herald-local run``.

One system is started for the module (start-up costs a few seconds): its own data
folder and free ports, and two local-only switches for the retry story: the local SES
throttles ``slow@example.org`` five times (more than the task runner's four tries in
place, so it must queue a delayed copy of the task), and the task queue's visibility
timeout is 2 s instead of the template's 300 s, so a record that did go back to the queue
would come again in seconds. The last test stops it.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from herald_local.harness import (
    RunningSystem,
    alive,
    children_of,
    group_alive,
    running_local_system,
    wait_for,
)
from herald_local.postgres import LocalPostgres
from tests.conftest import require_tool
from tests.integration.conftest import REPO_ROOT

THROTTLED = "slow@example.org"
# What a message ends as once SES has reported on it (or Herald never sent it).
SETTLED = {"delivered", "bounced", "complained", "failed", "canceled"}
# More 429s than the task runner's four tries in place (its SES client makes one attempt a
# call), so the task is queued again with a delay and the delayed copy goes out.
THROTTLE_COUNT = 5


@pytest.fixture(scope="module")
def local_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    with running_local_system(
        tmp_path_factory.mktemp("herald-local"),
        "--ses-throttle",
        f"{THROTTLED}={THROTTLE_COUNT}",
        "--task-visibility-timeout",
        "2",
    ) as system:
        yield system


def test_emails_scheduled_through_the_api_are_sent_and_reach_the_local_mailbox(
    local_system: RunningSystem,
) -> None:
    # Given the system started with `herald-local run`, and the key its banner printed
    run = uuid4().hex[:8]

    # When one email is scheduled for now and one a few seconds ahead
    now_id = local_system.schedule("reader@example.org", f"Now {run}")
    later_id = local_system.schedule(
        "reader@example.org", f"Later {run}", datetime.now(UTC) + timedelta(seconds=3)
    )
    assert local_system.status(later_id) == "scheduled"

    # Then both become sent (and then delivered: the local SES reports the delivery as
    # SES does, which can happen between two looks)
    wait_for(
        lambda: (
            {local_system.status(now_id), local_system.status(later_id)} <= {"sent", "delivered"}
        ),
        45,
        "both messages sent",
        local_system,
    )
    # And both are in the local mailbox, the command's and the page's
    subjects = [email["subject"] for email in local_system.mailbox()]
    assert f"Now {run}" in subjects
    assert f"Later {run}" in subjects
    page = httpx.get(f"http://127.0.0.1:{local_system.ports['mailbox']}/emails.json").json()
    assert {f"Now {run}", f"Later {run}"} <= {email["subject"] for email in page}


def test_the_mailbox_command_finds_the_running_systems_port_by_its_data_directory(
    local_system: RunningSystem,
) -> None:
    # Given a system started on ports of its own (not the defaults)
    expected = local_system.mailbox()

    # When `herald-local mailbox` is asked without --aws-port
    listed = subprocess.run(
        [
            require_tool("herald-local"),
            "mailbox",
            "--json",
            "--data-dir",
            str(local_system.data_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )

    # Then it reads that system's mailbox, the same one the explicit port shows, and, as
    # it found the system's database too, names each email's Herald message
    found = json.loads(listed.stdout)
    assert [email["message_id"] for email in found] == [email["message_id"] for email in expected]
    assert found and all(email["herald_message_id"] for email in found)
    # And the banner says the demo key is kept for the next run
    assert f"kept for the next run: {local_system.data_dir / 'demo-api-key'}" in local_system.text()


def test_a_throttled_send_is_retried_by_the_task_runner_and_sent_once(
    local_system: RunningSystem,
) -> None:
    # Given a recipient the local SES throttles for its next five SendEmail requests
    subject = f"Throttled {uuid4().hex[:8]}"

    # When an email to it is scheduled
    message_id = local_system.schedule(THROTTLED, subject)

    # Then the task runner's tries in place are throttled, it queues a delayed copy of the
    # task (issue 19: throttling never sends a record back towards the DLQ), and the
    # message ends sent (then delivered)
    wait_for(
        lambda: local_system.status(message_id) in ("sent", "delivered"),
        60,
        "the retry",
        local_system,
    )
    output = local_system.text()
    assert "TasksThrottled=1" in output, output[-4000:]
    assert "TasksDeferred=1" in output, output[-4000:]
    assert re.search(r"receive counts \[1\] -> 1 done, 0 back to the queue", output), output[-4000:]
    assert "the record goes back to the queue" not in output
    # And it reached the mailbox exactly once
    sent = [email for email in local_system.mailbox() if email["subject"] == subject]
    assert len(sent) == 1
    assert sent[0]["to"] == [THROTTLED]


def test_a_port_in_use_is_named_with_the_flag_that_changes_it(tmp_path: Path) -> None:
    # Given a program listening on the port the api would take
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # When the local system is started on it
        result = subprocess.run(
            [
                require_tool("herald-local"),
                "run",
                "--data-dir",
                str(tmp_path),
                "--api-port",
                str(port),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    # Then it refuses at once, naming the port and how to choose another
    assert result.returncode == 2
    assert f"port {port} (api) is in use" in result.stderr
    assert "--api-port PORT (or HERALD_LOCAL_API_PORT=PORT)" in result.stderr


def test_ctrl_c_stops_every_part_leaves_no_process_and_keeps_the_data(
    local_system: RunningSystem,
) -> None:
    # Given the running system, its parts, and the messages it holds, once SES has
    # reported on each (a delivery arriving during the stop would change a status)
    runner = local_system.process
    parts = children_of(runner.pid)
    assert len(parts) >= 3  # api, worker, task runner
    postmaster = int((local_system.data_dir / "postgres" / "pgdata" / "postmaster.pid")
                     .read_text().split()[0])  # fmt: skip
    wait_for(
        lambda: {message["status"] for message in local_system.messages()} <= SETTLED,
        30,
        "SES's report on every message",
        local_system,
    )
    before = {message["id"]: message["status"] for message in local_system.messages()}

    # When Ctrl-C reaches it
    runner.send_signal(signal.SIGINT)

    # Then it stops cleanly and promptly
    assert runner.wait(timeout=60) == 0
    output = local_system.output_to_the_end()
    assert "PostgreSQL stopped" in output
    # And no process of the system is left: not a part, not its group, not PostgreSQL
    assert [pid for pid in parts if alive(pid)] == []
    assert [pid for pid in parts if group_alive(pid)] == []
    assert not alive(postmaster)
    # And the data is still there when PostgreSQL starts again on the same folder
    with LocalPostgres(local_system.data_dir / "postgres") as postgres:
        rows = postgres.psql("herald", "SELECT id, status FROM messages")
    after = dict(line.split("|") for line in rows.split())
    assert {message_id: after.get(message_id) for message_id in before} == before
