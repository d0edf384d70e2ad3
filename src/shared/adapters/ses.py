"""Sends email through SES (API v2), and says in Herald's words why SES refused one.

Every email carries two SES message tags, so SES's own events (delivery, bounce, complaint,
published through the configuration set) come back to the Herald message they are about:
``herald-message-id`` (the task id, which is the message id) and ``herald-tenant-id``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from shared.adapters.client_errors import error_code, to_herald_error
from shared.errors import FailureCode, HeraldError, PermanentError, ThrottledError

if TYPE_CHECKING:
    from uuid import UUID

    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import (
        BodyTypeDef,
        MessageTagTypeDef,
        SendEmailRequestTypeDef,
    )

    from shared.contracts import EmailPayload

UTF8 = "UTF-8"
SENDER_REFUSED_CODES = frozenset({"MailFromDomainNotVerifiedException"})
# SES names a bad address only in its message ("Illegal address", "Missing final
# '@domain'", "Domain contains illegal character"...), under BadRequestException.
ADDRESS_WORDS = ("address", "domain")
MESSAGE_ID_TAG = "herald-message-id"
TENANT_ID_TAG = "herald-tenant-id"
# SES refuses a send over the account's quota with a throttling error: SESv1 and SMTP say
# "Throttling ... Maximum sending rate exceeded" or "Daily message quota exceeded", SESv2
# TooManyRequestsException; LimitExceededException is SESv2's "a limit was reached".
THROTTLE_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException", "LimitExceededException"}
)
THROTTLE_WORDS = ("sending rate exceeded", "message quota exceeded")


class SesEmailSender:
    """An ``EmailSender`` on SESv2 ``SendEmail`` with simple (text and/or HTML) content.

    Parameters
    ----------
    client
        A ``boto3.client("sesv2")``; the endpoint follows boto3's configuration
        (``AWS_ENDPOINT_URL`` points it at a local moto server).
    configuration_set
        An SES configuration set to send through (event publishing), if any.
    """

    def __init__(self, client: SESV2Client, *, configuration_set: str | None = None) -> None:
        self._client = client
        self._configuration_set = configuration_set

    def send(self, email: EmailPayload, *, task_id: UUID, tenant_id: UUID) -> str:
        """Send ``email`` and return SES's message id.

        ``task_id`` and ``tenant_id`` become the ``herald-message-id`` and
        ``herald-tenant-id`` tags, by which the worker matches SES's events to the message
        within its tenant.

        Raises
        ------
        PermanentError
            SES refused this email for good (``MessageRejected``, a bad request), with
            the ``FailureCode`` that says why in Herald's words.
        ThrottledError
            SES refused the send for the account's sending quota: pause, then retry.
        TransientError
            An outage or a configuration problem: retry later.
        """
        tags: list[MessageTagTypeDef] = [
            {"Name": MESSAGE_ID_TAG, "Value": str(task_id)},
            {"Name": TENANT_ID_TAG, "Value": str(tenant_id)},
        ]
        body: BodyTypeDef = {}
        if email.text:
            body["Text"] = {"Data": email.text, "Charset": UTF8}
        if email.html:
            body["Html"] = {"Data": email.html, "Charset": UTF8}
        request: SendEmailRequestTypeDef = {
            "FromEmailAddress": email.sender,
            "Destination": {
                "ToAddresses": email.to,
                "CcAddresses": email.cc,
                "BccAddresses": email.bcc,
            },
            "ReplyToAddresses": email.reply_to,
            "Content": {
                "Simple": {"Subject": {"Data": email.subject, "Charset": UTF8}, "Body": body}
            },
            # The tags tie SES's own events (bounces, complaints) back to the Herald message.
            "EmailTags": tags,
        }
        if self._configuration_set:
            request["ConfigurationSetName"] = self._configuration_set
        try:
            response = self._client.send_email(**request)
        except (ClientError, BotoCoreError) as error:
            raise send_error(error) from error
        return response["MessageId"]


def send_error(error: ClientError | BotoCoreError) -> HeraldError:
    """What a failed ``SendEmail`` means to Herald: throttled, transient, or permanent with
    its code."""
    herald_error = to_herald_error(error, "SES SendEmail")
    if isinstance(error, ClientError) and is_throttle(error):
        return ThrottledError(str(herald_error))
    if not isinstance(herald_error, PermanentError) or not isinstance(error, ClientError):
        return herald_error
    return PermanentError(str(herald_error), code=failure_code(error))


def is_throttle(error: ClientError) -> bool:
    """Whether SES refused a send for the account's sending quota (rate or daily)."""
    if error_code(error) in THROTTLE_CODES:
        return True
    message = str(error.response.get("Error", {}).get("Message", "")).lower()
    return any(words in message for words in THROTTLE_WORDS)


def failure_code(error: ClientError) -> FailureCode:
    """The ``FailureCode`` of an SES error that is permanent."""
    code = error_code(error)
    if code in SENDER_REFUSED_CODES:
        return FailureCode.SENDER_NOT_ALLOWED
    message = str(error.response.get("Error", {}).get("Message", "")).lower()
    if code == "BadRequestException" and any(word in message for word in ADDRESS_WORDS):
        return FailureCode.INVALID_ADDRESS
    return FailureCode.REJECTED
