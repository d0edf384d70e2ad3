"""Datadog tracing behind one small seam, imported only when Datadog is on.

``DD_TRACE_ENABLED`` (``true``/``false``) switches it. Off, which is the default,
``build_tracing`` returns ``NO_TRACING``: every call is a no-op and ``ddtrace`` is never
imported, so the Lambda's cold start and the container's dependencies are unchanged. On,
``DatadogTracing`` uses the process's ddtrace tracer; a missing ``ddtrace`` is a
``TracingUnavailableError`` at start-up, never a silent switch to no tracing.

One email is one trace: the api stores its request span's context with the message, the
relay sends it in the SQS message attribute ``_datadog`` (a JSON object of Datadog
propagation headers, the format the Datadog Lambda library reads), and the task runner
starts each record's span as a child of that record's own context.
"""

from __future__ import annotations

import importlib
import json
import logging
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar, cast

from shared.settings import TracingSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from contextlib import AbstractContextManager

    from aws_lambda_powertools import Logger
    from ddtrace.trace import Context, Tracer

    HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])

TRACE_CONTEXT_ATTRIBUTE = "_datadog"
# Datadog's headers take about 500 bytes. The cap keeps a context far inside the 4 KiB the
# task contract leaves beside the body for attributes, so carrying it never fails a send.
MAX_TRACE_CONTEXT_BYTES = 2_048
TRACE_ID_LOG_KEY = "dd.trace_id"
SPAN_ID_LOG_KEY = "dd.span_id"
NO_ACTIVE_TRACE = "0"  # what ddtrace's log correlation reports when no span is active

_log = logging.getLogger(__name__)


class TracingUnavailableError(RuntimeError):
    """Datadog tracing is switched on but its library cannot be imported."""


def datadog_enabled() -> bool:
    """Whether ``DD_TRACE_ENABLED`` is true; a value other than true/false raises.

    Raises
    ------
    pydantic.ValidationError
        ``DD_TRACE_ENABLED`` is set to something other than ``true`` or ``false``.
    """
    return TracingSettings().datadog_enabled


def as_carrier(value: object) -> dict[str, str] | None:
    """``value`` as a trace carrier if it is a small mapping of strings, else None.

    A context that cannot be carried is dropped with a debug line: losing a trace link
    must never fail the email it describes.
    """
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        _log.debug("trace context dropped: not a mapping of strings")
        return None
    if not value or encode_trace_context(value) is None:
        return None
    return dict(value)


def encode_trace_context(carrier: Mapping[str, str]) -> str | None:
    """The ``_datadog`` attribute's value for ``carrier``, or None if it is too large."""
    encoded = json.dumps(dict(carrier), separators=(",", ":"))
    if len(encoded.encode()) > MAX_TRACE_CONTEXT_BYTES:
        _log.debug("trace context dropped: larger than %d bytes", MAX_TRACE_CONTEXT_BYTES)
        return None
    return encoded


def decode_trace_context(value: str | None) -> dict[str, str] | None:
    """The carrier in a ``_datadog`` attribute's value, or None if absent or malformed."""
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        _log.debug("trace context dropped: the attribute is not JSON")
        return None
    return as_carrier(parsed)


class NoTracing:
    """Tracing when Datadog is off: nothing is recorded and ddtrace is never imported."""

    def inject_context(self) -> dict[str, str] | None:
        """No span is ever active: there is no context to carry."""
        return None

    def start_span(
        self,
        name: str,
        parent: Mapping[str, str] | None,
        *,
        resource: str,
        tags: Mapping[str, str],
    ) -> AbstractContextManager[None]:
        """Run the block without a span."""
        return nullcontext()

    def correlate_logs(self, logger: Logger) -> logging.Filter | None:
        """Log lines stay as they are."""
        return None

    def wrap_lambda_handler(self, handler: HandlerT) -> HandlerT:
        """The handler itself."""
        return handler


NO_TRACING = NoTracing()


