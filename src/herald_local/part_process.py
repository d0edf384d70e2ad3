"""One part of the local system run as a child process: started, logged, stopped.

Each part runs in a process group of its own, so:

- Ctrl-C in the terminal reaches only the runner, which stops the parts in order
  (api first, PostgreSQL last) instead of all at once;
- stopping a part signals its whole group, so nothing it started is left behind.

Each part also starts through ``herald_local.parent_watch``, so on Linux it gets a
SIGTERM should the runner die without stopping it (``kill -9``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from herald_local.log_lines import Terminal

from herald_local.parent_watch import PARENT_PID_VARIABLE


class PartProcess:
    """A child process whose output goes to the terminal with the part's prefix.

    Parameters
    ----------
    name
        The prefix of its log lines (``api``, ``worker``, ``runner``).
    command
        What to run.
    environment
        Its whole environment (nothing is inherited besides).
    ready_when
        Text of an output line that means the part is ready; None if another check
        (an HTTP probe) decides.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        environment: Mapping[str, str],
        terminal: Terminal,
        cwd: Path,
        ready_when: str | None = None,
    ) -> None:
        self.name = name
        self._command = list(command)
        self._environment = dict(environment)
        self._terminal = terminal
        self._cwd = cwd
        self._ready_when = ready_when
        self.ready = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._pump: threading.Thread | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._process.pid

    def start(self) -> PartProcess:
        # Only the main thread may start parts: Linux's parent-death signal fires when
        # the *thread* that forked the child ends.
        assert threading.current_thread() is threading.main_thread()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "herald_local.parent_watch", "--", *self._command],
            cwd=self._cwd,
            env=self._environment | {PARENT_PID_VARIABLE: str(os.getpid())},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            process_group=0,
        )
        self._pump = threading.Thread(target=self._forward_output, name=f"{self.name}-log")
        self._pump.start()
        return self

    def exit_code(self) -> int | None:
        """None while it runs."""
        return None if self._process is None else self._process.poll()

    def terminate(self) -> None:
        """Ask the part's process group to stop (SIGTERM), without waiting."""
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the part's process group (a second Ctrl-C)."""
        self._signal_group(signal.SIGKILL)

    def wait_stopped(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s; then SIGKILL the group if it still runs. The exit code."""
        if self._process is None:
            return None
        try:
            code = self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._terminal.write("herald", f"{self.name} did not stop in {timeout:.0f} s: killed")
            self._signal_group(signal.SIGKILL)
            code = self._process.wait()
        # Anything the part started in its group and left behind goes too.
        self._signal_group(signal.SIGKILL)
        if self._pump is not None:
            self._pump.join(timeout=5)
        return code

    def stop(self, timeout: float) -> int | None:
        self.terminate()
        return self.wait_stopped(timeout)

    def _signal_group(self, signum: int) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def _forward_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._terminal.write(self.name, line)
            if self._ready_when is not None and self._ready_when in line:
                self.ready.set()
