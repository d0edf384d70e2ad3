"""Child processes of a benchmark: their CPU time, stopping them, and the run's deadline.

CPU time comes from ``/proc`` (Linux): a process's user + system ticks, a process tree's
sum, and the machine's busy time, so a benchmark can say what saturated and how much of
the machine other work took ("other CPU": noise on a shared machine).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROCESS_STOP_SECONDS = 10.0


def cpu_seconds(pid: int, *, children: bool = False) -> float:
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


def _parents() -> dict[int, int]:
    """Every live process's parent pid."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    return parents


def descendants(pid: int) -> set[int]:
    """The processes below ``pid``: children, theirs, and so on."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid``, its live descendants and the children it reaped: e.g.
    PostgreSQL's postmaster with its backends, or uvicorn's supervisor with its workers."""
    return cpu_seconds(pid, children=True) + sum(cpu_seconds(d) for d in descendants(pid))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs; steal included), from boot."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def postmaster_pid(pgdata: Path) -> int:
    """The pid of the PostgreSQL server whose data directory is ``pgdata``."""
    return int((pgdata / "postmaster.pid").read_text().split()[0])


def stop(process: subprocess.Popen[Any], *, group: bool) -> None:
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


def tail(path: Path, characters: int = 3_000) -> str:
    """The end of a log file ('' if unreadable)."""
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-characters:]
    return ""


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


def run_bounded(run: Callable[[], None], budget_seconds: float) -> int:
    """Run ``run`` under an overall deadline; Ctrl-C and SIGTERM end it through its cleanup.

    Returns the exit code: 0, or 130 after Ctrl-C. A deadline raises ``TimeoutError``.
    """
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)
    previous = {signum: signal.getsignal(signum) for signum in handled}
    for signum in handled:
        signal.signal(signum, _raise_on_signal)
    signal.alarm(max(1, int(budget_seconds)))
    started = time.monotonic()
    try:
        run()
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
        for signum, handler in previous.items():  # e.g. when called from a test
            signal.signal(signum, handler)
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0
