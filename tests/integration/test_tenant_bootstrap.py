"""`herald tenants bootstrap` on the real PostgreSQL and moto's Secrets Manager and KMS: the
new tenant's key lives only in a new, encrypted, tagged secret, and is printed nowhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import uuid4

import boto3
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecs_service.cli import main
from ecs_service.db.models import ApiKey, Tenant

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from sqlalchemy.engine import Engine

    from herald_local.postgres import LocalPostgres


@pytest.fixture
def secretsmanager(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> SecretsManagerClient:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return boto3.client("secretsmanager", endpoint_url=moto_endpoint)


@pytest.fixture
def kms_key(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A KMS key in moto, named by TENANT_SECRET_KMS_KEY_ID as the template names its key."""
    arn: str = boto3.client("kms", endpoint_url=moto_endpoint).create_key()["KeyMetadata"]["Arn"]
    monkeypatch.setenv("TENANT_SECRET_KMS_KEY_ID", arn)
    return arn


@pytest.fixture
def database(postgres: LocalPostgres, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("DATABASE_URL", postgres.app_url())
    return engine


def bootstrap(
    capsys: pytest.CaptureFixture[str], name: str, secret_name: str, *options: str
) -> tuple[int, str, str]:
    code = main(["tenants", "bootstrap", "--name", name, "--secret-name", secret_name, *options])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def tenants(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(Tenant.name)))


def test_the_key_is_stored_in_an_encrypted_tagged_secret_and_only_its_arn_is_printed(
    database: Engine,
    secretsmanager: SecretsManagerClient,
    kms_key: str,
    client: TestClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a new tenant's name and the secret to create for it
    secret_name = f"herald/test/tenants/initech-{uuid4().hex[:8]}"

    # When it is bootstrapped
    code, out, err = bootstrap(capsys, "initech", secret_name)

    # Then only the new secret's ARN is printed
    assert code == 0
    arn = out.strip()
    described = secretsmanager.describe_secret(SecretId=arn)
    assert described["Name"] == secret_name

    # and the secret is encrypted with the given key and tagged with the tenant
    with Session(database) as session:
        tenant_id = str(session.scalar(select(Tenant.id).where(Tenant.name == "initech")))
    assert described["KmsKeyId"] == kms_key
    assert {tag["Key"]: tag["Value"] for tag in described["Tags"]} == {
        "herald:tenant": "initech",
        "herald:tenant-id": tenant_id,
    }

    # and the key in it is the tenant's: the api accepts it, and it is in no output
    stored = json.loads(secretsmanager.get_secret_value(SecretId=arn)["SecretString"])
    assert stored["tenant"] == "initech"
    assert stored["tenant_id"] == tenant_id
    response = client.get("/v1/messages", headers={"Authorization": f"Bearer {stored['api_key']}"})
    assert response.status_code == 200
    assert stored["api_key"] not in out + err
    assert stored["api_key"].split("_")[2] not in out + err  # not even its secret part


def test_an_existing_tenant_is_refused_and_no_secret_is_made(
    database: Engine,
    secretsmanager: SecretsManagerClient,
    kms_key: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a tenant of that name
    assert main(["tenants", "create", "initech"]) == 0
    capsys.readouterr()
    secret_name = f"herald/test/tenants/initech-{uuid4().hex[:8]}"

    # When it is bootstrapped
    code, out, err = bootstrap(capsys, "initech", secret_name)

    # Then it is refused in one line, and no secret of that name exists
    assert code == 1
    assert (out, err) == ("", "herald: a tenant named 'initech' exists already\n")
    names = [s["Name"] for s in secretsmanager.list_secrets()["SecretList"]]
    assert secret_name not in names


def test_an_existing_secret_is_never_overwritten_and_no_tenant_is_made(
    database: Engine,
    secretsmanager: SecretsManagerClient,
    kms_key: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a secret of that name holding something else
    secret_name = f"herald/test/tenants/initech-{uuid4().hex[:8]}"
    secretsmanager.create_secret(Name=secret_name, SecretString="someone else's")

    # When the tenant is bootstrapped into it
    code, out, err = bootstrap(capsys, "initech", secret_name)

    # Then it is refused, the secret is as it was, and neither tenant nor key was stored
    assert code == 1
    assert out == ""
    assert err == (
        f"herald: a secret named {secret_name!r} exists already; bootstrap never overwrites one\n"
    )
    value = secretsmanager.get_secret_value(SecretId=secret_name)["SecretString"]
    assert value == "someone else's"
    assert tenants(database) == []
    with Session(database) as session:
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 0


def test_bootstrap_needs_the_kms_key_to_encrypt_with(
    database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no TENANT_SECRET_KMS_KEY_ID
    monkeypatch.delenv("TENANT_SECRET_KMS_KEY_ID", raising=False)

    # When a tenant is bootstrapped, Then the command stops naming the variable
    with pytest.raises(SystemExit, match="TENANT_SECRET_KMS_KEY_ID"):
        main(["tenants", "bootstrap", "--name", "initech", "--secret-name", "herald/x/y"])
    assert tenants(database) == []


def test_a_bootstrapped_key_may_expire_and_its_secret_says_when(
    database: Engine,
    secretsmanager: SecretsManagerClient,
    kms_key: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a new tenant whose first key should last 90 days
    secret_name = f"herald/test/tenants/initech-{uuid4().hex[:8]}"
    before = datetime.now(UTC)

    # When it is bootstrapped with that lifetime
    code, out, _ = bootstrap(capsys, "initech", secret_name, "--expires-in-days", "90")

    # Then the key expires 90 days from now, and the secret beside it says when
    assert code == 0
    with Session(database) as session:
        expires_at = session.scalar(select(ApiKey.expires_at))
    assert expires_at is not None
    assert timedelta(days=90) <= expires_at - before <= timedelta(days=90, seconds=2)
    stored = json.loads(secretsmanager.get_secret_value(SecretId=out.strip())["SecretString"])
    assert datetime.fromisoformat(stored["expires_at"]) == expires_at


def test_a_bootstrap_lifetime_out_of_bounds_is_refused_before_anything_is_made(
    database: Engine,
    secretsmanager: SecretsManagerClient,
    kms_key: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # When a tenant is bootstrapped with a key lifetime of zero days
    secret_name = f"herald/test/tenants/initech-{uuid4().hex[:8]}"
    code, out, err = bootstrap(capsys, "initech", secret_name, "--expires-in-days", "0")

    # Then it is refused in one line, with no tenant and no secret made
    assert (code, out) == (2, "")
    assert err.startswith("herald: a key's lifetime must be a whole number of days")
    assert err.count("\n") == 1
    assert tenants(database) == []
    names = [s["Name"] for s in secretsmanager.list_secrets()["SecretList"]]
    assert secret_name not in names
