"""The api's two hot paths, ``POST /v1/messages`` without an Idempotency-Key and
``GET /v1/messages/{id}``, past FastAPI's per-request machinery.

For every request FastAPI matches the path against each route, solves the endpoint's
parameters one by one (path, headers, body), validates the body from ``json.loads``'
objects and validates the endpoint's answer again before serializing it: 15-20 % of such a
request's CPU. ``FastLane`` sits in front of FastAPI's router (inside its exception
handlers, so every error is the same problem+json) and takes only a request whose parsing
cannot fail: an authenticated GET of a canonical UUID, or an unkeyed POST of
``application/json`` that ``MessageCreate`` accepts. It calls the same endpoint FastAPI
would, with the arguments FastAPI would give it, and answers as FastAPI would (the same
status, headers and bytes; ``tests/integration/test_api_fast_lane.py`` compares them).
Anything else (an invalid body or id, an Idempotency-Key, another content type, a path
with a root) goes to FastAPI unchanged, the body it read replayed. FastAPI keeps both
routes: the OpenAPI document, and the requests the lane leaves.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ecs_service.api.admission_middleware import PRINCIPAL_STATE_KEY
from ecs_service.api.request_limits import replay
from ecs_service.api.schemas import MessageCreate

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp, Receive, Scope, Send

MESSAGES = "/v1/messages"
ONE_MESSAGE = "/v1/messages/{message_id}"
_PREFIX = MESSAGES + "/"
# The form FastAPI answers with: anything else (upper case, no hyphens, braces) FastAPI
# parses or refuses itself.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _route(routes: Sequence[BaseRoute], method: str, path: str) -> APIRoute:
    for route in routes:
        if (
            isinstance(route, APIRoute)
            and route.path_format == path
            and method in (route.methods or ())
        ):
            return route
    raise LookupError(f"no route {method} {path}")


def _unkeyed_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """One Content-Type, ``application/json``, and no Idempotency-Key (anything else, two
    Content-Types among them, FastAPI reads itself: it takes the first of several)."""
    json: bool | None = None
    for name, value in headers:
        if name == b"idempotency-key":
            return False
        if name == b"content-type":
            if json is not None:
                return False
            json = value == b"application/json"
    return bool(json)


class FastLane:
    """In front of FastAPI's router: answers the happy path of ``POST /v1/messages``
    (unkeyed) and ``GET /v1/messages/{id}`` through their routes' endpoints, and hands
    every other request to ``app`` (the router) as it came."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.create = _route(routes, "POST", MESSAGES)
        self.read = _route(routes, "GET", ONE_MESSAGE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and PRINCIPAL_STATE_KEY in scope.get("state", {})
            and not scope.get("root_path")
        ):
            method, path = scope["method"], scope["path"]
            if (
                method == "GET"
                and path.startswith(_PREFIX)
                and _CANONICAL_UUID.fullmatch(path, len(_PREFIX))
            ):
                text = path[len(_PREFIX) :]
                await self._answer(self.read, {"message_id": UUID(text)}, scope, receive, send)
                return
            if method == "POST" and path == MESSAGES and _unkeyed_json(scope["headers"]):
                # BodyLimitMiddleware has read the whole body: one message.
                message = await receive()
                if message["type"] == "http.request" and not message.get("more_body", False):
                    try:
                        body = MessageCreate.model_validate_json(message.get("body", b""))
                    except ValidationError:
                        pass  # FastAPI answers with its own 422
                    else:
                        await self._answer(self.create, {"body": body}, scope, receive, send)
                        return
                receive = replay(message, receive)
        await self.app(scope, receive, send)

    async def _answer(
        self, route: APIRoute, values: dict[str, Any], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Call ``route``'s endpoint with ``values`` and what else FastAPI gives it, and
        send its answer as FastAPI would (``fastapi.routing.get_request_handler``)."""
        # What FastAPI's routing puts in the scope: the log line's route template, and the
        # endpoint UnitOfWorkRoute reads (``one_statement_unless``).
        scope["route"], scope["endpoint"] = route, route.endpoint
        scope["path_params"] = {
            name: str(value) for name, value in values.items() if name != "body"
        }
        dependant = route.dependant
        sub_response = Response()
        del sub_response.headers["content-length"]
        sub_response.status_code = None  # type: ignore[assignment]
        if dependant.request_param_name:
            values[dependant.request_param_name] = Request(scope, receive, send)
        if dependant.response_param_name:
            values[dependant.response_param_name] = sub_response
        for header in dependant.header_params:
            values[header.name] = None  # absent (_unkeyed_json)
        assert dependant.call is not None and route.response_field is not None
        answer = await dependant.call(**values)
        # The endpoint answered with its response model: what FastAPI's validation of it
        # returns unchanged, and serializes so.
        response = Response(
            route.response_field.serialize_json(answer),
            status_code=sub_response.status_code or route.status_code or 200,
            media_type="application/json",
        )
        response.headers.raw.extend(sub_response.headers.raw)
        await response(scope, receive, send)
