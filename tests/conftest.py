"""Test-wide fixtures: AWS isolation, markers by folder, and required tools."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from herald_local.harness import ToolMissingError, find_tool

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER_BY_FOLDER = {"unit": "unit", "integration": "integration", "infra": "infra", "e2e": "e2e"}

# No test may reach a real AWS account, whatever the developer's shell holds.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        # Outside Lambda there is no X-Ray daemon to send traces to.
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
)
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Under a pipeline (HERALD_JUNIT_DIR set), write a JUnit report per interpreter.

    `make test` runs pytest twice (3.13, then the unit tests on 3.11): one --junitxml path
    in PYTEST_ADDOPTS would let the second run overwrite the first. Runs before the junitxml
    plugin reads the option; an explicit --junitxml wins.
    """
    junit_dir = os.environ.get("HERALD_JUNIT_DIR")
    if junit_dir and not config.option.xmlpath:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        config.option.xmlpath = str(Path(junit_dir) / f"junit-py{version}.xml")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder, so `-m unit` and friends select by layer."""
    for item in items:
        folder = Path(str(item.fspath)).relative_to(REPO_ROOT / "tests").parts[0]
        if folder in MARKER_BY_FOLDER:
            item.add_marker(MARKER_BY_FOLDER[folder])


def require_tool(name: str) -> str:
    """Return the path of an executable a test needs.

    Looked up as the local-system harness looks it up (``find_tool``: the project's
    virtualenvs first, then PATH). When it is missing, the test fails under CI (a missing
    dependency must never pass as a skip there) and is skipped with a clear reason on a
    developer's machine.
    """
    try:
        return find_tool(name)
    except ToolMissingError as missing:
        skip_or_fail(str(missing))


def skip_or_fail(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """A tool the local-system harness (herald_local.harness) misses, in a fixture or in the
    test itself (the same hook wraps the call): as ``require_tool``."""
    try:
        return (yield)
    except ToolMissingError as missing:
        skip_or_fail(str(missing))


pytest_runtest_call = pytest_runtest_setup
