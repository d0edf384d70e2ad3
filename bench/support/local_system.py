"""The whole local system (``herald-local run``) for a benchmark: started in a folder of its
own on free ports, its banner read (API URL and key), stopped with Ctrl-C as a person
stops it, and killed (every part's process group, then PostgreSQL) if it does not stop.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.support.processes import descendants
from bench.support.servers import REPO_DIR

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

KEY_PATTERN = re.compile(r"API key\s+(hrld_\S+)")
API_PATTERN = re.compile(r"API\s+(http://127\.0\.0\.1:\d+)")
START_SECONDS = 180.0
STOP_SECONDS = 60.0


@dataclass
class LocalSystem:
    """The running system: its runner process, ports, banner values and output so far."""

    process: subprocess.Popen[str]
    data_dir: Path
    ports: dict[str, int]
    output: list[str] = field(default_factory=list)
    api_url: str = ""
    api_key: str = ""

    @property
    def aws_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['aws']}"

    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg://herald@127.0.0.1:{self.ports['postgres']}/herald"

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid_file = self.data_dir / "postgres" / "pgdata" / "postmaster.pid"
            return int(pid_file.read_text().split()[0])
        return None

    def text(self) -> str:
        return "".join(self.output)


@contextlib.contextmanager
def running_local_system(data_dir: Path) -> Iterator[LocalSystem]:
    """``herald-local run`` until the block ends; yields once its banner is printed."""
    from herald_local.postgres import free_port
    from herald_local.system import PORTS

    ports = {name: free_port() for name in PORTS}
    command = [sys.executable, "-m", "herald_local", "run", "--data-dir", str(data_dir)]
    command += [arg for name, port in ports.items() for arg in (PORTS[name].flag, str(port))]
    process = subprocess.Popen(
        command,
        cwd=REPO_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # as from a terminal: it leads its own group
    )
    system = LocalSystem(process=process, data_dir=data_dir, ports=ports)

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            system.output.append(line)

    reader = threading.Thread(target=collect, name="local-system-output", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_SECONDS
        while not (KEY_PATTERN.search(system.text()) and API_PATTERN.search(system.text())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"herald-local run did not start:\n{system.text()[-5000:]}")
            time.sleep(0.2)
        banner = system.text()
        system.api_key = KEY_PATTERN.search(banner)[1]  # type: ignore[index]
        system.api_url = API_PATTERN.search(banner)[1]  # type: ignore[index]
        yield system
    finally:
        _stop(system)
        reader.join(timeout=5)


def _stop(system: LocalSystem) -> None:
    process = system.process
    if process.poll() is not None:
        return
    groups = [pid for pid in descendants(process.pid) if _leads_group(pid)]
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=STOP_SECONDS)
        return
    except subprocess.TimeoutExpired:
        pass
    # Each part leads a process group of its own; PostgreSQL is a daemon of pg_ctl's.
    for group in [*groups, process.pid]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    process.wait(timeout=STOP_SECONDS)
    postmaster = system.postmaster_pid()
    if postmaster is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(postmaster, signal.SIGQUIT)  # PostgreSQL's immediate shutdown


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False
