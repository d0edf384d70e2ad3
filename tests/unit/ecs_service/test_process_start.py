"""How the backend's processes start: the ``herald`` command and the api's uvicorn
processes share their start-up (settings, tracing) through ``ecs_service.startup``, and
neither imports the other (issue 16: they imported each other)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ecs_service.settings import ApiSettings
from ecs_service.startup import ConfigurationError, read_settings
from tests.conftest import REPO_ROOT


def test_the_api_a_uvicorn_process_imports_does_not_import_the_command() -> None:
    # Given a fresh interpreter
    code = "import sys\nimport ecs_service.api.asgi\nprint('ecs_service.cli' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{REPO_ROOT}"}

    # When it imports the module uvicorn loads the api from
    imported = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )

    # Then the herald command's module was not imported with it
    assert imported.stdout.strip() == "False"


def test_a_missing_setting_stops_the_process_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an environment without SENDER_EMAIL
    monkeypatch.delenv("SENDER_EMAIL", raising=False)

    # When the api's settings are read
    with pytest.raises(ConfigurationError) as stopped:
        read_settings(ApiSettings)

    # Then the process stops with one line that names the variable
    message = str(stopped.value.code)
    assert message.startswith("herald: invalid configuration: ")
    assert "SENDER_EMAIL" in message
    assert "\n" not in message
