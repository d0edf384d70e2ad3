"""Herald's log formatter writes the lines Powertools' formatter writes."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from shared.observability import HeraldFormatter, _message_as_written


def formatters() -> tuple[LambdaPowertoolsFormatter, HeraldFormatter]:
    """Both, configured as ``shared.observability`` configures its logger's."""
    powertools = LambdaPowertoolsFormatter(
        json_deserializer=_message_as_written, service="herald-api", sampling_rate=None
    )
    herald = HeraldFormatter(json_deserializer=_message_as_written)
    herald.append_keys(service="herald-api", sampling_rate=None)
    return powertools, herald


def record(message: object, *args: object, **extra: Any) -> logging.LogRecord:
    made = logging.getLogger("herald-test").makeRecord(
        "herald-test", logging.INFO, __file__, 42, message, args, None, "handler", extra
    )
    made.created, made.msecs = 1_764_800_000.123456, 123.456
    return made


def failing() -> logging.LogRecord:
    try:
        raise ValueError("boom")
    except ValueError:
        made = record("failed")
        made.exc_info = sys.exc_info()
        return made


@pytest.mark.parametrize(
    "made",
    [
        record("request", method="GET", path="/v1/messages/{id}", status=200, duration_ms=1.5),
        record("sent", task_id="t-1", nested={"a": [1, 2]}, odd=object.__name__),
        record("with %s arguments", "two"),
        record({"already": "structured"}),
        record("an extra named like Powertools' keys", stack_trace="mine", xray_trace_id="x"),
        record("an extra that is None", empty=None),
        failing(),
    ],
    ids=["request", "extras", "arguments", "dict", "shadowing", "none", "exception"],
)
def test_the_line_is_the_one_powertools_writes(made: logging.LogRecord) -> None:
    # Given Powertools' formatter and Herald's, configured alike, with a request id in context
    powertools, herald = formatters()
    powertools.thread_safe_append_keys(request_id="req-1")

    # When each formats the same record
    expected, line = powertools.format(made), herald.format(made)
    powertools.thread_safe_clear_keys()

    # Then the lines are the same, byte for byte
    assert line == expected


def test_the_timestamp_follows_each_record_across_seconds() -> None:
    # Given one formatter and records a second apart
    powertools, herald = formatters()
    earlier, later = record("one"), record("two")
    later.created, later.msecs = earlier.created + 1.5, 623.0

    # When each is formatted, the later one first
    lines = [herald.format(later), herald.format(earlier)]

    # Then each carries its own time, as Powertools writes it
    assert lines == [powertools.format(later), powertools.format(earlier)]
