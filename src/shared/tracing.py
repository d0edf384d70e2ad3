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

With Datadog off, the task runner traces with X-Ray (``Tracing: Active``) without the X-Ray
SDK, whose import built two X-Ray clients and cost 130 ms of every cold start:
``XRayTracing`` writes the ``herald.task`` subsegment of each task, and one subsegment per
AWS call (SES, SQS, DynamoDB), under Lambda's own segment, straight to the X-Ray daemon
(one UDP datagram each, only for a sampled invocation). Nothing is imported or built for it
at init but a socket on first use.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import secrets
import socket
import time
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar, cast

from shared.settings import TracingSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from contextlib import AbstractContextManager

    from aws_lambda_powertools import Logger
    from botocore.client import BaseClient
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


XRAY_TRACE_HEADER_ENV = "_X_AMZN_TRACE_ID"  # Lambda sets it for every invocation
XRAY_DAEMON_ENV = "AWS_XRAY_DAEMON_ADDRESS"  # Lambda sets it when tracing is active
XRAY_DISABLED_ENV = "POWERTOOLS_TRACE_DISABLED"  # the template's switch (true with Datadog)
_XRAY_PREAMBLE = b'{"format":"json","version":1}\n'


def xray_parent(header: str | None) -> tuple[str, str] | None:
    """(trace id, parent id) of a sampled invocation's ``_X_AMZN_TRACE_ID``, else None."""
    if not header:
        return None
    fields = dict(part.split("=", 1) for part in header.split(";") if "=" in part)
    if fields.get("Sampled") != "1" or "Root" not in fields or "Parent" not in fields:
        return None
    return fields["Root"], fields["Parent"]


def xray_daemon(address: str) -> tuple[str, int]:
    """The UDP address in ``AWS_XRAY_DAEMON_ADDRESS`` (``host:port`` or
    ``tcp:host:port udp:host:port``)."""
    for part in address.split():
        if part.startswith("tcp:"):
            continue
        host, _, port = part.removeprefix("udp:").rpartition(":")
        return host, int(port)
    raise ValueError(f"no UDP address in {address!r}")