class TraceIdsLogFilter(logging.Filter):
    """Adds ``dd.trace_id`` and ``dd.span_id`` to a log record while a span is active.

    Powertools' JSON formatter writes a record's extra attributes as keys, so the ids
    land in the line under the names Datadog correlates logs and traces by.
    """

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    def filter(self, record: logging.LogRecord) -> bool:
        ids = self._tracer.get_log_correlation_context()
        trace_id = ids.get(TRACE_ID_LOG_KEY, NO_ACTIVE_TRACE)
        if trace_id != NO_ACTIVE_TRACE:
            setattr(record, TRACE_ID_LOG_KEY, trace_id)
            setattr(record, SPAN_ID_LOG_KEY, ids.get(SPAN_ID_LOG_KEY, NO_ACTIVE_TRACE))
        return True


class DatadogTracing:
    """Tracing on ddtrace's tracer: spans, context propagation and log correlation.

    Parameters
    ----------
    tracer
        The process's ``ddtrace.trace.tracer``.
    """

    def __init__(self, tracer: Tracer) -> None:
        from ddtrace.propagation.http import HTTPPropagator

        self._tracer = tracer
        self._propagator = HTTPPropagator

    def inject_context(self) -> dict[str, str] | None:
        """The active span's context as Datadog propagation headers, or None.

        None also when the headers would not fit in ``MAX_TRACE_CONTEXT_BYTES``.
        """
        span = self._tracer.current_span()
        if span is None:
            return None
        carrier: dict[str, str] = {}
        # Given the span (not its context), ddtrace makes the sampling decision first,
        # so the receiving side keeps or drops the trace as this side does.
        self._propagator.inject(span, carrier)
        return as_carrier(carrier)

    @contextmanager
    def start_span(
        self,
        name: str,
        parent: Mapping[str, str] | None,
        *,
        resource: str,
        tags: Mapping[str, str],
    ) -> Iterator[None]:
        """A span, active while the block runs, child of ``parent`` or else a new trace.

        An exception leaving the block marks the span as an error and is re-raised. The
        span active before is active again afterwards: a record's span belongs to its own
        trace, not to the invocation's, and must not leak into the next record's logs.
        """
        provider = self._tracer.context_provider
        previous = provider.active()
        span = self._tracer.start_span(
            name, child_of=self._extract(parent), resource=resource, activate=True
        )
        for key, value in tags.items():
            span.set_tag(key, value)
        try:
            with span:
                yield
        finally:
            provider.activate(previous)

    def correlate_logs(self, logger: Logger) -> logging.Filter:
        """Put trace and span ids into ``logger``'s lines while a span is active."""
        log_filter = TraceIdsLogFilter(self._tracer)
        logger.addFilter(log_filter)
        return log_filter

    def wrap_lambda_handler(self, handler: HandlerT) -> HandlerT:
        """``handler`` wrapped by the Datadog Lambda library (its Python layer provides it).

        Raises
        ------
        TracingUnavailableError
            ``datadog_lambda`` cannot be imported.
        """
        try:
            wrapper = importlib.import_module("datadog_lambda.wrapper")
        except ImportError as error:
            raise TracingUnavailableError(
                "DD_TRACE_ENABLED is true but datadog_lambda cannot be imported: add the "
                "Datadog Python Lambda layer, or set DD_TRACE_ENABLED=false"
            ) from error
        # The wrapper returns a callable object with the handler's signature.
        return cast("HandlerT", wrapper.datadog_lambda_wrapper(handler))

    def _extract(self, carrier: Mapping[str, str] | None) -> Context | None:
        if not carrier:
            return None
        try:
            context: Context = self._propagator.extract(dict(carrier))  # type: ignore[no-untyped-call]
        except Exception:  # a malformed context starts a new trace; it never fails the work
            _log.debug("trace context dropped: ddtrace could not extract it", exc_info=True)
            return None
        if not context.trace_id:
            _log.debug("trace context dropped: it holds no trace id")
            return None
        return context


def build_tracing(enabled: bool) -> NoTracing | DatadogTracing:
    """The process's tracing: ``NO_TRACING`` when off, else ddtrace's tracer.

    Raises
    ------
    TracingUnavailableError
        ``enabled`` but ``ddtrace`` cannot be imported.
    """
    if not enabled:
        return NO_TRACING
    try:
        from ddtrace.trace import tracer
    except ImportError as error:
        raise TracingUnavailableError(
            "DD_TRACE_ENABLED is true but ddtrace cannot be imported: install it (the Lambda "
            "gets it from the Datadog Python layer, the image from the service extra), or "
            "set DD_TRACE_ENABLED=false"
        ) from error
    return DatadogTracing(tracer)
