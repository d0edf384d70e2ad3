"""Every sample event in events/ through the real handler, on moto's SQS, SES and DynamoDB."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import pytest

from shared.adapters.sqs import DEAD_LETTER_REASON_ATTRIBUTE, SOURCE_MESSAGE_ID_ATTRIBUTE
from shared.contracts import MessageStatus
from shared.errors import FailureCode
from shared.task_runner import DEFERRALS_ATTRIBUTE, BatchFailedError
from tests.support.emf import emitted_metrics
from tests.unit.handlers.conftest import EVENTS, TaskRunnerHarness


def task_ids(event_file: str) -> list[UUID]:
    records = json.loads((EVENTS / event_file).read_text())["Records"]
    return [UUID(json.loads(r["body"])["task_id"]) for r in records]


def message_ids(event_file: str) -> list[str]:
    return [r["messageId"] for r in json.loads((EVENTS / event_file).read_text())["Records"]]


def test_one_email_is_sent_and_reported_sent(
    task_runner: TaskRunnerHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the one-email sample event is handled
    response = task_runner.invoke("email-one.json")

    # Then nothing is retried, SES has the email, and its sent result is on the result queue
    assert response == {"batchItemFailures": []}
    [email] = task_runner.sent_emails()
    assert email.source == "herald@example.com"
    assert email.destinations["ToAddresses"] == ["reader1@example.org"]
    assert email.body == "<p>Hello from <b>Herald</b>, message 1.</p>"
    [result] = task_runner.results()
    assert (result.task_id, result.status, result.provider_message_id) == (
        task_ids("email-one.json")[0],
        MessageStatus.SENT,
        email.id,
    )
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["EmailsSent"] == [1.0]
    assert len(metrics["SendLatency"]) == 1


def test_batch_of_ten_sends_ten_emails_with_ten_results(task_runner: TaskRunnerHarness) -> None:
    response = task_runner.invoke("email-batch-10.json")

    assert response == {"batchItemFailures": []}
    assert len(task_runner.sent_emails()) == 10
    results = task_runner.results()
    assert sorted(r.task_id for r in results) == sorted(task_ids("email-batch-10.json"))
    assert {r.status for r in results} == {MessageStatus.SENT}


def test_mixed_batch_ends_each_record_in_sent_failed_deferred_or_dlq(
    task_runner: TaskRunnerHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given SES throttles the mixed batch's transient-failure record, however often it is tried
    task_runner.throttled_recipients.add("throttled@example.org")
    sent_id, throttled_id, unknown_kind_id, no_recipient_id, _ = task_ids_or_none(
        "mixed-batch.json"
    )
    _, _, _, _, not_json_message = message_ids("mixed-batch.json")
    assert sent_id and unknown_kind_id and no_recipient_id

    # When the batch is handled
    response = task_runner.invoke("mixed-batch.json")

    # Then no record is retried through SQS: the throttled task is back on the task queue,
    # as a new message with a delay (its receive count starts again: never towards the DLQ)
    assert response == {"batchItemFailures": []}
    [deferred] = task_runner.deferred_tasks()
    assert json.loads(deferred.body)["task_id"] == str(throttled_id)
    assert deferred.message_attributes[DEFERRALS_ATTRIBUTE]["StringValue"] == "1"
    # (moto reads its clock twice for these two stamps: compare whole seconds)
    delay_s = round((deferred.delayed_until - deferred.sent_timestamp) / 1000)
    assert 5 <= delay_s <= 10
    # and one email was sent
    assert [e.destinations["ToAddresses"] for e in task_runner.sent_emails()] == [
        ["reader21@example.org"]
    ]
    # and the others have results: sent, and failed with their reasons
    results = {r.task_id: r for r in task_runner.results()}
    assert set(results) == {sent_id, unknown_kind_id, no_recipient_id}
    assert results[sent_id].status is MessageStatus.SENT
    assert results[unknown_kind_id].status is MessageStatus.FAILED
    assert "no handler is registered for task kind 'sms.send'" in str(
        results[unknown_kind_id].error
    )
    assert (
        results[no_recipient_id].error
        == "invalid email.send payload: at least one recipient (to, cc or bcc) is required"
    )
    # and the body that is not JSON is in the DLQ, as it was, with why
    [letter] = task_runner.dead_letters()
    assert letter["Body"] == "this is not JSON"
    assert (
        letter["MessageAttributes"][SOURCE_MESSAGE_ID_ATTRIBUTE]["StringValue"] == not_json_message
    )
    assert throttled_id not in results
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["EmailsSent"] == [1.0]
    assert metrics["EmailsFailed"] == [1.0]
    assert metrics["TasksFailed"] == [1.0]
    assert metrics["TasksDeadLettered"] == [1.0]
    assert metrics["TasksDeferred"] == [1.0]


def task_ids_or_none(event_file: str) -> list[UUID | None]:
    ids: list[UUID | None] = []
    for record in json.loads((EVENTS / event_file).read_text())["Records"]:
        try:
            ids.append(UUID(json.loads(record["body"])["task_id"]))
        except (ValueError, KeyError):
            ids.append(None)
    return ids


def test_throttled_email_is_sent_when_its_deferred_copy_arrives(
    task_runner: TaskRunnerHarness,
) -> None:
    # Given the first delivery was throttled and the task deferred
    task_runner.throttled_recipients.add("throttled@example.org")
    task_runner.invoke("mixed-batch.json")
    task_runner.results()
    [deferred] = task_runner.deferred_tasks()

    # When SES recovers and the copy is delivered after its delay
    task_runner.throttled_recipients.clear()
    response = task_runner.invoke_event(task_runner.redelivery_of(deferred))

    # Then the throttled email goes out, and its sent result is published
    assert response == {"batchItemFailures": []}
    recipients = sorted(e.destinations["ToAddresses"][0] for e in task_runner.sent_emails())
    assert recipients == ["reader21@example.org", "throttled@example.org"]
    [result] = task_runner.results()
    assert result.status is MessageStatus.SENT


def test_a_deferred_task_delivered_beside_its_original_is_sent_once(
    task_runner: TaskRunnerHarness,
) -> None:
    # Given a throttled task was deferred, and SES recovered
    task_runner.throttled_recipients.add("throttled@example.org")
    task_runner.invoke("mixed-batch.json")
    [deferred] = task_runner.deferred_tasks()
    task_runner.throttled_recipients.clear()

    # When both its copy and its original arrive (the original's deletion was lost)
    task_runner.invoke_event(task_runner.redelivery_of(deferred))
    task_runner.invoke("mixed-batch.json")

    # Then the throttled email went out once: the second delivery replayed its result
    recipients = [e.destinations["ToAddresses"][0] for e in task_runner.sent_emails()]
    assert recipients.count("throttled@example.org") == 1
    assert recipients.count("reader21@example.org") == 1


def test_the_deferred_copy_keeps_the_records_trace_context(
    task_runner: TaskRunnerHarness,
) -> None:
    # Given SES throttles the traced sample's recipient
    event = json.loads((EVENTS / "email-traced.json").read_text())
    [recipient] = json.loads(event["Records"][0]["body"])["payload"]["to"]
    task_runner.throttled_recipients.add(recipient)

    # When it is handled
    task_runner.invoke("email-traced.json")

    # Then its copy carries the same body and `_datadog` context
    [deferred] = task_runner.deferred_tasks()
    assert deferred.body == event["Records"][0]["body"]
    assert (
        deferred.message_attributes["_datadog"]["StringValue"]
        == event["Records"][0]["messageAttributes"]["_datadog"]["stringValue"]
    )


def test_same_task_delivered_twice_sends_one_email(
    task_runner: TaskRunnerHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the same event is delivered twice (a relay crash between send and commit)
    task_runner.invoke("email-one.json")
    second = task_runner.invoke("email-one.json")

    # Then SES sent it once, and both deliveries published the same sent result
    assert second == {"batchItemFailures": []}
    assert len(task_runner.sent_emails()) == 1
    first_result, replayed_result = task_runner.results()
    assert first_result == replayed_result
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["EmailsSent"] == [1.0]
    assert metrics["TasksReplayed"] == [1.0]


def test_unparseable_bodies_go_to_the_dlq_at_once(
    task_runner: TaskRunnerHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    # When records that are not tasks are handled
    response = task_runner.invoke("unparseable-body.json")

    # Then they are reported processed (no retry), moved to the DLQ with the reason, and logged
    assert response == {"batchItemFailures": []}
    letters = {m["Body"]: m["MessageAttributes"] for m in task_runner.dead_letters()}
    assert set(letters) == {"this is not JSON", '{"hello":"a JSON object that is not a task"}'}
    assert letters["this is not JSON"][DEAD_LETTER_REASON_ATTRIBUTE]["StringValue"].startswith(
        "not a valid task: Invalid JSON"
    )
    assert task_runner.results() == []
    assert task_runner.sent_emails() == []
    errors = [line for line in task_runner.logs.lines if line["level"] == "ERROR"]
    assert sorted(line["message_id"] for line in errors) == sorted(
        message_ids("unparseable-body.json")
    )
    assert emitted_metrics(capsys.readouterr().out)["TasksDeadLettered"] == [1.0, 1.0]


def test_invalid_payload_is_reported_failed_without_retry(task_runner: TaskRunnerHarness) -> None:
    response = task_runner.invoke("invalid-payload.json")

    assert response == {"batchItemFailures": []}
    [result] = task_runner.results()
    assert result.status is MessageStatus.FAILED
    assert result.error is not None
    assert "to.0: value is not a valid email address" in result.error
    assert task_runner.sent_emails() == []


@pytest.mark.parametrize(
    ("ses_code", "ses_message", "failure_code"),
    [
        ("MessageRejected", "Email address is not verified.", FailureCode.REJECTED),
        ("BadRequestException", "Illegal address", FailureCode.INVALID_ADDRESS),
        ("BadRequestException", "Missing final '@domain'", FailureCode.INVALID_ADDRESS),
        (
            "MailFromDomainNotVerifiedException",
            "MAIL FROM domain is not verified",
            FailureCode.SENDER_NOT_ALLOWED,
        ),
    ],
)
def test_ses_refusal_is_reported_failed_with_herald_code(
    task_runner: TaskRunnerHarness, ses_code: str, ses_message: str, failure_code: FailureCode
) -> None:
    # Given SES refuses the sample email for good, with its own code and words
    task_runner.refused_recipients["reader1@example.org"] = (ses_code, ses_message)

    # When it is handled
    response = task_runner.invoke("email-one.json")

    # Then it is not retried, and its failed result names Herald's code, SES's words as detail
    assert response == {"batchItemFailures": []}
    [result] = task_runner.results()
    assert (result.status, result.error_code) == (MessageStatus.FAILED, failure_code)
    assert result.error == f"SES SendEmail failed: {ses_code}: {ses_message}"


def test_a_batch_whose_every_record_fails_fails_the_invocation(
    task_runner: TaskRunnerHarness,
) -> None:
    # Given SES failing the send of the batch's only record, transiently, on every try
    task_runner.refused_recipients["reader1@example.org"] = ("InternalFailure", "try later")

    # When the batch is handled
    with pytest.raises(BatchFailedError) as failed:
        task_runner.invoke("email-one.json")

    # Then the invocation fails (SQS redelivers the whole batch), naming the record's error,
    # and no result is published
    assert "all 1 records of the batch failed" in str(failed.value)
    assert "InternalFailure" in str(failed.value)
    assert task_runner.results() == []


def test_every_log_line_of_a_task_names_its_task_and_tenant(task_runner: TaskRunnerHarness) -> None:
    # Given a batch where every outcome happens
    task_runner.throttled_recipients.add("throttled@example.org")

    # When it is handled
    task_runner.invoke("mixed-batch.json")

    # Then every line but the dead-letter one (no task to name) carries both ids
    lines = [line for line in task_runner.logs.lines if "message_id" not in line]
    assert lines
    for line in lines:
        assert {"task_id", "tenant_id"} <= set(line), line
        assert line["tenant_id"] == "7d3f1a2e-5b6c-4d8e-9f01-23456789abcd"


def test_a_tasks_ids_leave_the_log_with_its_record(task_runner: TaskRunnerHarness) -> None:
    # Given a batch whose last record, after four tasks (one of them throttled), is no task
    task_runner.throttled_recipients.add("throttled@example.org")

    # When it is handled
    task_runner.invoke("mixed-batch.json")

    # Then the dead-letter line names the record, and no task of an earlier record
    [dead_letter_line] = [line for line in task_runner.logs.lines if "message_id" in line]
    assert dead_letter_line["message_id"] == "1d000000-0000-4000-8000-000000000019"
    assert "task_id" not in dead_letter_line
    assert "tenant_id" not in dead_letter_line


def test_a_record_with_trace_context_is_sent_alike_while_datadog_is_off(
    task_runner: TaskRunnerHarness,
) -> None:
    # Given the sample record carrying Datadog's `_datadog` attribute, Datadog off (default)
    # When it is handled
    response = task_runner.invoke("email-traced.json")

    # Then the attribute changes nothing: one email, one sent result
    assert response == {"batchItemFailures": []}
    [email] = task_runner.sent_emails()
    assert email.subject == "Herald sample, traced"
    [result] = task_runner.results()
    assert (result.task_id, result.status) == (
        task_ids("email-traced.json")[0],
        MessageStatus.SENT,
    )


def test_every_sample_event_is_covered_by_a_test() -> None:
    covered = {
        "email-one.json",
        "email-traced.json",
        "email-batch-10.json",
        "mixed-batch.json",
        "unparseable-body.json",
        "invalid-payload.json",
    }
    # The ses-feedback-* events are the worker's feedback consumer's, not the runner's.
    assert {
        path.name
        for path in Path(EVENTS).glob("*.json")
        if path.name != "env.example.json" and not path.name.startswith("ses-feedback-")
    } == covered


def test_every_aws_call_of_the_handler_gives_up_well_within_the_invocation(
    task_runner: TaskRunnerHarness,
) -> None:
    # Given the handler's clients, as its cold start built them
    clients = [task_runner.module.sqs, task_runner.module.sesv2, task_runner.module.dynamodb]

    # Then each waits at most a few seconds for an answer (botocore's default is 60 s,
    # twice the function's 30 s timeout) and tries at most twice (legacy mode's 5 attempts
    # would outlast the invocation), so a hung call ends within half the function's time;
    # SES's is never retried by botocore (the runner does it, with jitter)
    for client in clients:
        config = client.meta.config
        attempts = config.retries["total_max_attempts"]
        assert attempts <= 2
        assert attempts * (config.connect_timeout + config.read_timeout) <= 15
    assert task_runner.module.sesv2.meta.config.retries["total_max_attempts"] == 1
