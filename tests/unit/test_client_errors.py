"""Provider errors become Herald's own: permanent only when the request itself is bad."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from shared.adapters.client_errors import to_herald_error
from shared.errors import PermanentError, TransientError


def client_error(code: str, message: str = "details", status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "SendEmail",
    )


@pytest.mark.parametrize(
    "code",
    [
        "MessageRejected",
        "BadRequestException",
        "MailFromDomainNotVerifiedException",
        "InvalidParameterValue",
    ],
)
def test_invalid_request_codes_are_permanent(code: str) -> None:
    assert isinstance(to_herald_error(client_error(code), "SES SendEmail"), PermanentError)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("TooManyRequestsException", 429),
        ("Throttling", 400),
        ("LimitExceededException", 400),
        ("ServiceUnavailable", 503),
        ("InternalFailure", 500),
        ("SendingPausedException", 400),
        ("AccessDeniedException", 403),
        ("AWS.SimpleQueueService.NonExistentQueue", 400),
        ("SomethingNewAwsInvented", 400),
    ],
)
def test_throttling_outages_configuration_and_unknown_codes_are_transient(
    code: str, status: int
) -> None:
    assert isinstance(
        to_herald_error(client_error(code, status=status), "SES SendEmail"), TransientError
    )


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="https://email.us-east-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com"),
    ],
)
def test_connection_failures_are_transient(error: Exception) -> None:
    assert isinstance(to_herald_error(error, "SES SendEmail"), TransientError)  # type: ignore[arg-type]


def test_message_names_the_operation_code_and_provider_message() -> None:
    error = to_herald_error(
        client_error("MessageRejected", "Email address is not verified."), "SES SendEmail"
    )
    assert str(error) == "SES SendEmail failed: MessageRejected: Email address is not verified."
