"""wrk as a load generator in its own process: its result line and its own CPU time."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.support.processes import stop

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_messages.lua"
WRK_TIMEOUT = "5s"  # a request slower than this counts as a timeout error
WRK_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class WrkRun:
    """One finished wrk run: what ``done()`` printed, and wrk's CPU and wall time."""

    result: dict[str, float]
    cpu_seconds: float
    wall_seconds: float

    @property
    def errors(self) -> int:
        """Socket errors, timeouts and responses with an unexpected status."""
        kinds = ("connect", "read", "write", "status", "timeout", "unexpected")
        return sum(int(self.result[kind]) for kind in kinds)


def wrk_command(
    base_url: str,
    mode: str,
    data: Path,
    api_key: str,
    *,
    seconds: float,
    concurrency: int,
    threads: int = 1,
) -> list[str]:
    """wrk with keep-alive connections, running ``wrk_messages.lua`` in ``mode``; wrk takes
    whole seconds only."""
    return [
        "wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
        "--timeout", WRK_TIMEOUT, "-s", str(WRK_SCRIPT), base_url, "--", mode, str(data), api_key,
    ]  # fmt: skip


def run_wrk(command: list[str], seconds: float) -> WrkRun:
    """Run wrk to completion (bounded), returning its result and CPU time (wait4's rusage)."""
    started = time.monotonic()
    deadline = started + seconds + WRK_GRACE_SECONDS
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
                raise TimeoutError(f"wrk still running after {seconds + WRK_GRACE_SECONDS:.0f}s")
            time.sleep(0.02)
    finally:
        if process.returncode is None:
            stop(process, group=False)
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
