"""Delivery feedback through the whole local system: SES's mailbox simulator addresses.

One ``herald-local run`` for the module. Each email is scheduled through the API; the
task runner sends it through the template's configuration set with Herald's tags; the
local SES publishes the simulator's events by the template's rule to the feedback
queue; the worker applies them. Only SES itself is simulated.

Every test uses addresses of its own (``bounce+<label>@...``: the simulator ignores the
label, as SES does), since a bounce or a complaint suppresses the address for the tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import create_engine, text

from herald_local.harness import RunningSystem, children_of, running_local_system, wait_for
from herald_local.ses_events import EVENTS_PATH

SIMULATOR = "simulator.amazonses.com"
FEEDBACK_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def local_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    with running_local_system(tmp_path_factory.mktemp("herald-simulator")) as system:
        yield system


def simulator(mailbox: str) -> str:
    """A simulator address of this test's own: ``bounce+1a2b3c4d@simulator.amazonses.com``."""
    return f"{mailbox}+{uuid4().hex[:8]}@{SIMULATOR}"


def send_and_wait(system: RunningSystem, to: str, final: str) -> dict[str, Any]:
    """Schedule an email to ``to`` for now, and wait until it is ``final``; the message."""
    message_id = system.schedule(to, f"To {to}")
    wait_for(
        lambda: system.status(message_id) == final,
        FEEDBACK_TIMEOUT_S,
        f"the email to {to} to be {final}",
        system,
    )
    return system.message(message_id)


def event_types(system: RunningSystem, message_id: str) -> set[str]:
    return {event["type"] for event in system.message(message_id)["events"]}


def test_the_success_address_ends_delivered(local_system: RunningSystem) -> None:
    # Given the simulator's success address
    to = simulator("success")

    # When an email to it is sent
    message = send_and_wait(local_system, to, "delivered")

    # Then its recipient is delivered
    assert [(r["address"], r["status"]) for r in message["recipients"]] == [(to, "delivered")]
    # And the history has SES's Delivery, and its Send (published before the task runner's
    # result may be applied: matched by Herald's tags; SQS may hand it over after the rest)
    assert "Delivery" in event_types(local_system, message["id"])
    wait_for(
        lambda: "Send" in event_types(local_system, message["id"]),
        10,
        "the Send event in the history",
        local_system,
    )


def test_the_out_of_office_address_ends_delivered(local_system: RunningSystem) -> None:
    # Given the simulator's out-of-office address; When an email to it is sent
    message = send_and_wait(local_system, simulator("ooto"), "delivered")

    # Then it is delivered (the auto-reply is not a failure)
    assert [r["status"] for r in message["recipients"]] == ["delivered"]


def test_the_bounce_address_ends_bounced_with_the_diagnostic(local_system: RunningSystem) -> None:
    # Given the simulator's bounce address; When an email to it is sent
    message = send_and_wait(local_system, simulator("bounce"), "bounced")

    # Then its recipient bounced permanently, with the receiving server's diagnostic
    [recipient] = message["recipients"]
    assert recipient["status"] == "bounced"
    assert (recipient["bounce_type"], recipient["bounce_subtype"]) == ("Permanent", "General")
    assert recipient["diagnostic"] == "smtp; 550 5.1.1 user unknown"


def test_the_suppression_list_address_ends_bounced_as_on_the_suppression_list(
    local_system: RunningSystem,
) -> None:
    # Given the simulator's suppression-list address
    to = simulator("suppressionlist")

    # When an email to it is sent
    message = send_and_wait(local_system, to, "bounced")

    # Then it bounced as SES's account-level suppression list bounces it
    [recipient] = message["recipients"]
    assert (recipient["bounce_type"], recipient["bounce_subtype"]) == (
        "Permanent",
        "OnAccountSuppressionList",
    )
    # And the tenant may still schedule to it: SES's list is shared by every tenant
    again = local_system.post_message({"to": [to], "subject": "Again", "text": "Again"})
    assert again.status_code == 201, again.text


