"""The task contract: what a valid email, task and result are, and the errors otherwise."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import uuid4

import pytest
from pydantic import ValidationError

from shared.contracts import (
    MAX_TASK_BODY_BYTES,
    AnyTask,
    EmailTask,
    MessageStatus,
    TaskEnvelope,
    TaskResult,
    TaskTooLargeError,
    describe_validation_error,
    task_body,
)
from shared.errors import FailureCode
from tests.support.fakes import NOW, make_email, make_task


def test_valid_email_task_round_trips_through_its_message_body() -> None:
    # Given a task built by a producer
    task = make_task(make_email(html="<p>Hello</p>", cc=["cc@example.org"]))

    # When the runner parses its SQS body as a task of any kind
    parsed = AnyTask.model_validate_json(task.to_message_body())

    # Then every field of DESIGN.md's envelope survives, payload included
    assert parsed.task_id == task.task_id
    assert parsed.kind == "email.send"
    assert parsed.version == 1
    assert parsed.payload["html"] == "<p>Hello</p>"
    assert parsed.payload["cc"] == ["cc@example.org"]
    assert set(json.loads(task.to_message_body())) == {
        "version", "task_id", "kind", "tenant_id", "created_at", "send_at", "payload",
    }  # fmt: skip


@pytest.mark.parametrize("address", ["not-an-address", "a@b", "reader@@example.org", "x@host.test"])
def test_recipient_must_be_a_real_email_address(address: str) -> None:
    with pytest.raises(ValidationError, match="email address"):
        make_email(to=[address])


def test_sender_must_be_a_real_email_address() -> None:
    with pytest.raises(ValidationError, match="sender"):
        make_email(sender="herald")


def test_a_task_read_by_the_runner_carries_ascii_domains_whatever_was_stored() -> None:
    # Given a task whose payload names IDN domains in Unicode (as rows stored before
    # issue 13 do), sender included
    task = make_task().model_dump(mode="json")
    task["payload"] |= {"sender": "herald@bücher.example", "to": ["leser@bücher.example"]}

    # When the runner reads it as an email
    email = EmailTask.model_validate(task).payload

    # Then SES is given the punycode form it can send
    assert (email.sender, email.to) == (
        "herald@xn--bcher-kva.example",
        ["leser@xn--bcher-kva.example"],
    )


def test_email_needs_at_least_one_recipient() -> None:
    with pytest.raises(ValidationError, match="at least one recipient"):
        make_email(to=[], cc=[], bcc=[])


def test_bcc_alone_is_enough_recipients() -> None:
    assert make_email(to=[], bcc=["hidden@example.org"]).bcc == ["hidden@example.org"]


def test_fifty_recipients_in_all_are_accepted() -> None:
    email = make_email(
        to=[f"to{i}@example.org" for i in range(20)],
        cc=[f"cc{i}@example.org" for i in range(20)],
        bcc=[f"bcc{i}@example.org" for i in range(10)],
    )
    assert len(email.to) + len(email.cc) + len(email.bcc) == 50


def test_fifty_one_recipients_in_all_are_rejected() -> None:
    with pytest.raises(ValidationError, match="51 recipients in to, cc and bcc; at most 50"):
        make_email(
            to=[f"to{i}@example.org" for i in range(25)],
            bcc=[f"bcc{i}@example.org" for i in range(26)],
        )


def test_subject_of_998_characters_is_accepted() -> None:
    assert len(make_email(subject="s" * 998).subject) == 998


def test_subject_over_998_characters_is_rejected() -> None:
    with pytest.raises(ValidationError, match="at most 998 characters"):
        make_email(subject="s" * 999)


def test_subject_must_be_one_line() -> None:
    with pytest.raises(ValidationError, match="single line"):
        make_email(subject="Hello\r\nBcc: victim@example.org")


def test_email_needs_text_or_html() -> None:
    with pytest.raises(ValidationError, match="text or html is required"):
        make_email(text=None, html=None)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        # The subject refuses every control character, NUL among them.
        ("subject", "U\\+0000 is a control or line-separator character"),
        ("text", "may not contain NUL"),
        ("html", "may not contain NUL"),
    ],
)
def test_nul_characters_are_rejected(field: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_email(**{field: "a\x00b"})


def test_html_alone_is_a_complete_body() -> None:
    assert make_email(text=None, html="<p>Hi</p>").html == "<p>Hi</p>"


def test_unknown_payload_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="htm"):
        make_email(htm="<p>typo</p>")


def test_task_too_large_for_sqs_is_rejected_with_its_size() -> None:
    # Given a task whose body alone is over SQS's limit (building one checks nothing)
    task = make_task(make_email(text="x" * MAX_TASK_BODY_BYTES))

    # When a producer checks its size, Then the error says how big it is and the limit
    with pytest.raises(
        TaskTooLargeError,
        match=rf"bytes; a task must fit in one SQS message, at most {MAX_TASK_BODY_BYTES}",
    ):
        task_body(task)


def test_task_just_under_the_sqs_limit_is_accepted() -> None:
    # Given a text sized so the whole body is exactly at the limit
    probe = make_task(make_email(text="x"))
    overhead = len(probe.to_message_body().encode()) - 1

    # When the body fills the limit to the byte
    task = make_task(make_email(text="x" * (MAX_TASK_BODY_BYTES - overhead)), task_id=probe.task_id)

    # Then it is accepted
    assert len(task_body(task).encode()) == MAX_TASK_BODY_BYTES


def test_the_size_check_builds_the_body_around_a_payload_already_serialized() -> None:
    # Given an email serialized once, as the api stores it
    task = make_task(make_email(html="<p>Grüße</p>", cc=["cc@example.org"]))
    payload_json = task.payload.model_dump_json()

    # When the size check takes that payload
    body = task_body(task, payload_json=payload_json)

    # Then the body is the task's own serialization, byte for byte
    assert body == task.model_dump_json()


def test_a_task_is_serialized_once_for_its_size_check_and_its_send() -> None:
    # Given a task whose size was checked
    task = make_task()
    checked = task_body(task)

    # When the producer asks for its body
    sent = task.to_message_body()

    # Then it is the very string the check serialized, not a second serialization
    assert sent is checked


def test_a_changed_copy_of_a_task_serializes_its_own_body() -> None:
    # Given a task whose body was serialized
    task = make_task(make_email(text="first"))
    task.to_message_body()

    # When a copy changes its payload
    copy = task.model_copy(update={"payload": make_email(text="second")})

    # Then the copy's body says what the copy holds
    assert json.loads(copy.to_message_body())["payload"]["text"] == "second"


def test_task_times_must_carry_a_time_zone() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        make_task(created_at=datetime(2026, 11, 24, 9, 0))  # noqa: DTZ001 - the point of the test


def test_unsupported_contract_version_is_rejected() -> None:
    body = json.loads(make_task().to_message_body())
    body["version"] = 2
    with pytest.raises(ValidationError, match="version"):
        AnyTask.model_validate(body)


@pytest.mark.parametrize("kind", ["", "email", "Email.Send", "email.send!", ".send"])
def test_kind_must_be_a_dotted_lower_case_name(kind: str) -> None:
    with pytest.raises(ValidationError, match="kind"):
        TaskEnvelope[dict[str, str]](
            task_id=uuid4(), kind=kind, tenant_id=uuid4(), created_at=NOW, send_at=NOW, payload={}
        )


def test_sent_result_matches_the_result_contract() -> None:
    # Given a successful task's result
    task_id = uuid4()
    result = TaskResult.sent(task_id, "ses-123", NOW)

    # When it is serialized for the result queue
    body = json.loads(result.model_dump_json())

    # Then it has DESIGN.md's shape
    assert body == {
        "version": 1,
        "task_id": str(task_id),
        "status": "sent",
        "provider_message_id": "ses-123",
        "error": None,
        "finished_at": "2026-11-24T09:00:00Z",
    }


def test_failed_result_needs_a_reason() -> None:
    with pytest.raises(ValidationError, match="needs an error that says why"):
        TaskResult(task_id=uuid4(), status=MessageStatus.FAILED, finished_at=NOW)


def test_sent_result_carries_no_error() -> None:
    with pytest.raises(ValidationError, match="carries no error"):
        TaskResult(task_id=uuid4(), status=MessageStatus.SENT, error="oops", finished_at=NOW)


def test_long_failure_reason_is_truncated_to_fit() -> None:
    result = TaskResult.failed(uuid4(), "e" * 10_000, NOW)
    assert result.error is not None
    assert len(result.error) == 2_000
    assert result.error.endswith("...")


def result_body(**changes: object) -> str:
    """The JSON of a sent result, with ``changes``."""
    return json.dumps(
        json.loads(TaskResult.sent(uuid4(), "ses-1", NOW).model_dump_json()) | changes
    )


def test_provider_message_id_over_128_characters_is_not_a_result() -> None:
    # Given a sent result whose provider id is 300 characters (issue 13, item 5)
    body = result_body(provider_message_id="x" * 300)

    # When it is read, Then it is invalid, naming the field
    with pytest.raises(ValidationError, match="provider_message_id"):
        TaskResult.model_validate_json(body)


def test_an_ses_message_id_is_a_valid_provider_message_id() -> None:
    ses_id = "010001a2b3c4d5e6-7f8a9b0c-1d2e-3f4a-5b6c-7d8e9f0a1b2c-000000"
    assert TaskResult.model_validate_json(result_body(provider_message_id=ses_id))


@pytest.mark.parametrize("provider_id", ["", "ses 1", "ses-\u00e9", "ses-1\n", "ses-\u0000"])
def test_provider_message_id_must_be_printable_ascii(provider_id: str) -> None:
    body = result_body(provider_message_id=provider_id)
    with pytest.raises(ValidationError, match="provider_message_id"):
        TaskResult.model_validate_json(body)


def test_failed_result_carries_its_code_in_the_body() -> None:
    # Given a failed result with a code
    result = TaskResult.failed(uuid4(), "detail", NOW, code=FailureCode.INVALID_ADDRESS)

    # When it is serialized, Then the body names the code beside the detail
    body = json.loads(result.model_dump_json())
    assert (body["error_code"], body["error"]) == ("invalid_address", "detail")


def test_result_without_error_code_is_read_as_contract_version_1() -> None:
    # Given a failed result as a task runner before error_code wrote it
    body = json.loads(result_body(status="failed", provider_message_id=None, error="detail"))
    assert "error_code" not in body

    # When it is read, Then it is valid and has no code
    assert TaskResult.model_validate(body).error_code is None


def test_well_formed_code_this_side_does_not_know_reads_as_send_failed() -> None:
    body = result_body(status="failed", error="detail", error_code="quota_exhausted")
    assert TaskResult.model_validate_json(body).error_code is FailureCode.SEND_FAILED


@pytest.mark.parametrize(
    "code", ["Rejected", "rejected!", "x" * 65, "", 7, "unreadable_time", "queue_refused"]
)
def test_a_malformed_or_relay_only_error_code_reads_as_send_failed(code: object) -> None:
    # Given a failed result whose code is not one a task runner publishes
    body = result_body(status="failed", error="detail", error_code=code)

    # When it is read, Then it is still a failure to apply, told in the generic words: a
    # result refused for its code would leave its message queued for good (review finding)
    assert TaskResult.model_validate_json(body).error_code is FailureCode.SEND_FAILED


def test_sent_result_carries_no_error_code() -> None:
    with pytest.raises(ValidationError, match="carries no error_code"):
        TaskResult.model_validate_json(result_body(error_code="rejected"))


def test_finished_at_that_does_not_exist_in_utc_is_not_a_result() -> None:
    # Given a finished_at of year 1 at +14:00: before year 1 in UTC (issue 13, item 1's value)
    body = result_body(finished_at="0001-01-01T00:00:00+14:00")

    # When it is read, Then it is invalid
    with pytest.raises(ValidationError, match="finished_at is not a time that exists in UTC"):
        TaskResult.model_validate_json(body)


def test_validation_error_is_described_on_one_line_per_field() -> None:
    # Given a payload with two mistakes
    with pytest.raises(ValidationError) as caught:
        make_email(to=["nope"], subject="")

    # When it is described for a log line or a failed result
    described = describe_validation_error(caught.value)

    # Then each field is named with its problem, without URLs or newlines
    assert "to.0: value is not a valid email address" in described
    assert "subject: String should have at least 1 character" in described
    assert "\n" not in described
    assert "https://" not in described
