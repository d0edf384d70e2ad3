"""Unit tests: no network at all; AWS only through in-process moto (``mock_aws``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_socket import disable_socket, enable_socket


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    """Any socket a unit test opens fails the test: nothing may reach a real service."""
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()
