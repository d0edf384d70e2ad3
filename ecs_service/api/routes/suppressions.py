"""/v1/suppressions: the addresses a tenant's emails may not go to, and taking one off.

A permanent bounce or a complaint puts an address on its tenant's list (the worker's
feedback consumer); a message to a listed address is refused (``POST /v1/messages``).
Each tenant has its own list: SES's account-level list would be shared by all.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from ecs_service import feedback_store
from ecs_service.api import problems
from ecs_service.api.dependencies import SessionDep, TenantDep, UnitOfWorkRoute
from ecs_service.api.schemas import SuppressionOut, SuppressionPage
from shared.contracts import EmailAddress, suppression_key

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"], route_class=UnitOfWorkRoute)
REMOVED: dict[int | str, dict[str, Any]] = {204: {"description": "Taken off the list"}}


@router.get(
    "",
    summary="List the tenant's suppressed addresses, newest first",
    responses=problems.responses(401, 422, 429, 503),
)
def list_suppressions(
    session: SessionDep,
    tenant_id: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None,
        Query(
            max_length=feedback_store.SuppressionCursor.MAX_TOKEN_LENGTH,
            description="next_cursor of the previous page",
        ),
    ] = None,
) -> SuppressionPage:
    try:
        after = feedback_store.SuppressionCursor.decode(cursor) if cursor else None
    except feedback_store.InvalidCursorError as error:
        raise problems.validation_error(
            [problems.FieldError(location="query.cursor", message=str(error))]
        ) from error
    page, next_cursor = feedback_store.list_suppressions(
        session, tenant_id, limit=limit, after=after
    )
    return SuppressionPage(
        items=[SuppressionOut.of(s) for s in page],
        next_cursor=next_cursor.encode() if next_cursor else None,
    )


@router.delete(
    # :path: an address may hold a "/" (sent as %2F, which the router sees decoded).
    "/{address:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Take an address off the tenant's suppression list",
    responses=REMOVED | problems.responses(401, 404, 422, 429, 503),
)
def remove_suppression(
    address: Annotated[
        EmailAddress,
        Path(description="The address, by the same rules as a recipient's; any case"),
    ],
    session: SessionDep,
    tenant_id: TenantDep,
) -> None:
    key = suppression_key(address)
    if not feedback_store.remove_suppression(session, tenant_id, key):
        raise problems.not_found(f"{key} is not on this tenant's suppression list")
