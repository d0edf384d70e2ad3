"""RFC 9457 problem details: every error the API returns, one ``type`` per kind.

| type (``urn:herald:problem:…``) | status | when |
|---|---|---|
| ``bad-request`` | 400 | the body is not JSON at all (not even text) |
| ``unauthorized`` | 401 | no bearer key, or not an active one |
| ``not-found`` | 404 | no such message, suppressed address (or route) for this tenant |
| ``method-not-allowed`` | 405 | the route exists, the method does not |
| ``request-timeout`` | 408 | the request body did not arrive within the read timeout |
| ``not-cancelable`` | 409 | cancel of a message that is no longer scheduled |
| ``payload-too-large`` | 413 | a body over 300,000 bytes (a batch's 2,000,000), or an email over one task (256 KiB) |
| ``validation-error`` | 422 | the request does not match the schema; ``errors`` lists each field |
| ``idempotency-key-reused`` | 422 | same Idempotency-Key, different body |
| ``recipient-suppressed`` | 422 | a recipient is on the tenant's suppression list; ``suppressed`` names them |
| ``rate-limited`` | 429 | the key's request rate is over its limit; retry after ``Retry-After`` |
| ``quota-exceeded`` | 429 | the daily email quota is used up; retry at the next UTC midnight |
| ``service-unavailable`` | 503 | the database cannot be reached; retry after ``Retry-After`` |
| ``overloaded`` | 503 | every database slot of the process is busy; retry after ``Retry-After`` |
| ``internal-error`` | 500 | a bug; the request id in the response finds it in the logs |
"""  # noqa: E501 - a table row is one line

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:herald:problem:"


class FieldError(BaseModel):
    """One invalid field of a request."""

    location: str = Field(description="Where the error is, e.g. body.to.0 or query.limit")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Identifies the kind of problem: urn:herald:problem:<kind>")
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The request path")
    request_id: str | None = None
    errors: list[FieldError] | None = Field(default=None, description="validation-error only")


class ProblemError(Exception):
    """Raised by routes; rendered as ``application/problem+json``."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors

    def to_problem(self, instance: str, request_id: str | None) -> Problem:
        return Problem(
            type=TYPE_PREFIX + self.kind,
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            request_id=request_id,
            errors=self.errors,
        )


def unauthorized() -> ProblemError:
    return ProblemError(
        401,
        "unauthorized",
        "Unauthorized",
        "send an active API key as 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": 'Bearer realm="herald"'},
    )


def not_found(detail: str) -> ProblemError:
    return ProblemError(404, "not-found", "Not Found", detail)


def service_unavailable() -> ProblemError:
    return ProblemError(
        503,
        "service-unavailable",
        "Service Unavailable",
        "the database cannot be reached right now; retry shortly",
        headers={"Retry-After": "2"},
    )


def overloaded() -> ProblemError:
    return ProblemError(
        503,
        "overloaded",
        "Service Overloaded",
        "the api is at capacity right now; retry after Retry-After seconds",
        headers={"Retry-After": "1"},
    )


def payload_too_large(limit: int) -> ProblemError:
    return ProblemError(
        413,
        "payload-too-large",
        "Payload Too Large",
        f"the request body is over the maximum of {limit:,} bytes",
    )


def request_timeout(seconds: float) -> ProblemError:
    return ProblemError(
        408,
        "request-timeout",
        "Request Timeout",
        f"the request body did not arrive within {seconds:g} seconds",
        headers={"Connection": "close"},
    )


def rate_limited(headers: dict[str, str]) -> ProblemError:
    return ProblemError(
        429,
        "rate-limited",
        "Too Many Requests",
        "this API key is over its request rate; retry after Retry-After seconds",
        headers=headers,
    )


def quota_exceeded(
    limit: int, used: int, retry_after_seconds: int, requested: int = 1
) -> ProblemError:
    refused = "is used up" if requested == 1 else f"has no room for {requested:,} more emails"
    return ProblemError(
        429,
        "quota-exceeded",
        "Daily Quota Exceeded",
        f"the tenant's daily quota of {limit:,} emails {refused} ({used:,} today); "
        "it renews at midnight UTC",
        headers={"Retry-After": str(retry_after_seconds)},
    )


def validation_error(errors: list[FieldError]) -> ProblemError:
    summary = "; ".join(f"{e.location}: {e.message}" for e in errors)
    return ProblemError(422, "validation-error", "Invalid Request", summary, errors=errors)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting these problem statuses of a route."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {
            "description": "Problem details (RFC 9457)",
            "content": {PROBLEM_JSON: {"schema": schema}},
        }
        for status in statuses
    }
