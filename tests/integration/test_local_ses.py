"""The local SES, as botocore sees it: moto behind the local endpoint's SES behaviour.

Each test starts its own local AWS endpoint on a free port (in this process) and talks to
it with a real SESv2 client, so what is checked is what the task runner's client gets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from herald_local.local_aws import LocalAwsEndpoint

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

SENDER = "herald@example.com"


def client_options(endpoint: LocalAwsEndpoint) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint.url,
        "region_name": "us-east-1",
        "aws_access_key_id": "herald-local",
        "aws_secret_access_key": "herald-local",
        # One attempt: the test sees SES's answer, not botocore's retries of it.
        "config": Config(retries={"max_attempts": 1, "mode": "standard"}),
    }


@pytest.fixture
def rate_limited_ses() -> Iterator[SESV2Client]:
    """The local SES at one recipient per second, its sender's domain verified."""
    endpoint = LocalAwsEndpoint(0, ses_max_send_rate=1).start()
    sesv2: SESV2Client = boto3.client("sesv2", **client_options(endpoint))
    sesv2.create_email_identity(EmailIdentity="example.com")
    yield sesv2
    endpoint.stop()


def send(sesv2: SESV2Client, to: str) -> str:
    return sesv2.send_email(
        FromEmailAddress=SENDER,
        Destination={"ToAddresses": [to]},
        Content={"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "Hi"}}}},
    )["MessageId"]


def test_a_send_over_the_maximum_send_rate_is_a_throttling_client_error(
    rate_limited_ses: SESV2Client,
) -> None:
    # Given the local SES at one recipient per second, and one email just sent
    send(rate_limited_ses, "first@example.org")

    # When a second email is sent within the same second
    with pytest.raises(ClientError) as refused:
        send(rate_limited_ses, "second@example.org")

    # Then botocore raises SES's throttling error, as SES answers it
    error = refused.value.response
    assert error["Error"]["Code"] == "Throttling"
    assert error["Error"]["Message"] == "Maximum sending rate exceeded."
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