def test_the_complaint_address_ends_complained_and_is_suppressed(
    local_system: RunningSystem,
) -> None:
    # Given the simulator's complaint address
    to = simulator("complaint")

    # When an email to it is sent
    message = send_and_wait(local_system, to, "complained")

    # Then its recipient complained (after being delivered), and the tenant suppresses it
    assert [r["status"] for r in message["recipients"]] == ["complained"]
    assert {"Delivery", "Complaint"} <= {event["type"] for event in message["events"]}
    answer = httpx.get(
        f"{local_system.api_url}/v1/suppressions",
        headers=local_system.headers,
        params={"limit": 100},
    )
    assert answer.status_code == 200, answer.text
    listed = {item["address"]: item["reason"] for item in answer.json()["items"]}
    assert listed[to] == "complaint"


def test_a_bounced_address_is_refused_next_time_and_another_tenant_can_still_send_to_it(
    local_system: RunningSystem,
) -> None:
    # Given an address that bounced for the demo tenant
    to = simulator("bounce")
    send_and_wait(local_system, to, "bounced")

    # When the demo tenant schedules to it again, and another tenant does too
    again = local_system.post_message({"to": [to], "subject": "Again", "text": "Again"})
    other_key = local_system.add_tenant(f"other-{uuid4().hex[:8]}")
    other = local_system.post_message({"to": [to], "subject": "Other", "text": "Hi"}, other_key)

    # Then the demo tenant's is refused, naming the address; the other tenant's is accepted
    assert again.status_code == 422, again.text
    problem = again.json()
    assert problem["type"].endswith("recipient-suppressed")
    assert problem["suppressed"] == [to]
    assert other.status_code == 201, other.text


def test_the_mailbox_shows_the_events_ses_published(local_system: RunningSystem) -> None:
    # Given an email to the bounce address, bounced
    to = simulator("bounce")
    message = send_and_wait(local_system, to, "bounced")

    # When the mailbox is listed, by the command and on the page
    command = {email["subject"]: email for email in local_system.mailbox()}
    page = httpx.get(f"http://127.0.0.1:{local_system.ports['mailbox']}/").text

    # Then the email shows SES's Send and Bounce, with the diagnostic
    events = command[message["subject"]]["events"]
    assert [event["type"] for event in events] == ["Send", "Bounce"]
    assert events[1]["detail"]["diagnosticCode"] == "smtp; 550 5.1.1 user unknown"
    assert "smtp; 550 5.1.1 user unknown" in page


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_the_parts_get_the_feedback_queue_configuration_set_and_send_rate(
    local_system: RunningSystem,
) -> None:
    # Given the running system's parts (the api, the worker and the task runner)
    environments = [environment_of(pid) for pid in children_of(local_system.process.pid)]

    # Then the worker reads the feedback queue and paces at 1000/s (no --ses-max-send-rate),
    # and the task runner sends through the template's configuration set
    worker = next(e for e in environments if e.get("POWERTOOLS_SERVICE_NAME") == "herald-worker")
    runner = next(
        e for e in environments if e.get("POWERTOOLS_SERVICE_NAME") == "herald-task-runner"
    )
    assert worker["FEEDBACK_QUEUE_URL"].endswith("/herald-local-FeedbackQueue")
    assert worker["SES_MAX_SEND_RATE"] == "1000"
    assert runner["SES_CONFIGURATION_SET"].startswith("herald-dev-")


def test_every_email_carries_herald_message_and_tenant_tags(local_system: RunningSystem) -> None:
    # Given an email sent through the local system
    message = send_and_wait(local_system, simulator("success"), "delivered")

    # When the local SES is asked what it published for it
    published = httpx.get(local_system.aws_url + EVENTS_PATH).json()

    # Then its events carry Herald's tags: the message and its tenant (what lets an event
    # that comes before the task runner's result find its message)
    tags = published[message["provider_message_id"]][0]["tags"]
    engine = create_engine(local_system.database_url)
    try:
        with engine.connect() as connection:
            tenant_id = connection.scalar(
                text("SELECT tenant_id FROM messages WHERE id = :id"), {"id": message["id"]}
            )
    finally:
        engine.dispose()
    assert tags == {"herald-message-id": message["id"], "herald-tenant-id": str(tenant_id)}
