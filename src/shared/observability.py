"""Logger and Metrics for every Herald process, built once from the environment.

``POWERTOOLS_SERVICE_NAME`` names the process (``herald-task-runner``, ``herald-api``),
``POWERTOOLS_METRICS_NAMESPACE`` the CloudWatch namespace, ``LOG_LEVEL`` the level and
``ENVIRONMENT`` the metrics' default dimension.

No Powertools ``Tracer``: it imports the X-Ray SDK, which builds two X-Ray clients at
import (130 ms of every cold start). Tracing lives in ``shared.tracing``.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

from shared.settings import ObservabilitySettings

settings = ObservabilitySettings()


def _message_as_written(message: dict[str, object] | str | bool | int | float) -> str:
    """The formatter's JSON deserializer: none. Powertools tries ``json.loads`` on every
    message, and Herald's messages are sentences, never JSON: the failed parse (an
    exception per line) was a third of the task runner's log line."""
    return str(message)


logger = Logger(
    service=settings.service_name,
    level=settings.log_level,
    json_deserializer=_message_as_written,
)
metrics = Metrics(service=settings.service_name, namespace=settings.metrics_namespace)
metrics.set_default_dimensions(environment=settings.environment)

__all__ = ["logger", "metrics"]
