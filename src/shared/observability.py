"""Logger and Metrics for every Herald process, built once from the environment.

``POWERTOOLS_SERVICE_NAME`` names the process (``herald-task-runner``, ``herald-api``),
``POWERTOOLS_METRICS_NAMESPACE`` the CloudWatch namespace, ``LOG_LEVEL`` the level and
``ENVIRONMENT`` the metrics' default dimension.

No Powertools ``Tracer``: it imports the X-Ray SDK, which builds two X-Ray clients at
import (130 ms of every cold start). Tracing lives in ``shared.tracing``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import RESERVED_LOG_ATTRS, LambdaPowertoolsFormatter

from shared.settings import ObservabilitySettings

if TYPE_CHECKING:
    import logging

settings = ObservabilitySettings()


def _message_as_written(message: dict[str, object] | str | bool | int | float) -> str:
    """The formatter's JSON deserializer: none. Powertools tries ``json.loads`` on every
    message, and Herald's messages are sentences, never JSON: the failed parse (an
    exception per line) was a third of the task runner's log line."""
    return str(message)


_RESERVED = frozenset(RESERVED_LOG_ATTRS)
# Powertools' own templates for its default keys, read here without ``%`` formatting.
_LEVEL, _LOCATION, _TIMESTAMP = "%(levelname)s", "%(funcName)s:%(lineno)d", "%(asctime)s"


class HeraldFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter, the same lines for less CPU: a record without an
    exception or ``%`` arguments (nearly every line: the api writes one per request) is
    built without copying the record's attributes, formatting its default keys with
    ``%`` or building a JSON encoder per line, and the timestamp's date and time are
    formatted once a second. Any other record goes through Powertools' own ``format``.
    The api's request line went from 43 to 17 us (tests/unit/test_observability.py holds
    both formatters to the same output)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if options.get("json_serializer") is None:
            # Powertools' default (json.dumps with these options), without a new encoder
            # per line.
            encoder = json.JSONEncoder(
                default=self.json_default,
                separators=(",", ":"),
                indent=self.json_indent,
                ensure_ascii=False,
            )
            self.json_serializer = encoder.encode
        # (second, its date and time, its zone), replaced as one value: threads share it.
        self._clock: tuple[int, str, str] = (-1, "", "")

    def format(self, record: logging.LogRecord) -> str:  # noqa: A003 - logging's name
        if (
            record.exc_info
            or record.exc_text
            or record.stack_info
            or record.args
            or not isinstance(record.msg, str)
        ):
            return super().format(record)
        line: dict[str, Any] = {}
        for keys in (self.log_format, self.thread_safe_get_current_keys()):
            for key, value in keys.items():
                if value and key in _RESERVED:
                    line[key] = self._reserved(value, record)
                else:
                    line[key] = value
        for key, value in record.__dict__.items():
            if key not in _RESERVED:
                line[key] = value
        line["message"] = self._extract_log_message(log_record=record)
        if self.serialize_stacktrace:
            line["stack_trace"] = None  # Powertools' value for a record without exception
        line["xray_trace_id"] = self._get_latest_trace_id()
        return self.serialize({key: value for key, value in line.items() if value is not None})

    def _reserved(self, template: object, record: logging.LogRecord) -> str:
        if template == _LEVEL:
            return record.levelname
        if template == _LOCATION:
            return f"{record.funcName}:{record.lineno}"
        if template == _TIMESTAMP:
            return self.formatTime(record)
        if not isinstance(template, str):
            raise ValueError(f"a reserved log key's value must be a str, not {template!r}")
        return template % {**record.__dict__, "asctime": self.formatTime(record)}

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        if datefmt or self.datefmt or self.use_rfc3339_iso8601:
            return super().formatTime(record, datefmt)
        # Powertools' default, 2021-05-03 10:20:19,650+0200: time.strftime with the
        # milliseconds put in; here the strftime is done once a second.
        second = int(record.created)
        clock = self._clock
        if clock[0] != second:
            moment = self.converter(record.created)
            clock = (
                second,
                time.strftime("%Y-%m-%d %H:%M:%S,", moment),
                time.strftime("%z", moment),
            )
            self._clock = clock
        return f"{clock[1]}{int(record.msecs):03d}{clock[2]}"


logger = Logger(
    service=settings.service_name,
    level=settings.log_level,
    logger_formatter=HeraldFormatter(json_deserializer=_message_as_written),
)
metrics = Metrics(service=settings.service_name, namespace=settings.metrics_namespace)
metrics.set_default_dimensions(environment=settings.environment)

__all__ = ["logger", "metrics"]
