"""The local SES's maximum send rate: recipients per second, refused as SES refuses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

from herald_local.cli import parser
from herald_local.ses_faults import SEND_EMAIL_PATH, SendRateWindow, SesSendRateLimit
from herald_local.system import RunOptions

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def send_request(*recipients: str) -> dict[str, Any]:
    return {
        "FromEmailAddress": "herald@example.com",
        "Destination": {"ToAddresses": list(recipients)},
        "Content": {"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "Hi"}}}},
    }


class FakeSes:
    """Stands in for moto: accepts every request, or answers 400 for every one."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.calls = 0

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.calls += 1
        answer = Response(json.dumps({"MessageId": f"id-{self.calls}"}), status=self.status)
        return answer(environ, start_response)


def test_recipients_up_to_the_rate_are_accepted_within_one_second() -> None:
    # Given a rate of 3 recipients per second
    window = SendRateWindow(3, clock=Clock())

    # When sends of 1 and 2 recipients arrive at the same moment
    # Then both are accepted
    assert window.admit(1)
    assert window.admit(2)


def test_a_send_that_would_pass_the_rate_within_one_second_is_refused() -> None:
    # Given 3 recipients per second, all used
    clock = Clock()
    window = SendRateWindow(3, clock=clock)
    assert window.admit(3)

    # When one more recipient comes 0.9 s later
    clock.now += 0.9

    # Then it is refused
    assert not window.admit(1)


def test_a_refused_send_is_not_counted_and_the_rate_frees_up_a_second_later() -> None:
    # Given 2 recipients per second, used, and a send refused meanwhile
    clock = Clock()
    window = SendRateWindow(2, clock=clock)
    assert window.admit(2)
    clock.now += 0.5
    assert not window.admit(1)

    # When a second has passed since the accepted send
    clock.now += 0.5

    # Then the full rate is available again: the refusal took nothing
    assert window.admit(2)


def test_a_rate_under_one_per_second_accepts_one_recipient_per_interval() -> None:
    # Given half a recipient per second
    clock = Clock()
    window = SendRateWindow(0.5, clock=clock)
    assert window.admit(1)

    # When the next comes 1.9 s later, and another at 2 s
    clock.now += 1.9
    refused = window.admit(1)
    clock.now += 0.1

    # Then the first is refused and the second accepted
    assert not refused
    assert window.admit(1)


def test_an_email_with_more_recipients_than_the_rate_goes_when_nothing_else_was_sent() -> None:
    # Given 2 recipients per second and nothing sent in the last second
    window = SendRateWindow(2, clock=Clock())

    # When an email to 5 recipients comes, then one to 1
    # Then the first is accepted (SES takes up to 50 recipients per email), the next waits
    assert window.admit(5)
    assert not window.admit(1)


def test_a_send_over_the_rate_gets_ses_throttling_error_and_never_reaches_ses() -> None:
    # Given the local SES at 1 recipient per second, that recipient used
    ses = FakeSes()
    client = Client(SesSendRateLimit(ses, SendRateWindow(1, clock=Clock())))
    client.post(SEND_EMAIL_PATH, json=send_request("a@example.org"))

    # When another send comes within the second
    answer = client.post(SEND_EMAIL_PATH, json=send_request("b@example.org"))

    # Then it is SES API v2's Throttling error, HTTP 400, and only the first reached SES
    assert answer.status_code == 400
    assert answer.headers["x-amzn-ErrorType"] == "Throttling"
    assert answer.get_json() == {"message": "Maximum sending rate exceeded."}
    assert ses.calls == 1


def test_a_send_ses_refuses_for_another_reason_does_not_use_the_rate() -> None:
    # Given the local SES at 1 recipient per second, and SES refusing a first send (400)
    ses = FakeSes(status=400)
    client = Client(SesSendRateLimit(ses, SendRateWindow(1, clock=Clock())))
    client.post(SEND_EMAIL_PATH, json=send_request("a@example.org"))

    # When SES accepts again and a send comes within the same second
    ses.status = 200
    answer = client.post(SEND_EMAIL_PATH, json=send_request("a@example.org"))

    # Then it is accepted
    assert answer.status_code == 200


def test_requests_other_than_send_email_are_never_throttled() -> None:
    # Given the local SES at 1 recipient per second, that recipient used
    ses = FakeSes()
    client = Client(SesSendRateLimit(ses, SendRateWindow(1, clock=Clock())))
    client.post(SEND_EMAIL_PATH, json=send_request("a@example.org"))

    # When another SES request comes within the second
    answer = client.get("/v2/email/account")

    # Then it reaches SES
    assert answer.status_code == 200


@pytest.mark.parametrize("text", ["0", "-1", "fast", "inf", "nan"])
def test_the_switch_refuses_a_rate_that_is_not_above_zero(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a rate that is not a positive number
    # When `herald-local run` is given it
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--ses-max-send-rate", text])

    # Then it says what it needs
    assert "is not a rate above 0" in capsys.readouterr().err


def test_the_worker_paces_to_the_local_ses_rate_or_to_1000_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the switch at 14, and left out (nor in the environment)
    monkeypatch.delenv("HERALD_LOCAL_SES_MAX_SEND_RATE", raising=False)
    limited = parser().parse_args(["run", "--ses-max-send-rate", "14"])
    unlimited = parser().parse_args(["run"])

    # Then the local SES's rate is 14 and None, and the worker's SES_MAX_SEND_RATE 14 and 1000
    assert limited.ses_max_send_rate == 14
    assert unlimited.ses_max_send_rate is None
    assert run_options(14).worker_send_rate == 14
    assert run_options(None).worker_send_rate == 1000


def run_options(rate: float | None) -> RunOptions:
    return RunOptions(project_dir=Path(), data_dir=Path(".local"), ports={}, ses_max_send_rate=rate)
