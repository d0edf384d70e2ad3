"""The whole system on one machine, started as a person starts it: ``herald-local run``.

Shared by the tests that need the running system (tests/integration/test_local_system.py,
tests/e2e/) and the benchmarks that measure it (bench/end_to_end.py, bench/pacing.py):
start it in a folder of its own on free ports, read what its banner printed (the API key
and the URLs), talk to it, stop it with Ctrl-C, and check that nothing of it is left
running.

It lives here rather than under tests/ so the bench does not import test code. It imports
no pytest (a missing executable is ``ToolMissingError``; tests/conftest.py turns it into a
skip, or a failure under CI); it needs httpx, which the project's dev dependency group
installs and the ``herald`` package's own dependencies do not: nothing ``herald-local``
runs imports this module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from herald_local.postgres import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from datetime import datetime

REPO_ROOT = Path(__file__).resolve().parents[2]
PART_NAMES = ("api", "aws", "mailbox", "frontend", "postgres")
KEY_PATTERN = re.compile(r"API key\s+(hrld_\S+)")
API_PATTERN = re.compile(r"API\s+(http://127\.0\.0\.1:\d+)")
FRONTEND_PATTERN = re.compile(r"front-end\s+(http://127\.0\.0\.1:\d+)")
START_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 60


class ToolMissingError(LookupError):
    """An executable the harness runs (``herald-local``, ``herald``) is not installed."""


def find_tool(name: str) -> str:
    """The path of an executable: the project's virtualenvs first, then PATH.

    Raises ``ToolMissingError`` (its message says to run ``make install``) when it is
    nowhere.
    """
    for candidate in (
        REPO_ROOT / ".venv" / "bin" / name,
        REPO_ROOT / ".venv-uv" / "bin" / name,
        REPO_ROOT / "tools" / name / ".venv" / "bin" / name,
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise ToolMissingError(f"{name} is not installed: run `make install`")


@dataclass
class RunningSystem:
    """The ``herald-local run`` process, its output so far, and what its banner said."""

    process: subprocess.Popen[str]
    data_dir: Path
    ports: dict[str, int]
    output: list[str] = field(default_factory=list)
    api_url: str = ""
    key: str = ""
    # Empty when frontend/dist is not built (the banner says so instead of a URL).
    frontend_url: str = ""
    reader: threading.Thread | None = None  # copies the process's output into ``output``

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def aws_url(self) -> str:
        """The local AWS endpoint (moto), as the banner's ``local AWS`` line names it."""
        return f"http://127.0.0.1:{self.ports['aws']}"

    @property
    def database_url(self) -> str:
        """The system's PostgreSQL, as the banner's ``PostgreSQL`` line names it."""
        return f"postgresql+psycopg://herald@127.0.0.1:{self.ports['postgres']}/herald"

    @property
    def postmaster_pid_file(self) -> Path:
        return self.data_dir / "postgres" / "pgdata" / "postmaster.pid"

    def text(self) -> str:
        return "".join(self.output)

    def output_to_the_end(self, timeout: float = 10) -> str:
        """Everything the process wrote, once it has exited and its output is all read."""
        if self.reader is not None:
            self.reader.join(timeout)
        return self.text()

    def schedule(self, to: str, subject: str, send_at: datetime | None = None) -> str:
        body: dict[str, Any] = {"to": [to], "subject": subject, "text": f"Body of {subject}"}
        if send_at is not None:
            body["send_at"] = send_at.isoformat()
        answer = httpx.post(f"{self.api_url}/v1/messages", headers=self.headers, json=body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    def message(self, message_id: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.api_url}/v1/messages/{message_id}", headers=self.headers)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def status(self, message_id: str) -> str:
        return str(self.message(message_id)["status"])

    def messages(self) -> list[dict[str, Any]]:
        """The newest messages of the demo tenant, as the API lists them."""
        answer = httpx.get(
            f"{self.api_url}/v1/messages", headers=self.headers, params={"limit": 100}
        )
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    def post_message(self, body: Mapping[str, Any], key: str | None = None) -> httpx.Response:
        """``POST /v1/messages`` as the demo tenant, or as the tenant of ``key``."""
        return httpx.post(
            f"{self.api_url}/v1/messages",
            headers={"Authorization": f"Bearer {key or self.key}"},
            json=dict(body),
        )

    def add_tenant(self, name: str) -> str:
        """A new tenant in this system's database, and a key for it, as an operator makes them.

        The ``herald`` command, with this system's PostgreSQL as its only database setting.
        """
        environment = {
            name: value for name, value in os.environ.items() if not name.startswith("DATABASE_")
        } | {"DATABASE_URL": self.database_url}
        herald = find_tool("herald")
        for command in (["tenants", "create", name], ["keys", "create", name, "--name", "test"]):
            done = subprocess.run(
                [herald, *command],
                env=environment,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
        return done.stdout.strip()

    def mailbox(self) -> list[dict[str, Any]]:
        """The mailbox as ``herald-local mailbox --json`` prints it."""
        listed = subprocess.run(
            [
                find_tool("herald-local"),
                "mailbox",
                "--json",
                "--aws-port",
                str(self.ports["aws"]),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        emails: list[dict[str, Any]] = json.loads(listed.stdout)
        return emails


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, system: RunningSystem
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if system.process.poll() is not None:
            break
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; output:\n{system.text()[-6000:]}")


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def descendants_of(pid: int) -> set[int]:
    """Every process below ``pid``: its children, theirs, and so on."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children_of(pending.pop()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    try:
        return state.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # gone meanwhile
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def postmaster_pid(system: RunningSystem) -> int | None:
    try:
        return int(system.postmaster_pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def running_local_system(
    data_dir: Path,
    *extra_args: str,
    environment: Mapping[str, str] | None = None,
    ses_max_send_rate: float | None = None,
) -> Iterator[RunningSystem]:
    """``herald-local run`` on free ports in ``data_dir``, until the block ends.

    ``environment`` adds variables to the run's (the parts inherit them: the api's
    ``API_RATE_LIMIT_PER_SECOND``, say). ``ses_max_send_rate`` is ``--ses-max-send-rate``:
    the local SES refuses more recipients per second with SES's ``Throttling`` error, and
    the worker's ``SES_MAX_SEND_RATE`` is that rate (None: no limit, and 1000).

    Yields once the banner is printed. On the way out, a system still running gets Ctrl-C
    (SIGINT), and if it has not stopped within a minute, its process groups and its
    PostgreSQL are killed, so a failed test leaves nothing behind either.
    """
    ports = {name: free_port() for name in PART_NAMES}
    command = [find_tool("herald-local"), "run", "--data-dir", str(data_dir)]
    command += [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
    command += extra_args
    if ses_max_send_rate is not None:
        command += ["--ses-max-send-rate", f"{ses_max_send_rate:g}"]
    # As from a terminal: the runner leads its own session and process group.
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **(environment or {})},
    )
    system = RunningSystem(process=process, data_dir=data_dir, ports=ports)

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            system.output.append(line)

    reader = threading.Thread(target=collect, daemon=True)
    system.reader = reader
    reader.start()
    try:
        wait_for(
            lambda: "Herald is running" in system.text(),
            START_TIMEOUT_SECONDS,
            "the banner",
            system,
        )
        wait_for(lambda: KEY_PATTERN.search(system.text()), 5, "the API key", system)
        banner = system.text()
        system.key = KEY_PATTERN.search(banner)[1]  # type: ignore[index]
        system.api_url = API_PATTERN.search(banner)[1]  # type: ignore[index]
        if found := FRONTEND_PATTERN.search(banner):
            system.frontend_url = found[1]
        yield system
    finally:
        if process.poll() is None:
            parts = children_of(process.pid)
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                _kill_everything(system, parts)
        reader.join(timeout=5)


def _kill_everything(system: RunningSystem, parts: list[int]) -> None:
    # Each part leads a process group of its own; PostgreSQL is a daemon of pg_ctl's.
    for group in [*parts, system.process.pid]:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    system.process.wait()
    postmaster = postmaster_pid(system)
    if postmaster is not None and alive(postmaster):
        os.kill(postmaster, signal.SIGQUIT)  # PostgreSQL's immediate shutdown


def stop_and_check_nothing_is_left(system: RunningSystem) -> None:
    """Ctrl-C, as a person stops it: it exits 0 and no part, group or PostgreSQL is left."""
    runner = system.process
    parts = children_of(runner.pid)
    postmaster = postmaster_pid(system)

    runner.send_signal(signal.SIGINT)

    assert runner.wait(timeout=STOP_TIMEOUT_SECONDS) == 0, system.text()[-6000:]
    assert "PostgreSQL stopped" in system.output_to_the_end()
    assert [pid for pid in parts if alive(pid)] == []
    assert [pid for pid in parts if group_alive(pid)] == []
    assert postmaster is not None
    assert not alive(postmaster)
