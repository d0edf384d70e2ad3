"""Every part's log lines on one terminal, each with its prefix (``[api]``, ``[runner]`` ...).

The api, the worker and the task runner log Powertools JSON, one object per line: right
for CloudWatch, hard to read in a terminal. A JSON line is shown as its level, message
and own fields; the fields every line repeats (timestamp, service, location, Lambda
context) are left out. A metrics line (EMF) whose every value is zero is not shown: the
worker publishes RelayBacklog=0 every 15 s while nothing waits. Anything else is shown
as it came.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, TextIO

# Fields of every Powertools line that say nothing about this event.
ROUTINE_FIELDS = frozenset(
    {
        "level",
        "message",
        "timestamp",
        "service",
        "location",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "xray_trace_id",
        "sampling_rate",
        "exception",
        "exception_name",
        "stack_trace",
        "taskName",
    }
)
COLOURS = {
    "herald": "1",
    "postgres": "34",
    "aws": "33",
    "api": "32",
    "worker": "35",
    "runner": "36",
    "mailbox": "37",
    "frontend": "94",
}
PREFIX_WIDTH = max(len(name) for name in COLOURS) + 2


def render(line: str) -> str | None:
    """A log line for people: a Powertools JSON line condensed, a metrics line of zeros
    dropped (None), anything else unchanged."""
    text = line.rstrip("\n")
    if not text.startswith("{"):
        return text
    try:
        entry: Any = json.loads(text)
    except ValueError:
        return text
    if not isinstance(entry, dict):
        return text
    if "_aws" in entry:  # an embedded-metric-format line: just the metrics
        names = [
            metric["Name"]
            for block in entry["_aws"].get("CloudWatchMetrics", [])
            for metric in block.get("Metrics", [])
        ]
        values = {name: _metric(entry.get(name)) for name in names}
        if all(value == "0" for value in values.values()):
            return None
        return "metrics " + " ".join(f"{name}={value}" for name, value in values.items())
    if "message" not in entry:
        return text
    fields = " ".join(
        f"{key}={_short(value)}" for key, value in entry.items() if key not in ROUTINE_FIELDS
    )
    rendered = f"{entry.get('level', '')} {entry['message']}" + (f"  {fields}" if fields else "")
    if entry.get("exception"):
        rendered += "\n" + str(entry["exception"])
    return rendered


def _metric(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return f"{value:g}" if isinstance(value, float) else str(value)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if " " not in text else json.dumps(text)


class Terminal:
    """Writes whole lines with a part's prefix; thread-safe, coloured on a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._colour = self._stream.isatty()

    def write(self, part: str, line: str) -> None:
        prefix = f"[{part}]".ljust(PREFIX_WIDTH)
        if self._colour:
            prefix = f"\033[{COLOURS.get(part, '0')}m{prefix}\033[0m"
        rendered = render(line)
        if rendered is None:
            return
        with self._lock:
            for piece in rendered.split("\n"):
                self._stream.write(f"{prefix} {piece}\n")
            self._stream.flush()

    def block(self, text: str) -> None:
        """Several lines at once, unprefixed (the banner)."""
        with self._lock:
            self._stream.write(text if text.endswith("\n") else text + "\n")
            self._stream.flush()
