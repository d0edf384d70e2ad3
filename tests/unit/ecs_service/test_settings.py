"""The service's settings: a database from DATABASE_URL, the RDS secret's ARN, or its JSON."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ecs_service.settings import RDS_CA_BUNDLE, ApiSettings, DatabaseSettings, WorkerSettings

# AWS's default: the server's certificate and name checked against the image's RDS bundle.
VERIFY_FULL = {"sslmode": "verify-full", "sslrootcert": RDS_CA_BUNDLE}
RDS_HOST = "herald.abc.us-east-1.rds.amazonaws.com"
RDS_SECRET = json.dumps({"username": "herald_admin", "password": "p@ss:w/rd"})
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1234-AbCdEf"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "DATABASE_SECRET",
        "DATABASE_SECRET_ARN",
        "DATABASE_HOST",
        "DATABASE_PORT",
        "DATABASE_NAME",
        "DATABASE_SSLMODE",
        "DATABASE_SSLROOTCERT",
        "DATABASE_AUTH",
        "DATABASE_USER",
    ):
        monkeypatch.delenv(name, raising=False)


def test_database_url_is_used_with_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:secret@db.internal:5433/herald")
    url = DatabaseSettings().sqlalchemy_url
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+psycopg",
        "db.internal",
        5433,
        "herald",
    )


def test_rds_secret_and_host_make_a_tls_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the secret JSON and connection data as the ECS task definition injects them
    monkeypatch.setenv("DATABASE_SECRET", RDS_SECRET)
    monkeypatch.setenv("DATABASE_HOST", "herald.abc.us-east-1.rds.amazonaws.com")

    # When the URL is built
    url = DatabaseSettings().sqlalchemy_url

    # Then it carries the credentials (special characters intact) and verifies the server
    assert (url.username, url.password, url.port, url.database) == (
        "herald_admin",
        "p@ss:w/rd",
        5432,
        "herald",
    )
    assert url.query == VERIFY_FULL


def test_password_never_shows_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_SECRET", RDS_SECRET)
    monkeypatch.setenv("DATABASE_HOST", "db")
    settings = DatabaseSettings()
    assert "p@ss" not in repr(settings)
    assert "p@ss" not in str(settings.sqlalchemy_url)


def test_secret_arn_and_host_make_a_tls_url_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the secret's ARN and connection data as the ECS task definition sets them
    monkeypatch.setenv("DATABASE_SECRET_ARN", SECRET_ARN)
    monkeypatch.setenv("DATABASE_HOST", "herald.abc.us-east-1.rds.amazonaws.com")

    # When the settings are read
    settings = DatabaseSettings()

    # Then they name the secret, and the URL leaves the credentials to connect time
    url = settings.sqlalchemy_url
    assert settings.secret_arn == SECRET_ARN
    assert (url.username, url.password, url.host, url.port, url.database) == (
        None,
        None,
        "herald.abc.us-east-1.rds.amazonaws.com",
        5432,
        "herald",
    )
    assert url.query == VERIFY_FULL


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({}, r"set DATABASE_URL, or DATABASE_SECRET_ARN \(or DATABASE_SECRET\) with DATABASE_HOST"),
        ({"DATABASE_SECRET_ARN": SECRET_ARN}, "DATABASE_SECRET_ARN needs DATABASE_HOST"),
        (
            {"DATABASE_SECRET_ARN": "herald-db-secret", "DATABASE_HOST": "db"},
            "DATABASE_SECRET_ARN must be a Secrets Manager secret's ARN",
        ),
        (
            {"DATABASE_SECRET_ARN": SECRET_ARN, "DATABASE_URL": "postgresql://db/x"},
            "DATABASE_SECRET_ARN is an alternative to DATABASE_URL and DATABASE_SECRET",
        ),
        (
            {
                "DATABASE_SECRET_ARN": SECRET_ARN,
                "DATABASE_SECRET": RDS_SECRET,
                "DATABASE_HOST": "db",
            },
            "set only one of them",
        ),
        ({"DATABASE_SECRET": RDS_SECRET}, "DATABASE_SECRET needs DATABASE_HOST"),
        ({"DATABASE_SECRET": "not json", "DATABASE_HOST": "db"}, "DATABASE_SECRET is not JSON"),
        (
            {"DATABASE_SECRET": '{"username": "u"}', "DATABASE_HOST": "db"},
            "'username' and 'password'",
        ),
        ({"DATABASE_URL": "postgresql://db/x", "DATABASE_SSLMODE": "maybe"}, "sslmode"),
        (
            {"DATABASE_AUTH": "iam", "DATABASE_HOST": "db"},
            "DATABASE_AUTH=iam needs DATABASE_HOST and DATABASE_USER",
        ),
        (
            {"DATABASE_AUTH": "iam", "DATABASE_USER": "herald_app"},
            "DATABASE_AUTH=iam needs DATABASE_HOST and DATABASE_USER",
        ),
        (
            {
                "DATABASE_AUTH": "iam",
                "DATABASE_USER": "herald_app",
                "DATABASE_HOST": "db",
                "DATABASE_SECRET_ARN": SECRET_ARN,
            },
            "DATABASE_AUTH=iam logs in with IAM tokens: set no DATABASE_URL",
        ),
        (
            {"DATABASE_USER": "herald_app", "DATABASE_URL": "postgresql://db/x"},
            "DATABASE_USER goes with DATABASE_AUTH=iam",
        ),
        ({"DATABASE_AUTH": "kerberos", "DATABASE_URL": "postgresql://db/x"}, "auth"),
        (
            {"DATABASE_AUTH": "iam", "DATABASE_USER": "Robert'); --", "DATABASE_HOST": "db"},
            "user",
        ),
    ],
)
def test_bad_database_configuration_says_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        DatabaseSettings()


def test_iam_authentication_makes_a_verifying_url_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given IAM database authentication as the api's and worker's task definitions set it
    monkeypatch.setenv("DATABASE_AUTH", "iam")
    monkeypatch.setenv("DATABASE_USER", "herald_app")
    monkeypatch.setenv("DATABASE_HOST", RDS_HOST)

    # When the settings are read
    settings = DatabaseSettings()

    # Then the user is named, and the URL leaves user and token to connect time and
    # verifies the server against the RDS bundle
    url = settings.sqlalchemy_url
    assert (settings.auth, settings.user) == ("iam", "herald_app")
    assert (url.username, url.password, url.host) == (None, None, RDS_HOST)
    assert url.query == VERIFY_FULL


def test_a_mode_that_does_not_verify_the_server_names_no_ca_bundle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a host-based configuration that only encrypts
    monkeypatch.setenv("DATABASE_SECRET", RDS_SECRET)
    monkeypatch.setenv("DATABASE_HOST", RDS_HOST)
    monkeypatch.setenv("DATABASE_SSLMODE", "require")

    # When the URL is built, Then it asks for TLS only
    assert DatabaseSettings().sqlalchemy_url.query == {"sslmode": "require"}


def test_worker_needs_both_queue_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/tasks")
    monkeypatch.delenv("RESULT_QUEUE_URL", raising=False)
    with pytest.raises(ValidationError, match="RESULT_QUEUE_URL"):
        WorkerSettings()


def test_cors_origins_are_a_comma_separated_list_of_http_origins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENDER_EMAIL", "herald@example.com")
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://app.example.com,http://localhost:5173")
    assert ApiSettings().cors_origins == ["https://app.example.com", "http://localhost:5173"]
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "*")
    with pytest.raises(ValidationError, match="CORS_ALLOWED_ORIGINS"):
        ApiSettings()


def test_api_workers_default_to_one_and_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDER_EMAIL", "herald@example.com")
    monkeypatch.delenv("API_WORKERS", raising=False)
    assert ApiSettings().workers == 1
    monkeypatch.setenv("API_WORKERS", "4")
    assert ApiSettings().workers == 4
    for wrong in ("0", "17", "two"):
        monkeypatch.setenv("API_WORKERS", wrong)
        with pytest.raises(ValidationError, match="API_WORKERS"):
            ApiSettings()


def test_herald_api_names_a_bad_api_workers_before_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ecs_service.cli import main

    monkeypatch.setenv("SENDER_EMAIL", "herald@example.com")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/herald")
    monkeypatch.setenv("API_WORKERS", "0")
    with pytest.raises(SystemExit, match="invalid configuration: API_WORKERS: .*greater than"):
        main(["api"])


def test_an_internationalized_sender_domain_is_kept_as_punycode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given SENDER_EMAIL with a Unicode domain
    monkeypatch.setenv("SENDER_EMAIL", "herald@bücher.example")

    # When the api reads its settings
    settings = ApiSettings()

    # Then every email it stores comes from the ASCII form SES and the task runner use
    assert settings.sender_email == "herald@xn--bcher-kva.example"
