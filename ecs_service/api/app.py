"""The FastAPI application: routes, problem details, request ids, and its lifespan.

Outside FastAPI's own stack, every request passes, in order: ``RequestContextMiddleware``
(request id, one log line), ``ResponseHeadersMiddleware`` (security and rate-limit
headers on every response), ``CORSMiddleware`` (with ``CORS_ALLOWED_ORIGINS``),
``BodyLimitMiddleware`` (the body's cap and read timeout, before anything parses it or
looks at a key). Inside it, ``AdmissionMiddleware`` authenticates /v1 requests and admits
them (``ecs_service.api.admission_middleware``) before FastAPI routes them.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from ecs_service.api import problems
from ecs_service.api.admission import AdmissionGate
from ecs_service.api.admission_middleware import AdmissionMiddleware
from ecs_service.api.dependencies import BEARER_SCHEME_NAME, ApiServices, bearer
from ecs_service.api.fast_lane import FastLane
from ecs_service.api.key_cache import Authenticator, KeyCache, RevocationListener
from ecs_service.api.request_limits import BodyLimitMiddleware
from ecs_service.api.response_headers import ResponseHeadersMiddleware
from ecs_service.api.routes import health
from ecs_service.api.routes import messages as message_routes
from ecs_service.api.routes import suppressions as suppression_routes
from ecs_service.api.routes.docs import install_docs
from ecs_service.api.worker_threads import WorkerThreads
from ecs_service.db.engine import build_engine, build_sessions
from ecs_service.tenant_limits import DailyQuotaExceededError, RateLimitPolicy, RequestRateLimiter
from ecs_service.thread_safe_metrics import ThreadSafeMetrics
from shared.observability import logger, metrics
from shared.tracing import NO_TRACING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ecs_service.settings import ApiSettings, DatabaseSettings
    from shared.ports import Tracing

REQUEST_ID_HEADER = "x-request-id"
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def logged_path(scope: Scope) -> str:
    """The path a request's log line records: its route's template
    (``/v1/suppressions/{address}``), never the values in it, which may be an email address;
    a path no route matched keeps its first two segments only (``/v1/suppressions/…``)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if isinstance(template, str):
        return template
    path: str = scope["path"]
    segments = path.split("/")
    return path if len(segments) <= 3 else "/".join(segments[:3]) + "/…"


