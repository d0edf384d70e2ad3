"""The api's limits as settings: the documented defaults, and bad values named at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ecs_service.api.app import admission_capacity
from ecs_service.settings import ApiSettings, DatabaseSettings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("API_RATE_LIMIT_PER_SECOND", "API_RATE_LIMIT_BURST", "API_MAX_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SENDER_EMAIL", "herald@example.com")


def test_each_key_may_send_50_requests_a_second_with_bursts_of_100_by_default() -> None:
    settings = ApiSettings()
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (50, 100)
    assert settings.max_connections == 512


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("API_RATE_LIMIT_PER_SECOND", "0"),
        ("API_RATE_LIMIT_BURST", "0"),
        ("API_MAX_CONNECTIONS", "0"),
    ],
)
def test_a_limit_of_nothing_is_refused_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        ApiSettings()


def test_the_admission_gate_has_a_slot_per_pooled_connection_but_one() -> None:
    # One connection is left for /readyz, which is not admitted through the gate.
    url = "postgresql://herald@127.0.0.1/herald"
    assert admission_capacity(DatabaseSettings(url=url, pool_size=10, max_overflow=5)) == 14
    assert admission_capacity(DatabaseSettings(url=url, pool_size=1, max_overflow=0)) == 1
