"""bootstrap-tenant: an environment's first tenant and key, without the key in any log.

The database is private, and a one-off task's output lands in CloudWatch Logs, so the key
must never be printed there. The one-off task (the migration task definition: the
environment's own image, network and database secret) runs `herald tenants bootstrap`,
which writes the key into a new Secrets Manager secret `herald/<env>/tenants/<tenant>`
(encrypted with the key the task's TENANT_SECRET_KMS_KEY_ID names, tagged with the
tenant) and prints only the secret's ARN. This step prints that ARN and how to read it.
EXPIRES_DAYS gives the key a lifetime (`--expires-in-days`); the CLI holds its range.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from herald_deploy.errors import DeployError
from herald_deploy.one_off_task import run_one_off_task
from herald_deploy.shell import command
from herald_deploy.stack_outputs import EXAMPLE_ACCOUNT, read_stack_outputs

if TYPE_CHECKING:
    from herald_deploy.samconfig import Environment
    from herald_deploy.shell import Shell

# What a secret's name and the shell take without quoting, and what people type.
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# A whole number of days; its upper bound is the CLI's (api_keys.MAX_KEY_LIFETIME_DAYS).
LIFETIME_DAYS = re.compile(r"^[1-9][0-9]{0,5}$")
STARTED_BY = "herald-bootstrap-tenant"


def secret_name(environment: Environment, tenant: str) -> str:
    """The tenant's key secret: herald/<Environment>/tenants/<tenant> (the task role may
    create secrets under its environment's prefix only)."""
    return f"herald/{environment.parameters.get('Environment', environment.name)}/tenants/{tenant}"


def bootstrap_tenant(
    shell: Shell,
    environment: Environment,
    *,
    tenant: str | None,
    expires_in_days: str | None = None,
    dry_run_outputs: dict[str, str] | None = None,
) -> str:
    """Create `tenant` and its first key (expiring after `expires_in_days`, None: when
    revoked) in the environment; return the key's secret ARN."""
    if not tenant or not TENANT_NAME.fullmatch(tenant):
        raise DeployError(
            f"TENANT={tenant or ''!r} is not a tenant name: 1 to 63 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit (make bootstrap-tenant ENV=… TENANT=…)"
        )
    if expires_in_days is not None and not LIFETIME_DAYS.fullmatch(expires_in_days):
        raise DeployError(
            f"EXPIRES_DAYS={expires_in_days!r} is not a whole number of days from 1 (leave it "
            "out for a key that works until revoked)"
        )
    lifetime = ("--expires-in-days", expires_in_days) if expires_in_days else ()
    region = environment.region
    outputs = read_stack_outputs(shell, environment, dry_run_outputs=dry_run_outputs)
    name = secret_name(environment, tenant)
    shell.say(f"bootstrapping tenant {tenant} in {environment.stack_name}: its key goes to {name}")
    example_arn = f"arn:aws:secretsmanager:{region}:{EXAMPLE_ACCOUNT}:secret:{name}-AbCdEf"
    run = run_one_off_task(
        shell,
        outputs,
        region=region,
        name=f"{environment.stack_name}-bootstrap-{tenant}",
        argv=("herald", "tenants", "bootstrap", "--name", tenant, "--secret-name", name, *lifetime),
        environment={},
        started_by=STARTED_BY,
        example_output=[example_arn],
    )
    if not run.succeeded:
        raise run.failure(f"the bootstrap of tenant {tenant}")
    # By name, not from the log: it also works when the task logs to Datadog.
    arn = shell.read(
        command(
            "aws", "secretsmanager", "describe-secret",
            "--region", region,
            "--secret-id", name,
            "--query", "ARN",
            "--output", "text",
        ),
        dry_run_output=example_arn,
    )  # fmt: skip
    shell.say(
        f"tenant {tenant} is created; its API key is only in {arn} (read it with: aws "
        f"secretsmanager get-secret-value --region {region} --secret-id {arn} "
        "--query SecretString --output text)"
    )
    return arn
