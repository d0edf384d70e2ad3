"""The task registry: dispatch by kind, payload validation, and the email.send kind."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from shared.contracts import AnyTask, EmailPayload, TaskEnvelope
from shared.errors import PermanentError
from shared.registry import FALLBACK_METRICS, TaskMetricNames, TaskRegistry
from shared.tasks import build_task_registry
from tests.support.fakes import FakeEmailSender, make_email, make_task


class Ping(BaseModel):
    target: str


def as_any_task(task: TaskEnvelope[EmailPayload]) -> AnyTask:
    return AnyTask.model_validate_json(task.to_message_body())


def ping_task(target: object) -> AnyTask:
    body = make_task().model_dump(mode="json") | {"kind": "net.ping", "payload": {"target": target}}
    return AnyTask.model_validate(body)


def test_registered_function_runs_with_its_validated_payload() -> None:
    # Given a registry with a kind the runner has never heard of
    seen: list[Ping] = []
    registry = TaskRegistry()
    registry.register("net.ping", Ping, lambda task: seen.append(task.payload) or "pong")

    # When a task of that kind runs
    reference = registry.run(ping_task("db"))

    # Then its function got the typed payload and its answer came back
    assert seen == [Ping(target="db")]
    assert reference == "pong"


def test_unknown_kind_is_a_permanent_error_naming_the_known_kinds() -> None:
    registry = TaskRegistry()
    registry.register("net.ping", Ping, lambda task: None)
    with pytest.raises(
        PermanentError,
        match=r"no handler is registered for task kind 'email.send' \(known: net.ping\)",
    ):
        registry.run(as_any_task(make_task()))


def test_invalid_payload_is_a_permanent_error_naming_the_field() -> None:
    registry = TaskRegistry()
    registry.register("net.ping", Ping, lambda task: None)
    with pytest.raises(
        PermanentError, match="invalid net.ping payload: target: Input should be a valid string"
    ):
        registry.run(ping_task(42))


def test_kind_cannot_be_registered_twice() -> None:
    registry = TaskRegistry()
    registry.register("net.ping", Ping, lambda task: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("net.ping", Ping, lambda task: None)


def test_metric_names_follow_the_kind_with_a_fallback_for_unknown_kinds() -> None:
    registry = TaskRegistry()
    names = TaskMetricNames(sent="PingsSent", failed="PingsFailed")
    registry.register("net.ping", Ping, lambda task: None, metrics=names)
    assert registry.metrics_for("net.ping") == names
    assert registry.metrics_for("sms.send") == FALLBACK_METRICS


def test_herald_registry_knows_email_send() -> None:
    registry = build_task_registry(
        email_sender=FakeEmailSender(), sender_email="herald@example.com"
    )
    assert registry.kinds == frozenset({"email.send"})
    assert registry.metrics_for("email.send") == TaskMetricNames(
        sent="EmailsSent", failed="EmailsFailed"
    )


def test_email_send_sends_through_the_sender_port() -> None:
    # Given the email.send kind wired to a fake sender
    sender = FakeEmailSender()
    registry = build_task_registry(email_sender=sender, sender_email="herald@example.com")
    task = make_task(make_email(subject="Quarterly report"))

    # When the task runs
    reference = registry.run(as_any_task(task))

    # Then one email went out, tagged with the task id, and the provider id came back
    assert reference == "ses-1"
    assert [(email.subject, task_id) for email, task_id in sender.sent] == [
        ("Quarterly report", task.task_id)
    ]


@pytest.mark.parametrize("recorded", ["ceo@example.com", "herald@old-domain.example.org"])
def test_an_email_goes_out_from_todays_sender_email_whatever_its_task_recorded(
    recorded: str,
) -> None:
    # Given a task whose sender was recorded when it was scheduled, and SENDER_EMAIL since
    # changed (IAM allows only today's address as ses:FromAddress)
    sender = FakeEmailSender()
    registry = build_task_registry(email_sender=sender, sender_email="herald@example.com")

    # When it runs
    registry.run(as_any_task(make_task(make_email(sender=recorded))))

    # Then it is sent, from the address Herald may send from now, not failed
    [(email, _)] = sender.sent
    assert email.sender == "herald@example.com"


def test_sender_address_is_compared_without_case() -> None:
    sender = FakeEmailSender()
    registry = build_task_registry(email_sender=sender, sender_email="herald@example.com")
    registry.run(as_any_task(make_task(make_email(sender="Herald@EXAMPLE.com"))))
    assert len(sender.sent) == 1
