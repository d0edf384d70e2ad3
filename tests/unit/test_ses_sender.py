"""The SES sender on moto: what reaches SES, and how its refusals are classified."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from mypy_boto3_sesv2 import SESV2Client

from shared.adapters.ses import SesEmailSender
from shared.errors import PermanentError
from tests.fakes import make_email


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
    message_id = SesEmailSender(sesv2).send(email, task_id=uuid4())

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
        make_email(text="plain", html="<p>rich</p>", reply_to=["r@example.org"]), task_id=uuid4()
    )

    # Then SES got a simple message with both parts, UTF-8, and the reply-to
    body = requests[0]["Content"]["Simple"]["Body"]
    assert body == {
        "Text": {"Data": "plain", "Charset": "UTF-8"},
        "Html": {"Data": "<p>rich</p>", "Charset": "UTF-8"},
    }
    assert requests[0]["ReplyToAddresses"] == ["r@example.org"]
    assert sent_messages()[0].body == "<p>rich</p>"


def test_email_is_tagged_with_its_task_id(sesv2: SESV2Client) -> None:
    requests: list[dict[str, Any]] = []
    sesv2.meta.events.register(
        "provide-client-params.sesv2.SendEmail", lambda params, **_: requests.append(params)
    )
    task_id = uuid4()

    SesEmailSender(sesv2, configuration_set="herald-events").send(make_email(), task_id=task_id)

    assert requests[0]["EmailTags"] == [{"Name": "herald_task_id", "Value": str(task_id)}]
    assert requests[0]["ConfigurationSetName"] == "herald-events"


def test_unverified_sender_is_a_permanent_error(sesv2: SESV2Client) -> None:
    # Given a sender whose identity SES does not know
    email = make_email(sender="someone@unverified.org")

    # When it is sent, Then SES's MessageRejected becomes a permanent error
    with pytest.raises(PermanentError, match="SES SendEmail failed: MessageRejected"):
        SesEmailSender(sesv2).send(email, task_id=uuid4())
    assert sent_messages() == []
