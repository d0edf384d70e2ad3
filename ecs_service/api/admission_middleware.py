"""Authentication and admission of /v1 requests, before FastAPI routes them.

Both happen here, in plain ASGI, so that the requests a flood sends are refused (401, or
503 "overloaded") for a fraction of what routing and dependency solving would cost: the
api's event loop stays free for the requests it admits, other tenants' first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool

from ecs_service.api import problems
from ecs_service.api.admission import UNAUTHENTICATED, OverloadedError
from ecs_service.api.key_cache import MISS
from ecs_service.api.request_limits import send_problem
from ecs_service.api_keys import Principal, key_id_of
from shared.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp, Receive, Scope, Send

    from ecs_service.api.dependencies import ApiServices

# Where an authenticated request's principal waits for the route's dependencies.
PRINCIPAL_STATE_KEY = "principal"


def bearer_token(scope: Scope) -> str | None:
    """The credentials of ``Authorization: Bearer <credentials>``, or None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() == "bearer" and credentials:
                return credentials.strip()
            return None
    return None


def _unavailable(error: Exception) -> bool:
    if isinstance(error, OperationalError | PoolTimeoutError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


class AdmissionMiddleware:
    """For each /v1 request (CORS preflights aside): authenticate its key (from the key
    cache; a key not in it is read from the database, admitted as "unauthenticated"),
    then hold a slot of the admission gate for its tenant while the app answers it."""

    def __init__(self, app: ASGIApp, services: Callable[[], ApiServices]) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not (scope["path"] == "/v1" or scope["path"].startswith("/v1/"))
            or scope["method"] == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        services = self.services()
        presented = bearer_token(scope)
        try:
            principal = await self._authenticate(services, presented)
        except OverloadedError:
            await send_problem(scope, send, problems.overloaded())
            return
        except (DBAPIError, PoolTimeoutError) as error:
            if not _unavailable(error):
                raise
            logger.warning("database unavailable", extra={"error": str(error).splitlines()[0]})
            await send_problem(scope, send, problems.service_unavailable())
            return
        if principal is None:
            await send_problem(scope, send, problems.unauthorized())
            return
        scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
        if services.limiter is not None and (refused := services.limiter.refusal(principal.key_id)):
            # Over its rate already: answered here, before it holds a slot or a thread.
            await send_problem(
                scope, send, problems.rate_limited(refused.headers(services.limiter.policy))
            )
            return
        try:
            async with services.gate.admitted(principal.tenant_id):
                await self.app(scope, receive, send)
        except OverloadedError:
            await send_problem(scope, send, problems.overloaded())

    async def _authenticate(self, services: ApiServices, presented: str | None) -> Principal | None:
        if presented is None:
            return None
        found = services.authenticator.from_cache(presented)
        if found is MISS:
            # A miss of a listening cache is a new key, or a made-up one: all such requests
            # share a small part of the slots. While the cache is not listening (start-up,
            # a lost connection) every key misses: each key gets a tenant's share.
            party = (
                UNAUTHENTICATED
                if services.authenticator.cache.trusted
                else ("key", key_id_of(presented))
            )
            async with services.gate.admitted(party):
                found = await run_in_threadpool(services.authenticator.from_database, presented)
        return found if isinstance(found, Principal) else None
