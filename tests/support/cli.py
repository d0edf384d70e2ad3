"""The ``herald`` command run in-process, as a test calls it."""

from __future__ import annotations

import subprocess

import pytest

from ecs_service.cli import main
from tests.conftest import REPO_ROOT, require_tool


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``herald <argv>``: its exit code, what it printed, and its error (a SystemExit's text)."""
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, str(stop.code) if not isinstance(stop.code, int) else ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def help_of(*command: str) -> str:
    """What ``herald <command> --help`` prints, run as an operator runs it (no settings)."""
    return subprocess.run(
        [require_tool("herald"), *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
