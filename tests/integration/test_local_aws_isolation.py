"""Local mode never reaches real AWS, whatever the developer's shell holds."""

from __future__ import annotations

import os

import pytest

from herald_local.aws_isolation import (
    FAKE_CREDENTIALS,
    RealAwsRefusedError,
    isolated_environment,
    use_only_local_aws,
)

SHELL = {
    "PATH": "/usr/bin",
    "AWS_PROFILE": "prod",
    "AWS_ACCESS_KEY_ID": "AKIAREALKEY",
    "AWS_SECRET_ACCESS_KEY": "real-secret",
    "AWS_SESSION_TOKEN": "real-token",
    "AWS_ENDPOINT_URL_SES": "https://email.eu-west-1.amazonaws.com",
}


@pytest.fixture
def process_environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A copy of os.environ for the test to change, restored afterwards."""
    copy = dict(os.environ)
    monkeypatch.setattr(os, "environ", copy)
    return copy


def test_the_shells_aws_settings_are_dropped_and_every_client_goes_to_the_local_endpoint(
    process_environment: dict[str, str],
) -> None:
    # Given a shell with a real profile, real keys and a per-service endpoint
    environment = isolated_environment(SHELL, "http://127.0.0.1:4566")

    # Then they are all dropped, and named, and fake credentials take their place
    assert environment.dropped == tuple(sorted(name for name in SHELL if name.startswith("AWS_")))
    assert environment.variables["PATH"] == "/usr/bin"
    assert environment.variables["AWS_ACCESS_KEY_ID"] == FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"]
    assert "AWS_PROFILE" not in environment.variables
    assert "AWS_ENDPOINT_URL_SES" not in environment.variables
    # And the check passes: every client resolves the local endpoint
    use_only_local_aws(environment.variables)
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"


def test_a_client_that_would_reach_aws_is_refused(process_environment: dict[str, str]) -> None:
    # Given the local environment, with something pointing SESv2 at AWS after all
    environment = isolated_environment(SHELL, "http://127.0.0.1:4566").variables
    environment["AWS_ENDPOINT_URL_SESV2"] = "https://email.us-east-1.amazonaws.com"

    # When it is checked, Then the local system refuses to start, naming the service
    with pytest.raises(RealAwsRefusedError, match="sesv2 client would talk to https://email"):
        use_only_local_aws(environment)


def test_an_endpoint_off_the_loopback_address_is_refused() -> None:
    with pytest.raises(RealAwsRefusedError, match="loopback"):
        isolated_environment(SHELL, "https://sqs.us-east-1.amazonaws.com")
