"""Map botocore errors to Herald's own: permanent (never retry) or transient (retry).

Only a request that is itself invalid is permanent. Everything else is transient,
including configuration mistakes such as ``AccessDenied`` or a missing queue: those
messages are retried, land in the dead-letter queue where an alarm fires, and can be
redriven once the configuration is fixed, instead of being marked failed for good.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import HeraldError, PermanentError, TransientError

PERMANENT_ERROR_CODES = frozenset(
    {
        # SESv2
        "MessageRejected",
        "BadRequestException",
        "MailFromDomainNotVerifiedException",
        # SQS and the AWS query protocol
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "InvalidMessageContents",
        "MissingParameter",
        "ValidationError",
    }
)


def error_code(error: ClientError) -> str:
    """The AWS error code of a ``ClientError`` (``"Unknown"`` if the response has none)."""
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


def to_herald_error(error: ClientError | BotoCoreError, operation: str) -> HeraldError:
    """Translate a botocore error into ``PermanentError`` or ``TransientError``.

    Parameters
    ----------
    error
        What botocore raised: a service's ``ClientError`` or a ``BotoCoreError`` such as a
        connection failure (always transient).
    operation
        What was being done, for the message (``"SES SendEmail"``).
    """
    if isinstance(error, BotoCoreError):
        return TransientError(f"{operation} failed: {error}")
    code = error_code(error)
    message = error.response.get("Error", {}).get("Message", "")
    text = f"{operation} failed: {code}: {message}".rstrip(": ")
    if code in PERMANENT_ERROR_CODES:
        return PermanentError(text)
    return TransientError(text)
