"""Logger, Tracer and Metrics for every Herald process, built once from the environment.

``POWERTOOLS_SERVICE_NAME`` names the process (``herald-task-runner``, ``herald-api``),
``POWERTOOLS_METRICS_NAMESPACE`` the CloudWatch namespace, ``LOG_LEVEL`` the level and
``ENVIRONMENT`` the metrics' default dimension. Tracing follows Powertools' own switch,
``POWERTOOLS_TRACE_DISABLED``.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

from shared.settings import ObservabilitySettings

settings = ObservabilitySettings()

logger = Logger(service=settings.service_name, level=settings.log_level)
tracer = Tracer(service=settings.service_name)
metrics = Metrics(service=settings.service_name, namespace=settings.metrics_namespace)
metrics.set_default_dimensions(environment=settings.environment)

__all__ = ["logger", "metrics", "tracer"]
