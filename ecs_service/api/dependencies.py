"""What routes receive: the caller's tenant, a database session in a transaction, and the
process's metrics — and how a request gets to use the database at all.

A /v1 request goes through these steps, all but the last on the event loop:

1. Authentication (``AdmissionMiddleware``): the key is checked against the process's
   key cache (no I/O). Only a key the cache does not hold is read from the database, in
   a worker thread that returns its connection before it ends, admitted as its tenant
   if the process knows the key id (``KeyCache.tenant_of``), else as "unauthenticated".
2. Rate limit (``AdmissionMiddleware``): the request spends a token of its key's bucket
   that the process holds (no I/O), or is refused with 429; only when a lease is due
   does ``take`` ask PostgreSQL, in a worker thread under the slot of step 3. Before
   FastAPI parses anything, so every answer (a 422, 404 or 405 too) spent a token and
   carries the RateLimit headers.
3. Admission (``AdmissionMiddleware``): the request takes a slot of the admission gate
   for its tenant, or is refused at once with 503 "overloaded"
   (``ecs_service.api.admission``).
4. One worker thread (``UnitOfWorkRoute``) then runs the request's whole database work:
   the route and the commit. So a request holds at most one connection, never waits
   for a thread while holding it, and its transaction commits before the response is
   sent (a 201 always means a committed message; a failed COMMIT is the 503 the client
   sees — tests/integration/faults found that).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from uuid import UUID

from fastapi import Depends, Request
from fastapi.dependencies.utils import get_typed_return_annotation, get_typed_signature
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ecs_service.api import problems
from ecs_service.api.admission import AdmissionGate
from ecs_service.api.admission_middleware import PRINCIPAL_STATE_KEY
from ecs_service.api.key_cache import Authenticator
from ecs_service.api_keys import Principal
from ecs_service.thread_safe_metrics import ThreadSafeMetrics

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import sessionmaker

    from ecs_service.api.worker_threads import WorkerThreads
    from ecs_service.tenant_limits import RequestRateLimiter

T = TypeVar("T")

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer hrld_…`")


@dataclass(frozen=True)
class ApiServices:
    """What the api builds once per process (its lifespan) and every request uses."""

    engine: Engine
    sessions: sessionmaker[Session]
    gate: AdmissionGate
    authenticator: Authenticator
    # None: no request rate limit (an app built for a test of something else).
    limiter: RequestRateLimiter | None = None
    # Autocommit connections, for GETs and one-statement writes; None: ``sessions``.
    autocommit: Engine | None = None
    # Where requests' blocking work runs; None: Starlette's thread pool.
    threads: WorkerThreads | None = None

    async def in_thread(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` in a worker thread (``ecs_service.api.worker_threads``)."""
        if self.threads is None:
            return await run_in_threadpool(func, *args)
        return await self.threads.run(func, *args)


def services_of(request: Request) -> ApiServices:
    services: ApiServices = request.app.state.services
    return services


class UnitOfWork:
    """One admitted request's database work, run in one worker thread by ``run``.

    A read (GET), or a route's work that is one statement (``one_statement_unless``), runs
    on an autocommit connection (no BEGIN and COMMIT round trips) and without an ORM
    session unless the route asks for one: making and closing a session around one
    statement cost 50 us of CPU a request (321 vs 270 us for a GET's statement)."""

    def __init__(
        self, services: ApiServices, principal: Principal, *, autocommit: bool = False
    ) -> None:
        self.services = services
        self.principal = principal
        self.autocommit = autocommit and services.autocommit is not None
        self._connection: Connection | None = None
        # No I/O: the session takes a connection when the route first uses it.
        self._session = None if self.autocommit else services.sessions()

    @property
    def connection(self) -> Connection:
        """The unit's connection: its session's (in its transaction), or, in an autocommit
        unit, one of its own, taken on first use. In the worker thread only."""
        if self._connection is None:
            engine = self.services.autocommit
            if self.autocommit and engine is not None:
                self._connection = engine.connect()
            else:
                self._connection = self.session.connection()
        return self._connection

    @property
    def session(self) -> Session:
        """The unit's ORM session; in an autocommit unit, made on first use over its
        connection (a message's feedback, the list routes)."""
        if self._session is None:
            self._session = Session(bind=self.connection)
        return self._session

    def run(self, work: Callable[[], T]) -> T:
        """Do ``work`` in a transaction that commits when it returns (rolls back if it
        raises); a read, statement by statement. Blocking: a worker thread.
        (``AdmissionMiddleware`` took the request's token of its key's rate limit already.)"""
        if not self.autocommit:
            with self.session, self.session.begin():
                return work()
        try:
            return work()
        finally:
            if self._session is not None:
                self._session.close()
            if self._connection is not None:
                self._connection.close()


F = TypeVar("F", bound=Callable[..., Any])
ONE_STATEMENT_UNLESS = "herald_one_statement_unless"


