"""The task runner's settings: the sender in the form SES needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.settings import TaskRunnerSettings

if TYPE_CHECKING:
    import pytest


def test_an_internationalized_sender_domain_is_read_as_punycode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given SENDER_EMAIL with a Unicode domain, as a person may write it in samconfig.toml
    for name, value in {
        "RESULT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/results",
        "TASK_DLQ_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/tasks-dlq",
        "IDEMPOTENCY_TABLE": "herald-idempotency",
        "SENDER_EMAIL": "herald@bücher.example",
    }.items():
        monkeypatch.setenv(name, value)

    # When the runner reads its settings
    settings = TaskRunnerSettings.from_environment()

    # Then the sender is the ASCII form the api stores and SES accepts
    assert settings.sender_email == "herald@xn--bcher-kva.example"
