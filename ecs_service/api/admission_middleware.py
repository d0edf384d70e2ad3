"""Authentication, rate limit and admission of /v1 requests, before FastAPI routes them.

All three happen here, in plain ASGI, so that the requests a flood sends are refused
(401, 429, or 503 "overloaded") for a fraction of what routing and dependency solving
would cost: the api's event loop stays free for the requests it admits, other tenants'
first. And every authenticated /v1 request spends a token of its key's rate limit and
carries the RateLimit headers, whatever FastAPI answers it (a 422, 404 or 405 too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from ecs_service.api import problems
from ecs_service.api.admission import UNAUTHENTICATED, OverloadedError
from ecs_service.api.key_cache import MISS, KeyCache
from ecs_service.api.request_limits import send_problem
from ecs_service.api.response_headers import STATE_KEY
from ecs_service.api_keys import Principal, key_id_of
from shared.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from starlette.types import ASGIApp, Receive, Scope, Send

    from ecs_service.api.dependencies import ApiServices
    from ecs_service.tenant_limits import RateDecision, RequestRateLimiter

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


def lookup_party(cache: KeyCache, presented: str) -> Hashable:
    """Whose share of the slots the database lookup of a key the cache missed takes.

    A key id this process read as its tenant's active key is looked up as that tenant
    (its row expired, the listener reconnected or is down): a flood of made-up keys
    never crowds it out. Any other (a new key, or a made-up one), listening or not,
    shares the small part of the slots the unauthenticated get.
    """
    key_id = key_id_of(presented)
    tenant_id = None if key_id is None else cache.tenant_of(key_id)
    return UNAUTHENTICATED if tenant_id is None else tenant_id


def _unavailable(error: Exception) -> bool:
    if isinstance(error, OperationalError | PoolTimeoutError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


class AdmissionMiddleware:
    """For each /v1 request (CORS preflights aside): authenticate its key (from the key
    cache; a key not in it is read from the database, admitted as its tenant if the
    process knows the key id, else as "unauthenticated"), take a token of the key's rate
    limit, then hold a slot of the admission gate for its tenant while the app answers it."""

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
        state = scope.setdefault("state", {})
        state[PRINCIPAL_STATE_KEY] = principal
        limiter = services.limiter
        # Mostly decided here, from the tokens this process holds: no slot, no thread.
        decision = None if limiter is None else limiter.take_locally(principal.key_id)
        if limiter is not None and decision is not None:
            if not decision.allowed:
                await _send_rate_limited(scope, send, limiter, decision)
                return
            # ResponseHeadersMiddleware puts them on the response, whatever it is.
            state[STATE_KEY] = decision.headers(limiter.policy)
        try:
            async with services.gate.admitted(principal.tenant_id):
                if limiter is not None and decision is None:
                    # A lease is due: one round trip in a thread, under the tenant's slot,
                    # so leases never hold more threads than the gate has slots.
                    decision = await self._lease(scope, send, limiter, principal.key_id)
                    if decision is None or not decision.allowed:
                        return
                    state[STATE_KEY] = decision.headers(limiter.policy)
                await self.app(scope, receive, send)
        except OverloadedError:
            await send_problem(scope, send, problems.overloaded())

    async def _lease(
        self, scope: Scope, send: Send, limiter: RequestRateLimiter, key_id: str
    ) -> RateDecision | None:
        """``take`` in a worker thread; answers a refusal (429) or a database outage (503)
        itself, and then gives None or the refusal."""
        try:
            decision = await self.services().in_thread(limiter.take, key_id)
        except (DBAPIError, PoolTimeoutError) as error:
            if not _unavailable(error):
                raise
            logger.warning("database unavailable", extra={"error": str(error).splitlines()[0]})
            await send_problem(scope, send, problems.service_unavailable())
            return None
        if not decision.allowed:
            await _send_rate_limited(scope, send, limiter, decision)
        return decision

    async def _authenticate(self, services: ApiServices, presented: str | None) -> Principal | None:
        if presented is None:
            return None
        found = services.authenticator.from_cache(presented)
        if found is MISS:
            party = lookup_party(services.authenticator.cache, presented)
            async with services.gate.admitted(party):
                found = await services.in_thread(services.authenticator.from_database, presented)
        return found if isinstance(found, Principal) else None


async def _send_rate_limited(
    scope: Scope, send: Send, limiter: RequestRateLimiter, decision: RateDecision
) -> None:
    await send_problem(scope, send, problems.rate_limited(decision.headers(limiter.policy)))
