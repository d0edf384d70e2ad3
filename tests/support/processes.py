"""``herald api`` and ``herald worker`` as ECS runs them, as child processes of a test.

``herald_process`` writes the output to a file rather than a pipe: a busy process must
never block on a pipe nobody reads, and the file is there to read when an assertion
fails. ``spawn`` pipes it, for a test that reads it as it comes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.support.waits import wait_for


@contextmanager
def herald_process(
    command: str, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m ecs_service <command>``; killed at the end if it is still running."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "ecs_service", command],
            cwd=REPO_ROOT,
            env=os.environ | env | {"PYTHONPATH": f"{REPO_ROOT / 'src'}:{REPO_ROOT}"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def tail(log: Path, lines: int = 30) -> str:
    """The end of a process's output, for an assertion message."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def wait_watching(condition: Callable[[], object], timeout: float, what: str, log: Path) -> None:
    """``tests.support.waits.wait_for``; on a timeout, the latest output joins the error."""
    try:
        wait_for(condition, timeout, what)
    except AssertionError as error:
        raise AssertionError(f"{error}; output:\n{tail(log)}") from None


def spawn(command: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``python -m ecs_service <command>``, its output (stderr too) on a text pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "ecs_service", command],
        cwd=REPO_ROOT,
        env=os.environ | env | {"PYTHONPATH": f"{REPO_ROOT / 'src'}:{REPO_ROOT}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
