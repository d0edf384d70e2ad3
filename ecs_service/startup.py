"""What every backend process does first: read its settings and start tracing.

Both ``herald`` (``ecs_service.cli``) and each uvicorn process of the api
(``ecs_service.api.asgi``, which uvicorn imports by name) start this way; neither imports
the other.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from shared.contracts import describe_validation_error
from shared.observability import logger
from shared.settings import TracingSettings
from shared.tracing import (
    NO_TRACING,
    DatadogTracing,
    NoTracing,
    TracingUnavailableError,
    build_tracing,
)

if TYPE_CHECKING:
    from collections.abc import Callable

_Settings = TypeVar("_Settings")


class ConfigurationError(SystemExit):
    """Settings are missing or invalid: exit with a message naming them."""


def read_settings(settings_class: Callable[[], _Settings]) -> _Settings:
    """``settings_class()``, read from the environment; a missing or invalid variable
    stops the process with one line naming it (``ConfigurationError``)."""
    try:
        return settings_class()
    except ValidationError as error:
        raise ConfigurationError(
            f"herald: invalid configuration: {describe_validation_error(error)}"
        ) from error


def start_tracing() -> NoTracing | DatadogTracing:
    """Datadog tracing for this process when ``DD_TRACE_ENABLED`` is true, else none.

    ``ddtrace.auto`` instruments the libraries (FastAPI, SQLAlchemy, psycopg, botocore)
    and must run before the app is imported. Botocore's own SQS context injection is
    switched off: it would give every message of a batch the batch call's context,
    where the relay gives each message its own.
    """
    if not read_settings(TracingSettings).datadog_enabled:
        return NO_TRACING
    try:
        importlib.import_module("ddtrace.auto")
        tracing = build_tracing(True)
    except (ImportError, TracingUnavailableError) as error:
        raise ConfigurationError(
            "herald: DD_TRACE_ENABLED is true but ddtrace cannot be imported: install the "
            f"service extra, or set DD_TRACE_ENABLED=false ({error})"
        ) from error
    from ddtrace import config

    config.botocore["distributed_tracing"] = False
    tracing.correlate_logs(logger)
    return tracing
