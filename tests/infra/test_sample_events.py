"""The sample events in events/ have the exact shape Lambda delivers from SQS."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, require_tool

EVENT_FILES = sorted(
    p for p in (REPO_ROOT / "events").glob("*.json") if p.name != "env.example.json"
)


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