class RequestContextMiddleware:
    """Gives every request an id (the caller's ``X-Request-ID`` if sane), puts it on every
    log line of the request and on the response, and logs one line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = incoming if VALID_REQUEST_ID.match(incoming) else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        logger.thread_safe_append_keys(request_id=request_id)
        started = time.perf_counter()
        status_code = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": logged_path(scope),
                    "status": status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            logger.thread_safe_remove_keys(["request_id"])


class MetricsFlushMiddleware:
    """Publishes the metrics a request added once it is answered: one EMF line per request
    that counted something. Requests run concurrently in threads, so a flush may carry
    another request's values too; the lock in ThreadSafeMetrics means none is lost or
    published twice."""

    def __init__(self, app: ASGIApp, published: ThreadSafeMetrics) -> None:
        self.app = app
        self.published = published

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.published.flush()


def _problem_response(request: Request, error: problems.ProblemError) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    body = error.to_problem(instance=request.url.path, request_id=request_id)
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=error.status,
        headers=error.headers,
        media_type=problems.PROBLEM_JSON,
    )


def _field_errors(errors: Any) -> list[problems.FieldError]:
    return [
        problems.FieldError(
            location=".".join(str(part) for part in error["loc"]),
            message=str(error["msg"]).removeprefix("Value error, "),
        )
        for error in errors
    ]


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        if (
            isinstance(route, Route)
            and route.methods
            and route.matches(request.scope)[0] is not Match.NONE
        ):
            methods |= route.methods
    return sorted(methods)


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error as problem details; a database outage is a 503, never a 500."""

    @app.exception_handler(problems.ProblemError)
    async def on_problem(request: Request, error: problems.ProblemError) -> JSONResponse:
        return _problem_response(request, error)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return _problem_response(request, problems.validation_error(_field_errors(error.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kinds = {
            400: ("bad-request", "Bad Request"),
            404: ("not-found", "Not Found"),
            405: ("method-not-allowed", "Method Not Allowed"),
        }
        kind, title = kinds.get(error.status_code, ("http-error", "HTTP Error"))
        detail = "no such route" if error.status_code == 404 else str(error.detail)
        headers = dict(error.headers or {})
        if error.status_code == 405:
            # Starlette names only the first matching route's methods; a path served by
            # several routes (GET and POST /v1/messages) must name them all.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        problem = problems.ProblemError(error.status_code, kind, title, detail, headers=headers)
        return _problem_response(request, problem)

    @app.exception_handler(DailyQuotaExceededError)
    async def on_quota_exceeded(request: Request, error: DailyQuotaExceededError) -> JSONResponse:
        return _problem_response(
            request,
            problems.quota_exceeded(
                error.limit, error.used, error.retry_after_seconds, error.requested
            ),
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    async def on_database_unavailable(request: Request, error: Exception) -> JSONResponse:
        logger.warning("database unavailable", extra={"error": str(error).splitlines()[0]})
        return _problem_response(request, problems.service_unavailable())

    @app.exception_handler(DBAPIError)
    async def on_database_error(request: Request, error: DBAPIError) -> JSONResponse:
        if error.connection_invalidated:
            logger.warning("database connection lost", extra={"error": str(error).splitlines()[0]})
            return _problem_response(request, problems.service_unavailable())
        return await on_unexpected(request, error)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return _problem_response(
            request,
            problems.ProblemError(
                500,
                "internal-error",
                "Internal Server Error",
                "an unexpected error; quote the request id",
            ),
        )


class HeraldApi(FastAPI):
    """FastAPI with the request id, response headers, CORS and body limit outside its whole
    stack: so they apply to every answer, its 500s and early refusals included (a browser
    reads a 413 or 503 only with the CORS headers), and the body limit answers before
    anything in the app runs."""

    cors_origins: tuple[str, ...] = ()

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = BodyLimitMiddleware(super().build_middleware_stack())
        if self.cors_origins:
            app = CORSMiddleware(
                app,
                allow_origins=self.cors_origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                expose_headers=[
                    "Location",
                    "X-Request-ID",
                    "Retry-After",
                    "RateLimit",
                    "RateLimit-Policy",
                    "Idempotent-Replayed",
                ],
                max_age=600,
            )
        return RequestContextMiddleware(ResponseHeadersMiddleware(app))


def admission_capacity(database: DatabaseSettings) -> int:
    """The admission gate's slots: one per pooled connection, less one kept for /readyz."""
    return max(1, database.pool_size + database.max_overflow - 1)


def create_app(
    api: ApiSettings, database: DatabaseSettings, *, tracing: Tracing = NO_TRACING
) -> FastAPI:
    """The api, with its engine opened on start-up and disposed of on shutdown.

    ``tracing`` gives each new message its request's trace context; none by default.
    """
    published = ThreadSafeMetrics(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # No pre-ping: a round trip per request saved; a stale connection is a 503 once
        # and invalidates the pool (ecs_service.db.engine.build_engine).
        engine = build_engine(database, application_name="herald-api", pre_ping=False)
        cache = KeyCache()
        listener = RevocationListener(
            build_engine(database, application_name="herald-api-keys", pooled=False), cache
        )
        gate = AdmissionGate(admission_capacity(database))
        policy = RateLimitPolicy(api.rate_limit_per_second, api.rate_limit_burst)
        limiter = RequestRateLimiter(engine, policy)
        # More worker threads than slots: an admitted request never waits for a thread.
        threads = anyio.to_thread.current_default_thread_limiter()
        threads.total_tokens = max(threads.total_tokens, gate.capacity + 8)
        workers = WorkerThreads(gate.capacity + 8)
        app.state.services = ApiServices(
            engine=engine,
            sessions=build_sessions(engine),
            autocommit=engine.execution_options(isolation_level="AUTOCOMMIT"),
            gate=gate,
            authenticator=Authenticator(cache, engine),
            limiter=limiter,
            threads=workers,
        )
        app.state.sender_email = api.sender_email
        listener.start()
        logger.info("api started", extra={"pool_size": database.pool_size, "slots": gate.capacity})
        try:
            yield
        finally:
            await run_in_threadpool(listener.stop)
            await run_in_threadpool(workers.close)
            listener.engine.dispose()
            limiter.close()
            engine.dispose()
            published.flush()
            logger.info("api stopped")

    app = HeraldApi(
        title="Herald",
        version="1",
        summary="Scheduled email: write it, choose when, watch it go out.",
        lifespan=lifespan,
        docs_url=None,  # install_docs serves /docs without a CDN
        redoc_url=None,
    )
    app.state.metrics = published
    app.state.tracing = tracing
    app.include_router(health.router)
    app.include_router(message_routes.router)
    app.include_router(suppression_routes.router)
    # In front of FastAPI's routing: the two hot paths' happy path (ecs_service.api.fast_lane).
    app.router.middleware_stack = FastLane(
        app.router.middleware_stack, message_routes.router.routes
    )
    install_docs(app)
    install_problem_handlers(app)
    app.cors_origins = tuple(api.cors_origins)
    app.add_middleware(MetricsFlushMiddleware, published=published)
    # The outermost of the app's own middleware: inside ServerErrorMiddleware (a bug is a
    # 500 problem), outside everything that costs a refused request anything. CORS
    # preflights (OPTIONS) pass it: CORSMiddleware, outside, answers them.
    app.add_middleware(AdmissionMiddleware, services=lambda: app.state.services)
    install_problem_schema(app)
    return app


def install_problem_schema(app: FastAPI) -> None:
    """Add the Problem schema the routes' problem responses refer to, to the OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema = problems.Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(schema.pop("$defs", {}))
            schemas["Problem"] = schema
            # UnitOfWorkRoute's operations name the bearer scheme (``security``) without
            # FastAPI solving it per request, so FastAPI does not declare it: declared here.
            schemes = document["components"].setdefault("securitySchemes", {})
            schemes.setdefault(
                BEARER_SCHEME_NAME, jsonable_encoder(bearer.model, by_alias=True, exclude_none=True)
            )
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