class XRayTracing:
    """X-Ray subsegments of Lambda's own segment, sent straight to the X-Ray daemon.

    Parameters
    ----------
    daemon
        The daemon's UDP (host, port).
    environ
        Where the invocation's ``_X_AMZN_TRACE_ID`` is read (Lambda updates it per
        invocation); injected for tests.
    send
        Sends one datagram to the daemon; a UDP socket, opened on first use, by default.
    """

    def __init__(
        self,
        daemon: tuple[str, int],
        *,
        environ: Mapping[str, str] = os.environ,
        send: Callable[[bytes], None] | None = None,
    ) -> None:
        self._daemon = daemon
        self._environ = environ
        self._send = send or self._send_udp
        self._socket: socket.socket | None = None
        self._open: list[str] = []  # ids of the subsegments open now, innermost last
        self._service_names: dict[str, str] = {}  # "sesv2" -> "SESv2", of instrumented clients

    def inject_context(self) -> dict[str, str] | None:
        """X-Ray's context is not carried in ``_datadog``: nothing to inject."""
        return None

    @contextmanager
    def start_span(
        self,
        name: str,
        parent: Mapping[str, str] | None,
        *,
        resource: str,
        tags: Mapping[str, str],
    ) -> Iterator[None]:
        """A subsegment around the block, annotated with ``resource`` and ``tags``.

        ``parent`` (a Datadog context) is ignored: the parent is Lambda's segment.
        """
        annotations = {_annotation_key(key): value for key, value in tags.items()}
        annotations["resource"] = resource
        with self._subsegment(name, annotations=annotations):
            yield

    def correlate_logs(self, logger: Logger) -> logging.Filter | None:
        """Powertools' Logger already writes ``xray_trace_id`` on every line."""
        return None

    def wrap_lambda_handler(self, handler: HandlerT) -> HandlerT:
        """The handler itself: Lambda records the invocation's segment."""
        return handler

    def instrument(self, client: BaseClient) -> None:
        """Record a subsegment (namespace ``aws``) for every call ``client`` makes."""
        service = client.meta.service_model.service_id
        events = client.meta.events
        events.register("before-call", self._call_started)
        events.register("after-call", self._call_answered)
        events.register("after-call-error", self._call_failed)
        self._service_names[service.hyphenize()] = str(service)

    @contextmanager
    def _subsegment(
        self, name: str, *, annotations: Mapping[str, str] | None = None
    ) -> Iterator[dict[str, Any] | None]:
        document = self._begin(name)
        if document is not None and annotations:
            document["annotations"] = dict(annotations)
        try:
            yield document
        except Exception:
            if document is not None:
                document["fault"] = True
            raise
        finally:
            self._end(document)

    def _begin(self, name: str) -> dict[str, Any] | None:
        parent = xray_parent(self._environ.get(XRAY_TRACE_HEADER_ENV))
        if parent is None:
            return None
        trace_id, segment_id = parent
        document: dict[str, Any] = {
            "name": name,
            "id": secrets.token_hex(8),
            "trace_id": trace_id,
            "parent_id": self._open[-1] if self._open else segment_id,
            "type": "subsegment",
            "start_time": time.time(),
        }
        self._open.append(document["id"])
        return document

    def _end(self, document: dict[str, Any] | None) -> None:
        if document is None:
            return
        if self._open and self._open[-1] == document["id"]:
            self._open.pop()
        document["end_time"] = time.time()
        try:
            payload = json.dumps(document, separators=(",", ":"), default=str).encode()
            self._send(_XRAY_PREAMBLE + payload)
        except OSError:  # a lost subsegment must never fail the email it describes
            _log.debug("X-Ray subsegment dropped: the daemon is unreachable", exc_info=True)

    def _send_udp(self, datagram: bytes) -> None:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.sendto(datagram, self._daemon)

    def _call_started(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        service = self._service_names.get(model.service_model.service_id.hyphenize(), "AWS")
        document = self._begin(service)
        if document is not None:
            document["namespace"] = "aws"
            document["aws"] = {"operation": model.name}
            context["herald_xray_subsegment"] = document

    def _call_answered(
        self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        document = context.pop("herald_xray_subsegment", None)
        if document is None:
            return
        status = int(http_response.status_code)
        document["http"] = {"response": {"status": status}}
        request_id = parsed.get("ResponseMetadata", {}).get("RequestId")
        if request_id:
            document["aws"]["request_id"] = request_id
        if status == 429:
            document["throttle"] = True
        if 400 <= status < 500:
            document["error"] = True
        elif status >= 500:
            document["fault"] = True
        self._end(document)

    def _call_failed(self, context: dict[str, Any], **_: Any) -> None:
        document = context.pop("herald_xray_subsegment", None)
        if document is not None:
            document["fault"] = True
            self._end(document)


def _annotation_key(key: str) -> str:
    """An X-Ray annotation key: letters, digits and underscores only."""
    return "".join(c if c.isalnum() else "_" for c in key)


def build_lambda_tracing(
    environ: Mapping[str, str] = os.environ,
) -> NoTracing | DatadogTracing | XRayTracing:
    """The task runner's tracing: Datadog when ``DD_TRACE_ENABLED``; else X-Ray subsegments
    when Lambda traces (``AWS_XRAY_DAEMON_ADDRESS`` set and ``POWERTOOLS_TRACE_DISABLED``
    not true); else none.

    Raises
    ------
    TracingUnavailableError
        Datadog is on but ``ddtrace`` cannot be imported.
    """
    if datadog_enabled():
        return build_tracing(True)
    daemon = environ.get(XRAY_DAEMON_ENV, "")
    disabled = environ.get(XRAY_DISABLED_ENV, "false").strip().lower() in {"true", "1"}
    if not daemon or disabled:
        return NO_TRACING
    return XRayTracing(xray_daemon(daemon), environ=environ)


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
