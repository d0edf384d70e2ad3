"""The SES sender on moto: what reaches SES, and how its refusals are classified."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from mypy_boto3_sesv2 import SESV2Client

from shared.adapters.ses import SesEmailSender
from shared.errors import PermanentError, ThrottledError, TransientError
from tests.support.fakes import make_email


@pytest.fixture
def sesv2() -> Iterator[SESV2Client]:
    with mock_aws():
        client = boto3.client("sesv2")
        client.create_email_identity(EmailIdentity="example.com")
        yield client


def sent_messages() -> list[Any]:
    return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


def test_text_email_reaches_ses_with_its_recipients(sesv2: SESV2Client) -> None:
    # Given a text email to, cc and bcc
    email = make_email(
        to=["a@example.org"], cc=["b@example.org"], bcc=["c@example.org"], subject="Hi"
    )

    # When it is sent
    message_id = SesEmailSender(sesv2).send(email, task_id=uuid4(), tenant_id=uuid4())

    # Then SES holds exactly it, under the returned id
    [message] = sent_messages()
    assert message.id == message_id
    assert message.source == "herald@example.com"
    assert message.subject == "Hi"
    assert message.body == "Hello from Herald."
    assert message.destinations == {
        "ToAddresses": ["a@example.org"],
        "CcAddresses": ["b@example.org"],
        "BccAddresses": ["c@example.org"],
    }


def test_html_and_text_are_both_sent(sesv2: SESV2Client) -> None:
    # Given a request recorder on the client
    requests: list[dict[str, Any]] = []
    sesv2.meta.events.register(
        "provide-client-params.sesv2.SendEmail", lambda params, **_: requests.append(params)
    )

    # When an email with both bodies is sent
    SesEmailSender(sesv2).send(
        make_email(text="plain", html="<p>rich</p>", reply_to=["r@example.org"]),
        task_id=uuid4(),
        tenant_id=uuid4(),
    )

    # Then SES got a simple message with both parts, UTF-8, and the reply-to
    body = requests[0]["Content"]["Simple"]["Body"]
    assert body == {
        "Text": {"Data": "plain", "Charset": "UTF-8"},
        "Html": {"Data": "<p>rich</p>", "Charset": "UTF-8"},
    }
    assert requests[0]["ReplyToAddresses"] == ["r@example.org"]
    assert sent_messages()[0].body == "<p>rich</p>"


def test_email_is_tagged_with_its_message_and_tenant_ids(sesv2: SESV2Client) -> None:
    # Given a request recorder on the client
    requests: list[dict[str, Any]] = []
    sesv2.meta.events.register(
        "provide-client-params.sesv2.SendEmail", lambda params, **_: requests.append(params)
    )
    task_id, tenant_id = uuid4(), uuid4()

    # When an email is sent through a configuration set
    SesEmailSender(sesv2, configuration_set="herald-events").send(
        make_email(), task_id=task_id, tenant_id=tenant_id
    )

    # Then SES got the two tags its events come back with, and the configuration set
    assert requests[0]["EmailTags"] == [
        {"Name": "herald-message-id", "Value": str(task_id)},
        {"Name": "herald-tenant-id", "Value": str(tenant_id)},
    ]
    assert requests[0]["ConfigurationSetName"] == "herald-events"


def test_email_sent_without_a_configuration_set_names_none(sesv2: SESV2Client) -> None:
    requests: list[dict[str, Any]] = []
    sesv2.meta.events.register(
        "provide-client-params.sesv2.SendEmail", lambda params, **_: requests.append(params)
    )

    SesEmailSender(sesv2).send(make_email(), task_id=uuid4(), tenant_id=uuid4())

    assert "ConfigurationSetName" not in requests[0]


def ses_answers(sesv2: SESV2Client, status: int, code: str, message: str) -> None:
    """Make SES answer every SendEmail with ``status`` and the error ``code``/``message``."""

    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        response = AWSResponse("https://email.us-east-1.amazonaws.com", status, HTTPHeaders(), None)
        return response, {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    # A before-call handler may answer in SES's place; the stubs type it as returning None.
    sesv2.meta.events.register("before-call.sesv2.SendEmail", answer)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (429, "TooManyRequestsException", "Maximum sending rate exceeded."),
        (400, "Throttling", "Maximum sending rate exceeded."),
        (400, "ThrottlingException", "Daily message quota exceeded."),
        (400, "LimitExceededException", "Too many requests."),
        (400, "MessageRejected", "Throttling failure: Maximum sending rate exceeded"),
    ],
)
def test_sending_quota_refusal_is_a_throttled_error(
    sesv2: SESV2Client, status: int, code: str, message: str
) -> None:
    # Given SES refuses sends over the account's quota
    ses_answers(sesv2, status, code, message)

    # When an email is sent, Then the refusal is a throttle (retried, never a failed email)
    with pytest.raises(ThrottledError, match=f"SES SendEmail failed: {code}"):
        SesEmailSender(sesv2).send(make_email(), task_id=uuid4(), tenant_id=uuid4())


def test_an_outage_is_transient_but_not_a_throttle(sesv2: SESV2Client) -> None:
    ses_answers(sesv2, 503, "ServiceUnavailable", "Service is unavailable.")

    with pytest.raises(TransientError) as raised:
        SesEmailSender(sesv2).send(make_email(), task_id=uuid4(), tenant_id=uuid4())

    assert not isinstance(raised.value, ThrottledError)


def test_unverified_sender_is_a_permanent_error(sesv2: SESV2Client) -> None:
    # Given a sender whose identity SES does not know
    email = make_email(sender="someone@unverified.org")

    # When it is sent, Then SES's MessageRejected becomes a permanent error
    with pytest.raises(PermanentError, match="SES SendEmail failed: MessageRejected"):
        SesEmailSender(sesv2).send(email, task_id=uuid4(), tenant_id=uuid4())
    assert sent_messages() == []
