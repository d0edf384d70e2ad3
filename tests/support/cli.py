"""The ``herald`` command run in-process, as a test calls it."""

from __future__ import annotations

import pytest

from ecs_service.cli import main


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