def one_statement_unless(header: str) -> Callable[[F], F]:
    """Marks a write route whose work is a single statement unless the request carries
    ``header`` (POST /v1/messages without an Idempotency-Key): it then runs on an
    autocommit connection, the statement its own transaction, committed before the
    route returns (no BEGIN and COMMIT round trips). The route must do nothing after
    that statement that should undo it if it fails."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, ONE_STATEMENT_UNLESS, header.lower())
        return endpoint

    return mark


def _autocommits(request: Request) -> bool:
    if request.method == "GET":
        return True
    # The endpoint as routed: UnitOfWorkRoute's wrapper, whose __dict__ is the route's.
    unless = getattr(request.scope.get("endpoint"), ONE_STATEMENT_UNLESS, None)
    return isinstance(unless, str) and unless not in request.headers


def _in_unit_of_work(endpoint: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """The endpoint as FastAPI sees it: a coroutine that runs ``endpoint`` and its commit in
    one worker thread. The parameters annotated ``SessionDep``, ``UnitDep``, ``TenantDep``
    and ``MetricsDep`` are not FastAPI dependencies of it: the wrapper hands them over from
    the request's unit of work, which it builds itself. Resolving them as dependencies cost
    six dependency solves a request (session, unit, principal, bearer, tenant, metrics);
    now the bearer scheme (for the OpenAPI docs) is the route's only one."""
    typed = get_typed_signature(endpoint)
    injected = {
        name: role
        for name, parameter in typed.parameters.items()
        for hint, role in _INJECTED
        if parameter.annotation == hint
    }
    if not injected:

        @functools.wraps(endpoint)
        async def run_alone(*args: Any, **kwargs: Any) -> T:
            return await run_in_threadpool(functools.partial(endpoint, *args, **kwargs))

        return run_alone
    kept = [parameter for name, parameter in typed.parameters.items() if name not in injected]
    request_name = next((p.name for p in kept if p.annotation is Request), None)
    if request_name is None:
        request_name = "_unit_request"
        kept.append(
            inspect.Parameter(request_name, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        )
    reads_request = request_name in typed.parameters

    async def run(**kwargs: Any) -> T:
        request: Request = kwargs[request_name] if reads_request else kwargs.pop(request_name)
        principal = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
        if not isinstance(principal, Principal):
            raise problems.unauthorized()
        unit = UnitOfWork(services_of(request), principal, autocommit=_autocommits(request))
        metrics = request.app.state.metrics

        def work() -> T:
            # In the worker thread: a unit's session or connection may connect.
            for name, role in injected.items():
                kwargs[name] = _given(role, unit, metrics)
            return endpoint(**kwargs)

        return await unit.services.in_thread(unit.run, work)

    functools.update_wrapper(run, endpoint)
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        sorted(kept, key=lambda parameter: parameter.kind),
        return_annotation=get_typed_return_annotation(endpoint) or inspect.Signature.empty,
    )
    return run


# How the OpenAPI document names the bearer scheme (FastAPI's name for ``bearer``).
BEARER_SCHEME_NAME = bearer.scheme_name


class UnitOfWorkRoute(APIRoute):
    """A route whose sync endpoint runs inside its request's ``UnitOfWork``: route and
    commit in one worker thread, the request's only one. (FastAPI would run a
    sync endpoint in one thread, then validate its answer in another: to FastAPI, this
    endpoint is a coroutine, and the answer is validated on the event loop.)

    Such a route's operation names the bearer scheme in the OpenAPI document
    (``security``; the app's document declares the scheme), without the scheme being a
    dependency FastAPI solves on every request: ``AdmissionMiddleware`` checked the key
    already, and solving the dependency only to document it cost 0.3 ms of profiled CPU a
    GET."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _in_unit_of_work(endpoint)
            if getattr(endpoint, "__signature__", None) is not None:
                extra = dict(kwargs.get("openapi_extra") or {})
                extra["security"] = [*extra.get("security", []), {BEARER_SCHEME_NAME: []}]
                kwargs["openapi_extra"] = extra
        super().__init__(path, endpoint, **kwargs)


async def get_principal(
    request: Request,
    # Documents the scheme (OpenAPI); AdmissionMiddleware has checked the key already.
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The tenant and key of the request's active API key (``AdmissionMiddleware``)."""
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if not isinstance(principal, Principal):
        raise problems.unauthorized()
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def admit(request: Request, principal: PrincipalDep) -> AsyncIterator[UnitOfWork]:
    """The request's unit of work, for a route outside ``UnitOfWorkRoute`` (which builds
    its own; ``AdmissionMiddleware`` holds the request's slot of the gate)."""
    yield UnitOfWork(services_of(request), principal, autocommit=_autocommits(request))


# scope="function": the unit of work ends as soon as the route has returned.
UnitDep = Annotated[UnitOfWork, Depends(admit, scope="function")]


async def get_session(unit: UnitDep) -> Session:
    """The request's session: its transaction commits when the route returns, and rolls
    back if it raises (``UnitOfWork.run``)."""
    return unit.session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_tenant_id(unit: UnitDep) -> UUID:
    """The tenant whose active API key the request carries."""
    return unit.principal.tenant_id


TenantDep = Annotated[UUID, Depends(get_tenant_id)]


async def get_metrics(request: Request) -> ThreadSafeMetrics:
    """The api's metrics; MetricsFlushMiddleware publishes what a request added."""
    published: ThreadSafeMetrics = request.app.state.metrics
    return published


MetricsDep = Annotated[ThreadSafeMetrics, Depends(get_metrics)]


# The parameters UnitOfWorkRoute hands over itself (``_in_unit_of_work``), by annotation.
_INJECTED: list[tuple[Any, str]] = [
    (SessionDep, "session"),
    (UnitDep, "unit"),
    (TenantDep, "tenant"),
    (MetricsDep, "metrics"),
]


def _given(role: str, unit: UnitOfWork, metrics: ThreadSafeMetrics) -> object:
    if role == "session":
        return unit.session
    if role == "unit":
        return unit
    return unit.principal.tenant_id if role == "tenant" else metrics
