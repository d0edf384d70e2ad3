"""Running a Lambda handler in a test: the context Lambda passes, and its log lines."""

from __future__ import annotations

import json
import logging
from typing import Any

from shared.observability import logger


class LambdaContext:
    """What Lambda passes as ``context``, as far as Powertools reads it."""

    function_name = "herald-dev-TaskRunnerFunction"
    function_version = "$LATEST"
    invoked_function_arn = (
        "arn:aws:lambda:us-east-1:123456789012:function:herald-dev-TaskRunnerFunction"
    )
    memory_limit_in_mb = 512
    aws_request_id = "6f2c2a8e-0b4b-4c39-9f7e-3d1f3e0c9a11"
    log_group_name = "/herald/dev/task-runner"
    log_stream_name = "2026/11/24/[$LATEST]abc"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


class LogCapture(logging.Handler):
    """Keeps the JSON lines the Powertools logger writes, parsed."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logger.registered_formatter)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))
