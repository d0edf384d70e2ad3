"""The sample events in events/ have the exact shape Lambda delivers from SQS; the SES
feedback samples are feedback queue bodies the worker's consumer reads."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ecs_service.worker.feedback import parse_feedback
from tests.conftest import REPO_ROOT, require_tool

FEEDBACK_FILES = sorted((REPO_ROOT / "events").glob("ses-feedback-*.json"))
EVENT_FILES = sorted(
    p
    for p in (REPO_ROOT / "events").glob("*.json")
    if p.name != "env.example.json" and p not in FEEDBACK_FILES
)
# SES's eventType -> EventBridge's detail-type (EventBridge reference, "Amazon SES events").
DETAIL_TYPES = {
    "Send": "Email Sent",
    "Delivery": "Email Delivered",
    "Bounce": "Email Bounced",
    "Complaint": "Email Complaint Received",
    "Reject": "Email Rejected",
    "DeliveryDelay": "Email Delivery Delayed",
    "Rendering Failure": "Email Rendering Failed",
}


@pytest.fixture(scope="module")
def sam_sample_record() -> dict[str, Any]:
    """The SQS record SAM CLI generates: the reference shape."""
    sam = require_tool("sam")
    generated = subprocess.run(
        [sam, "local", "generate-event", "sqs", "receive-message"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    record: dict[str, Any] = json.loads(generated.stdout)["Records"][0]
    return record


@pytest.mark.parametrize("event_file", EVENT_FILES, ids=lambda p: p.name)
def test_event_records_have_the_shape_sam_generates(
    event_file: Path, sam_sample_record: dict[str, Any]
) -> None:
    # Given a sample event
    records = json.loads(event_file.read_text())["Records"]

    # Then each record has exactly the keys, attribute keys and value types of SAM's sample
    assert 1 <= len(records) <= 10
    for record in records:
        assert set(record) == set(sam_sample_record)
        assert set(record["attributes"]) == set(sam_sample_record["attributes"])
        assert {key: type(value) for key, value in record.items()} == {
            key: type(value) for key, value in sam_sample_record.items()
        }
        assert record["eventSource"] == "aws:sqs"


@pytest.mark.parametrize("event_file", EVENT_FILES, ids=lambda p: p.name)
def test_event_records_carry_the_real_md5_of_their_body(event_file: Path) -> None:
    for record in json.loads(event_file.read_text())["Records"]:
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()  # noqa: S324 - SQS's checksum


@pytest.mark.parametrize("event_file", EVENT_FILES, ids=lambda p: p.name)
def test_event_message_ids_are_unique(event_file: Path) -> None:
    ids = [record["messageId"] for record in json.loads(event_file.read_text())["Records"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("event_file", FEEDBACK_FILES, ids=lambda p: p.name)
def test_feedback_samples_are_events_the_feedback_consumer_reads(event_file: Path) -> None:
    # Given a feedback sample (a feedback queue body: EventBridge's envelope)
    body = event_file.read_text()

    # When the consumer's parser reads it
    parsed = parse_feedback(body)

    # Then it is an event Herald records, under the detail-type EventBridge gives its type
    assert parsed.recorded
    assert json.loads(body)["detail-type"] == DETAIL_TYPES[parsed.event.event_type]


def test_every_recorded_feedback_type_has_a_sample() -> None:
    types = {parse_feedback(p.read_text()).event.event_type for p in FEEDBACK_FILES}
    assert types == set(DETAIL_TYPES)
