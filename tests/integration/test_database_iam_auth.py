"""IAM database authentication end to end on the real PostgreSQL: settings as the api's and
worker's task definitions give them (DATABASE_AUTH=iam, DATABASE_USER=herald_app) make an
engine whose connections log in as herald_app with a token botocore signed for them.

The local server trusts its connections, so it cannot judge the token (RDS does); what is
proven here is that the token is made for this endpoint and user and is what libpq sent."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import text

from ecs_service.db.engine import build_engine
from ecs_service.settings import DatabaseSettings
from herald_local.postgres import APP_USER

if TYPE_CHECKING:
    from herald_local.postgres import LocalPostgres


def test_an_engine_with_iam_auth_logs_in_as_its_user_with_a_signed_token(
    postgres: LocalPostgres,
) -> None:
    # Given settings as the api's task definition sets them (TLS aside: the local server
    # has none)
    settings = DatabaseSettings(
        auth="iam", user=APP_USER, host="127.0.0.1", port=postgres.port, sslmode="disable"
    )
    engine = build_engine(settings, application_name="herald-iam-test")

    # When it connects
    try:
        with engine.connect() as connection:
            user = connection.scalar(text("SELECT current_user"))
            sent = connection.connection.driver_connection.info.password  # type: ignore[union-attr]
    finally:
        engine.dispose()

    # Then it is herald_app, and its password was a connect token for this endpoint
    token = urlsplit(f"https://{sent}")
    assert user == APP_USER
    assert (token.hostname, token.port) == ("127.0.0.1", postgres.port)
    assert parse_qs(token.query)["DBUser"] == [APP_USER]
    assert parse_qs(token.query)["Action"] == ["connect"]
