"""`herald tenants bootstrap`: a new tenant and its first API key, the key kept only in a
new Secrets Manager secret.

In AWS the database is private and a one-off ECS task's output lands in CloudWatch Logs,
so `herald keys create`, which prints the key, would leave it in a log. Bootstrap instead
writes the key into a new secret (encrypted with the KMS key ``TENANT_SECRET_KMS_KEY_ID``
names, tagged with the tenant) and prints only the secret's ARN; a person with
``secretsmanager:GetSecretValue`` on it (and ``kms:Decrypt`` on that key) reads the key
from there (docs/deploying.md). The key's plaintext is never logged, printed or raised in
an error.

All or nothing: the tenant and key rows are committed only after the secret exists; if
the commit fails, the secret is deleted at once (it holds a key no row knows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.orm import Session

from ecs_service import api_keys

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from uuid import UUID

    from mypy_boto3_secretsmanager import SecretsManagerClient
    from sqlalchemy.engine import Engine

BOOTSTRAP_KEY_NAME = "bootstrap"
TENANT_TAG = "herald:tenant"
TENANT_ID_TAG = "herald:tenant-id"


class SecretStoreError(Exception):
    """The secret could not be created (or undone); the message names it, never its value."""


class SecretExistsError(SecretStoreError):
    """A secret of that name exists already: bootstrap never overwrites one."""


class SecretStore(Protocol):
    """Where a new tenant's key is kept (``SecretsManagerStore``)."""

    def create(
        self, *, name: str, value: str, kms_key_id: str, tags: Mapping[str, str], description: str
    ) -> str:
        """Create the secret; return its ARN."""

    def delete(self, arn: str) -> None:
        """Delete the secret at once, without a recovery window."""


class SecretsManagerStore:
    """``SecretStore`` on AWS Secrets Manager.

    Parameters
    ----------
    client
        A Secrets Manager client (boto3's; ``AWS_ENDPOINT_URL`` points it at moto locally).
    """

    def __init__(self, client: SecretsManagerClient) -> None:
        self._client = client

    def create(
        self, *, name: str, value: str, kms_key_id: str, tags: Mapping[str, str], description: str
    ) -> str:
        try:
            created = self._client.create_secret(
                Name=name,
                SecretString=value,
                KmsKeyId=kms_key_id,
                Description=description,
                Tags=[{"Key": key, "Value": tag} for key, tag in tags.items()],
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "ResourceExistsException":
                raise SecretExistsError(
                    f"a secret named {name!r} exists already; bootstrap never overwrites one"
                ) from None
            raise SecretStoreError(f"Secrets Manager refused to create {name!r}: {code}") from None
        except BotoCoreError as error:
            raise SecretStoreError(f"Secrets Manager could not be reached: {error}") from None
        return created["ARN"]

    def delete(self, arn: str) -> None:
        try:
            self._client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        except (ClientError, BotoCoreError) as error:
            raise SecretStoreError(f"could not delete {arn}: {error}") from None


@dataclass(frozen=True)
class Bootstrapped:
    """What bootstrap made: the tenant, its key's public id, and the secret holding the key."""

    tenant_id: UUID
    tenant_name: str
    key_id: str
    secret_arn: str


def bootstrap_tenant(
    engine: Engine,
    store: SecretStore,
    *,
    name: str,
    secret_name: str,
    kms_key_id: str,
    expires_at: datetime | None = None,
) -> Bootstrapped:
    """Create tenant ``name`` and a key (valid until ``expires_at``; None: until revoked),
    store the key in secret ``secret_name``, commit.

    Raises
    ------
    api_keys.TenantExistsError
        A tenant of that name exists: nothing is created.
    SecretStoreError
        The secret could not be created (``SecretExistsError``: it exists): nothing is
        committed.
    """
    with Session(engine) as session:
        session.begin()
        try:
            tenant = api_keys.create_tenant(session, name)
            issued = api_keys.issue_key(session, tenant, BOOTSTRAP_KEY_NAME, expires_at=expires_at)
            arn = store.create(
                name=secret_name,
                value=json.dumps(
                    {
                        "api_key": issued.plaintext,
                        "key_id": issued.key_id,
                        "tenant": tenant.name,
                        "tenant_id": str(tenant.id),
                        "expires_at": expires_at.isoformat() if expires_at else None,
                    }
                ),
                kms_key_id=kms_key_id,
                tags={TENANT_TAG: tenant.name, TENANT_ID_TAG: str(tenant.id)},
                description=f"Herald API key {issued.key_id} of tenant {tenant.name}",
            )
        except BaseException:
            session.rollback()
            raise
        made = Bootstrapped(
            tenant_id=tenant.id, tenant_name=tenant.name, key_id=issued.key_id, secret_arn=arn
        )
        try:
            session.commit()
        except BaseException:
            # The secret holds a key no row knows: it must not outlive the failed commit.
            store.delete(arn)
            raise
    return made
