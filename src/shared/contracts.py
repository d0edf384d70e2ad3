"""The task contract between the backend, the task queue and the task runner.

These models are DESIGN.md section 3 in code: the task envelope (the SQS body of the
task queue), the email payload of the ``email.send`` kind, and the task result (the
SQS body of the result queue). Everything that crosses a queue is validated here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, Self, TypeVar
from uuid import UUID

import email_validator
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from shared.errors import RESULT_FAILURE_CODES, FailureCode

if TYPE_CHECKING:
    from collections.abc import Mapping

SQS_MAX_MESSAGE_BYTES = 262_144
# Message attributes (trace context) count towards the same SQS limit: keep room for them.
MESSAGE_ATTRIBUTES_ALLOWANCE_BYTES = 4_096
MAX_TASK_BODY_BYTES = SQS_MAX_MESSAGE_BYTES - MESSAGE_ATTRIBUTES_ALLOWANCE_BYTES
MAX_RECIPIENTS = 50  # SES's limit across To, Cc and Bcc
MAX_REPLY_TO = 10
MAX_SUBJECT_LENGTH = 998  # RFC 5322's line length limit
# Longer input is refused before it is parsed (pydantic's EmailStr used the same bound).
MAX_ADDRESS_INPUT_LENGTH = 2_048
MAX_RESULT_ERROR_LENGTH = 2_000
# SES message ids are about 60 printable ASCII characters; the messages table's
# provider_message_id column (String(200)) holds any id within this bound.
MAX_PROVIDER_MESSAGE_ID_LENGTH = 128
PROVIDER_MESSAGE_ID_PATTERN = r"^[!-~]+$"  # printable ASCII, no space
# The shape of any failure code, known or not: a newer task runner's code is read as
# FailureCode.SEND_FAILED, anything else makes the result invalid.

TASK_CONTRACT_VERSION: Literal[1] = 1
EMAIL_SEND: str = "email.send"

PayloadT = TypeVar("PayloadT")


class MessageStatus(StrEnum):
    """Where a message is in its life: scheduled -> queued -> sent | failed, or canceled.

    A sent message then follows SES's delivery feedback (issue 14): ``delivered`` when
    every recipient was delivered, ``bounced`` when any bounced, ``complained`` when any
    complained (the strongest wins), or ``failed`` when SES rejected it after accepting it.
    """

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    CANCELED = "canceled"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


# Parsing an address costs ~30 µs; the same recipients come back request after request.
# Only valid addresses are kept (a refusal raises), at most this many, least recent out.
@lru_cache(maxsize=4_096)
def _ascii_address(value: str) -> str:
    """An email address as Amazon SES sends it: the domain in ASCII (punycode).

    SES takes 7-bit ASCII addresses only, so a non-ASCII local part (which would need
    SMTPUTF8) is refused, and an internationalized domain is stored and sent as its
    ``xn--`` form. Parsed once, by email-validator, as pydantic's ``EmailStr`` did
    (display names such as ``Ann <ann@example.org>`` keep only the address).
    """
    if len(value) > MAX_ADDRESS_INPUT_LENGTH:
        raise ValueError(
            f"value is not a valid email address: longer than {MAX_ADDRESS_INPUT_LENGTH} characters"
        )
    try:
        parsed = email_validator.validate_email(
            value.strip(),
            check_deliverability=False,
            allow_smtputf8=False,
            allow_display_name=True,
        )
    except email_validator.EmailNotValidError as error:
        raise ValueError(f"value is not a valid email address: {error}") from error
    # Always set when allow_smtputf8 is False: the address is all ASCII.
    return parsed.ascii_email or parsed.normalized


EmailAddress = Annotated[
    str,
    AfterValidator(_ascii_address),
    WithJsonSchema({"type": "string", "format": "email"}),
]
"""An email address SES can send to, normalized to ASCII (see ``_ascii_address``)."""


def suppression_key(address: str) -> str:
    """The form in which a tenant's suppression list (and delivery feedback) keys an address:
    its ASCII form, as the api stores it, lower-cased.

    Raises
    ------
    ValueError
        ``address`` is not an email address SES can send to.
    """
    return _ascii_address(address).lower()


# Unicode category Cc (C0, DEL, C1: NUL, tab, CR, LF, VT, FF, U+0085 …), the line and
# paragraph separators, and lone surrogates (which cannot be encoded as UTF-8; pydantic
# refuses them first in a length-bounded str, this keeps the rule from resting on that).
_NOT_IN_A_SUBJECT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_UNENCODABLE = "is not valid Unicode: a lone surrogate (U+{code:04X}) cannot be encoded as UTF-8"
# SQS refuses a message body holding a character outside #x9 | #xA | #xD | #x20-#xD7FF |
# #xE000-#xFFFD | #x10000-#x10FFFF. A task's JSON escapes the control characters, and a
# lone surrogate is refused as unencodable, so of these only U+FFFE and U+FFFF could reach
# SQS from an email: refused here, in every text field, the one place the rule lives.
_NOT_CARRIED = re.compile("[\ufffe\uffff]")
_NOT_CARRIED_MESSAGE = "may not contain U+{code:04X}: it is not a character the task queue carries"


def _single_printable_line(value: str) -> str:
    found = _NOT_IN_A_SUBJECT.search(value)
    if found is None:
        if value.isascii() or not (unsupported := _NOT_CARRIED.search(value)):
            return value
        raise ValueError(_NOT_CARRIED_MESSAGE.format(code=ord(unsupported.group())))
    char = found.group()
    if "\ud800" <= char <= "\udfff":
        raise ValueError(_UNENCODABLE.format(code=ord(char)))
    raise ValueError(
        f"must be a single line of printable text: U+{ord(char):04X} is a control or "
        "line-separator character"
    )


def _mail_text(value: str | None) -> str | None:
    if value is None:
        return value
    if "\x00" in value:
        # No mail system, and no PostgreSQL text column, carries a NUL character.
        raise ValueError("may not contain NUL characters")
    if value.isascii():  # O(1) in CPython: most bodies end here
        return value
    try:
        value.encode()
    except UnicodeEncodeError as error:
        raise ValueError(_UNENCODABLE.format(code=ord(value[error.start]))) from error
    if unsupported := _NOT_CARRIED.search(value):
        raise ValueError(_NOT_CARRIED_MESSAGE.format(code=ord(unsupported.group())))
    return value


def _too_many_recipients(recipients: int) -> ValueError:
    return ValueError(
        f"{recipients} recipients in to, cc and bcc; at most {MAX_RECIPIENTS} are allowed"
    )


Subject = Annotated[
    str,
    Field(min_length=1, max_length=MAX_SUBJECT_LENGTH),
    AfterValidator(_single_printable_line),
]
MailText = Annotated[str | None, AfterValidator(_mail_text)]


class EmailContent(BaseModel):
    """What an email says and to whom: everything but its sender.

    The API takes this from a client (the sender is Herald's); ``EmailPayload`` adds
    the sender for the task contract. Both are validated by the same rules.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: list[EmailAddress] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    cc: list[EmailAddress] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[EmailAddress] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    reply_to: list[EmailAddress] = Field(default_factory=list, max_length=MAX_REPLY_TO)
    subject: Subject
    text: MailText = None
    html: MailText = None

    @model_validator(mode="before")
    @classmethod
    def _count_recipients_before_reading_them(cls, data: Any) -> Any:
        # Each address costs a parse (an IDN one about a millisecond): too many are refused
        # by their count before any is read.
        if isinstance(data, dict):
            recipients = sum(
                len(value)
                for name in ("to", "cc", "bcc")
                if isinstance(value := data.get(name), list)
            )
            if recipients > MAX_RECIPIENTS:
                raise _too_many_recipients(recipients)
        return data

    @model_validator(mode="after")
    def _check_email(self) -> Self:
        recipients = len(self.to) + len(self.cc) + len(self.bcc)
        if recipients == 0:
            raise ValueError("at least one recipient (to, cc or bcc) is required")
        if recipients > MAX_RECIPIENTS:
            raise _too_many_recipients(recipients)
        if not (self.text or self.html):
            raise ValueError("text or html is required")
        return self


class EmailPayload(EmailContent):
    """One email to send: the payload of the ``email.send`` task kind."""

    sender: EmailAddress


class TaskEnvelope(BaseModel, Generic[PayloadT]):
    """A unit of work on the task queue; ``payload``'s shape depends on ``kind``.

    The runner reads ``TaskEnvelope[dict[str, Any]]`` (any kind) and the registry
    validates the payload for its kind; producers build ``TaskEnvelope[EmailPayload]``.
    Whether its body fits in one SQS message is an explicit call (``task_body``), made
    where a task is produced: constructing or parsing one serializes nothing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = TASK_CONTRACT_VERSION
    task_id: UUID
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
    tenant_id: UUID
    created_at: AwareDatetime
    send_at: AwareDatetime
    payload: PayloadT

    def to_message_body(self) -> str:
        """The task as the JSON body of an SQS message, serialized once: a task is frozen,
        so the size check (``task_body``) and the producer share one serialization."""
        return self._message_body

    @cached_property
    def _message_body(self) -> str:
        return self.model_dump_json()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy (with ``update``'s fields changed), which serializes its own body."""
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("_message_body", None)
        return copied


AnyTask = TaskEnvelope[dict[str, Any]]
EmailTask = TaskEnvelope[EmailPayload]


class TaskTooLargeError(ValueError):
    """A task's body does not fit in one SQS message (``task_body``)."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(
            f"the serialized task is {size} bytes; a task must fit in one SQS message, "
            f"at most {MAX_TASK_BODY_BYTES} bytes (256 KiB less room for attributes)"
        )


def task_body(task: TaskEnvelope[Any], *, payload_json: str | None = None) -> str:
    """The task's SQS body, checked to fit in one SQS message: the explicit size check.

    It serializes the task once, and the producer sends that body (``to_message_body``).
    ``payload_json``, the payload already serialized (the api stores it), is used as it
    is: only the envelope's few other fields are serialized around it.

    Raises
    ------
    TaskTooLargeError
        The body is larger than ``MAX_TASK_BODY_BYTES``.
    """
    if payload_json is None:
        body = task.to_message_body()
    else:
        # The payload is the envelope's last field: pydantic writes the same JSON.
        head = task.model_dump_json(exclude={"payload"})
        body = f'{head[:-1]},"payload":{payload_json}}}'
    size = len(body.encode())
    if size > MAX_TASK_BODY_BYTES:
        raise TaskTooLargeError(size)
    return body


_RESULT_CODE_VALUES = frozenset(code.value for code in RESULT_FAILURE_CODES)


class TaskResult(BaseModel):
    """The outcome of one task: the SQS body of the result queue.

    Every field is bounded, because the result queue is an input like any other: a
    ``provider_message_id`` is printable ASCII of at most 128 characters, ``error`` at
    most 2,000 characters, ``finished_at`` a time that exists in UTC. A body outside
    these bounds is not a result (the backend leaves it for the result DLQ).

    ``error`` is the detail for operators; what a tenant is told comes from
    ``error_code`` (``shared.errors.FailureCode``), optional so that contract version 1
    results without it stay readable. A missing code, or any code that is not one a task
    runner publishes (a newer runner's, a relay-only one, a malformed one), reads as
    ``FailureCode.SEND_FAILED``: the failure is still applied, with the generic text, so
    no message stays ``queued`` for want of a word.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = TASK_CONTRACT_VERSION
    task_id: UUID
    status: Literal[MessageStatus.SENT, MessageStatus.FAILED]
    provider_message_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PROVIDER_MESSAGE_ID_LENGTH,
        pattern=PROVIDER_MESSAGE_ID_PATTERN,
    )
    error: str | None = Field(default=None, max_length=MAX_RESULT_ERROR_LENGTH)
    # Left out of the body when None: a sent result keeps contract version 1's exact shape.
    error_code: FailureCode | None = Field(default=None, exclude_if=lambda code: code is None)
    finished_at: AwareDatetime

    @model_validator(mode="before")
    @classmethod
    def _unknown_code_reads_as_send_failed(cls, data: Any) -> Any:
        code = data.get("error_code") if isinstance(data, dict) else None
        if code is not None and code not in _RESULT_CODE_VALUES:
            return {**data, "error_code": FailureCode.SEND_FAILED}
        return data

    @model_validator(mode="after")
    def _reason_only_when_failed(self) -> Self:
        if self.status is MessageStatus.FAILED and not self.error:
            raise ValueError("a failed result needs an error that says why")
        if self.status is MessageStatus.SENT and self.error is not None:
            raise ValueError("a sent result carries no error")
        if self.status is MessageStatus.SENT and self.error_code is not None:
            raise ValueError("a sent result carries no error_code")
        try:
            self.finished_at.astimezone(UTC)
        except OverflowError:
            raise ValueError("finished_at is not a time that exists in UTC") from None
        return self

    @classmethod
    def sent(cls, task_id: UUID, provider_message_id: str | None, finished_at: datetime) -> Self:
        """The result of a task that succeeded."""
        return cls(
            task_id=task_id,
            status=MessageStatus.SENT,
            provider_message_id=provider_message_id,
            finished_at=finished_at,
        )

    @classmethod
    def failed(
        cls,
        task_id: UUID,
        error: str,
        finished_at: datetime,
        *,
        code: FailureCode | None = None,
    ) -> Self:
        """The result of a task that can never succeed: why in Herald's words (``code``)
        and in detail for operators (``error``, truncated to its bound)."""
        reason = (
            error
            if len(error) <= MAX_RESULT_ERROR_LENGTH
            else error[: MAX_RESULT_ERROR_LENGTH - 3] + "..."
        )
        return cls(
            task_id=task_id,
            status=MessageStatus.FAILED,
            error=reason,
            error_code=code,
            finished_at=finished_at,
        )


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each invalid field and why, for logs and ``failed`` results."""
    problems = []
    for detail in error.errors(include_url=False):
        message = detail["msg"].removeprefix("Value error, ")
        location = ".".join(str(part) for part in detail["loc"])
        problems.append(f"{location}: {message}" if location else message)
    return "; ".join(problems)
