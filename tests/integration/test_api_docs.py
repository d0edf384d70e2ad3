"""/docs works without internet: Swagger UI's assets come from the api itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi.testclient import TestClient


def test_the_docs_page_loads_swagger_ui_from_the_api_not_a_cdn(client: TestClient) -> None:
    # Given / When the page is read
    page = client.get("/docs")

    # Then it names only the api's own assets and document
    assert page.status_code == 200
    assert "cdn." not in page.text
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "/openapi.json" in page.text
    # And the assets are there, Swagger UI 5 (it reads the OpenAPI 3.1 FastAPI writes)
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert '"5.' in script.text
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")


def test_there_is_no_redoc_page_that_would_need_a_cdn(client: TestClient) -> None:
    assert client.get("/redoc").status_code == 404
