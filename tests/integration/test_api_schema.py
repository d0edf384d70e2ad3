"""Schemathesis over the OpenAPI document: no server errors, no response outside the schema."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.integration.conftest import Caller

schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def api_schema(app_client: TestClient) -> schemathesis.BaseSchema:
    # The session's client has run the app's lifespan, so its engine is open.
    app: FastAPI = app_client.app  # type: ignore[assignment]
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
# derandomize: the same examples every run, so CI is not flaky; raise max_examples locally
# (or drop derandomize) to explore further.
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case, caller: Caller) -> None:
    # Every generated request, authenticated as a real tenant, gets a documented answer:
    # never a 5xx, and every response matches its status, content type and schema.
    # Not checked: that every schema-valid body is accepted — rules across fields (one
    # recipient at least, 50 at most in all, text or html, send_at within a year, a real
    # mail domain) are not expressible in JSON Schema and answer a documented 422; nor
    # that every schema-violating request is refused — the valid key added here undoes
    # a generated "missing Authorization", and unknown query parameters are ignored.
    case.call_and_validate(
        headers=caller.headers, excluded_checks=[positive_data_acceptance, negative_data_rejection]
    )
