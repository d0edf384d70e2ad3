"""What the api takes as a new message (MessageCreate): send_at's window, addresses as SES
needs them, a subject that is one printable line, bounded lists, encodable text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from ecs_service.api.schemas import MessageCreate, MessageOut, MessageSummary
from ecs_service.messages import MAX_SCHEDULE_AHEAD, SEND_AT_GRACE
from shared.contracts import MAX_REPLY_TO, describe_validation_error


def message(**changes: Any) -> MessageCreate:
    body: dict[str, Any] = {"to": ["reader@example.org"], "subject": "Hello", "text": "Hi."}
    body.update(changes)
    return MessageCreate.model_validate(body)


def refusal(**changes: Any) -> str:
    """The one-line description of why a body with ``changes`` is refused."""
    with pytest.raises(ValidationError) as caught:
        message(**changes)
    return describe_validation_error(caught.value)


def in_utc(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


# send_at


def test_send_at_a_day_ahead_is_taken_as_given() -> None:
    send_at = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    assert message(send_at=send_at.isoformat()).send_at == send_at


def test_send_at_within_the_clock_skew_grace_is_accepted() -> None:
    send_at = datetime.now(UTC) - SEND_AT_GRACE + timedelta(seconds=10)
    assert message(send_at=send_at.isoformat()).send_at == send_at


def test_send_at_just_under_a_year_ahead_is_accepted() -> None:
    send_at = datetime.now(UTC) + MAX_SCHEDULE_AHEAD - timedelta(seconds=10)
    assert message(send_at=send_at.isoformat()).send_at == send_at


@pytest.mark.parametrize(
    "send_at",
    [
        "0001-01-01T00:00:00+14:00",  # issue 13: a BC time in UTC, stored, halted the relay
        "1970-01-01T00:00:00Z",  # issue 13: jumped the relay's queue
        "past",
    ],
    ids=["year-1", "1970", "six-minutes-ago"],
)
def test_send_at_before_the_grace_window_is_refused(send_at: str) -> None:
    if send_at == "past":
        send_at = in_utc(-SEND_AT_GRACE - timedelta(minutes=1))
    assert refusal(send_at=send_at) == (
        "send_at: must be at most 5 minutes in the past (omit it to send now)"
    )


@pytest.mark.parametrize(
    "send_at", ["9999-12-31T23:59:59-14:00", "more-than-a-year"], ids=["year-9999", "366-days"]
)
def test_send_at_more_than_a_year_ahead_is_refused(send_at: str) -> None:
    if send_at == "more-than-a-year":
        send_at = in_utc(MAX_SCHEDULE_AHEAD + timedelta(days=1))
    assert refusal(send_at=send_at) == "send_at: must be at most one year ahead"


@pytest.mark.parametrize(
    "send_at",
    [1_700_000_000, 1_700_000_000_000, 1.7e9, True, "1700000000", "1700000000000"],
    ids=["seconds", "milliseconds", "float", "bool", "digits", "digit-milliseconds"],
)
def test_send_at_as_a_number_is_refused_not_read_as_an_epoch(send_at: object) -> None:
    # issue 13: a numeric send_at was read as milliseconds since 1970
    assert "send_at: must be a date-time string with a UTC offset (RFC 3339)" in refusal(
        send_at=send_at
    )


def test_send_at_without_an_offset_is_refused() -> None:
    assert "timezone" in refusal(send_at="2030-01-01T09:00:00")


# Addresses


def test_internationalized_domain_is_kept_in_its_ascii_form() -> None:
    # SES sends 7-bit ASCII only: an IDN domain becomes punycode, in every address list
    body = message(
        to=["reader@exämple.org"],
        cc=["cc@BÜCHER.example"],
        bcc=["bcc@xn--exmple-cua.org"],
        reply_to=["replies@exämple.org"],
    )
    assert (body.to, body.cc, body.bcc, body.reply_to) == (
        ["reader@xn--exmple-cua.org"],
        ["cc@xn--bcher-kva.example"],
        ["bcc@xn--exmple-cua.org"],
        ["replies@xn--exmple-cua.org"],
    )


@pytest.mark.parametrize("field", ["to", "cc", "bcc", "reply_to"])
def test_non_ascii_local_part_is_refused_with_a_clear_reason(field: str) -> None:
    described = refusal(**{field: ["üser@example.org"]})
    assert described == (
        f"{field}.0: value is not a valid email address: Internationalized characters "
        "before the @-sign are not supported: 'ü'."
    )


def test_display_name_is_dropped_as_before() -> None:
    # pydantic's EmailStr kept only the address of "Name <address>"; so does Herald
    assert message(to=["Reader <reader@example.org>"]).to == ["reader@example.org"]


def test_address_longer_than_anything_parseable_is_refused_unparsed() -> None:
    assert "longer than 2048 characters" in refusal(to=["a" * 3_000 + "@example.org"])


def test_reply_to_of_ten_addresses_is_accepted() -> None:
    addresses = [f"r{i}@example.org" for i in range(MAX_REPLY_TO)]
    assert message(reply_to=addresses).reply_to == addresses


def test_eleven_reply_to_addresses_are_refused() -> None:
    # issue 13: 1,000 reply_to addresses were accepted
    assert refusal(reply_to=[f"r{i}@example.org" for i in range(11)]) == (
        "reply_to: List should have at most 10 items after validation, not 11"
    )


def test_too_many_recipients_are_refused_by_their_count_before_any_address_is_read() -> None:
    # Given 1,000 recipients that are not even addresses: were they read, the refusal
    # would name an invalid address; it names their count, and only that
    assert refusal(to=["x"] * 1_000) == "1000 recipients in to, cc and bcc; at most 50 are allowed"
    assert refusal(to=["x"] * 30, cc=["y"] * 30) == (
        "60 recipients in to, cc and bcc; at most 50 are allowed"
    )


@pytest.mark.parametrize("field", ["subject", "text", "html"])
@pytest.mark.parametrize("char", ["\ufffe", "\uffff"])
def test_a_character_the_task_queue_refuses_is_a_422_naming_the_field(
    field: str, char: str
) -> None:
    # Given U+FFFE or U+FFFF, which SQS refuses in a message body (the relay would fail
    # the email later and page the on-call with RelayRowsFailedAlarm; review finding)
    assert refusal(**{field: f"Hello {char}"}) == (
        f"{field}: may not contain U+{ord(char):04X}: it is not a character the task queue carries"
    )


# Subject and bodies


@pytest.mark.parametrize(
    "char",
    ["\u2028", "\u2029", "\u0085", "\v", "\f", "\t", "\x1b", "\x7f", "\x9f", "\r", "\n"],
)
def test_subject_with_a_control_or_line_separator_character_is_refused(char: str) -> None:
    # issue 13: U+2028, U+0085, \v and \f were accepted
    assert refusal(subject=f"Hello{char}Bcc: victim@example.org") == (
        f"subject: must be a single line of printable text: U+{ord(char):04X} is a control "
        "or line-separator character"
    )


def test_subject_in_any_script_with_emoji_is_accepted() -> None:
    assert message(subject="Grüße, 你好, مرحبا 👋").subject == "Grüße, 你好, مرحبا 👋"


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        # pydantic refuses it first in a length-bounded string
        ("subject", "Input should be a valid string, unable to parse raw data as a unicode string"),
        ("text", "is not valid Unicode: a lone surrogate (U+D800) cannot be encoded as UTF-8"),
        ("html", "is not valid Unicode: a lone surrogate (U+D800) cannot be encoded as UTF-8"),
    ],
)
def test_lone_surrogate_is_refused_naming_the_field(field: str, reason: str) -> None:
    # issue 13: a lone surrogate in text answered 413 "Error serializing to JSON"
    assert refusal(**{field: "caf\ud800e"}) == f"{field}: {reason}"


def test_text_in_any_script_is_accepted() -> None:
    assert message(text="Grüße 👋\n\tZeile zwei").text == "Grüße 👋\n\tZeile zwei"


# List items


def test_a_summary_is_a_message_without_its_bodies_recipients_and_events() -> None:
    assert set(MessageOut.model_fields) - set(MessageSummary.model_fields) == {
        "text",
        "html",
        "recipients",
        "events",
    }
    assert set(MessageSummary.model_fields) < set(MessageOut.model_fields)
