"""What routes receive: a database session in a transaction, the caller's tenant, and the
process's metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from ecs_service.api import problems
from ecs_service.api_keys import authenticate
from ecs_service.thread_safe_metrics import ThreadSafeMetrics

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer hrld_…`")


def get_session(request: Request) -> Iterator[Session]:
    """A session whose transaction commits when the route returns, and rolls back if it raises."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    with sessions() as session, session.begin():
        yield session


# scope="function": the transaction commits before the response is sent. With FastAPI's
# default ("request") it committed after: a client could get 201 for a message whose
# COMMIT then failed (PostgreSQL restarting), and the commit's error could never become
# the 503 the client should see. tests/integration/faults found it.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_tenant_id(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> UUID:
    """The tenant whose active API key the request carries; 401 otherwise."""
    if credentials is None:
        raise problems.unauthorized()
    tenant_id = authenticate(session, credentials.credentials)
    if tenant_id is None:
        raise problems.unauthorized()
    return tenant_id


TenantDep = Annotated[UUID, Depends(get_tenant_id)]


def get_metrics(request: Request) -> ThreadSafeMetrics:
    """The api's metrics; MetricsFlushMiddleware publishes what a request added."""
    published: ThreadSafeMetrics = request.app.state.metrics
    return published


MetricsDep = Annotated[ThreadSafeMetrics, Depends(get_metrics)]
