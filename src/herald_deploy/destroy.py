"""destroy: delete an environment's stack, after what would stop CloudFormation half-way.

Three things make `sam delete` fail part of the way through, so they are handled first:
the web app's bucket is versioned (S3 deletes a bucket only when no version and no delete
marker is left), the database has deletion protection in every environment, and in prod
so do the idempotency table and the ALB (template.yaml, stacks/database.yaml,
stacks/backend.yaml). What the templates keep on purpose (DeletionPolicy Retain or
Snapshot) stays, and the run ends by saying so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herald_deploy.errors import DeployError
from herald_deploy.shell import command
from herald_deploy.stack_outputs import read_stack_outputs

if TYPE_CHECKING:
    from herald_deploy.samconfig import Environment
    from herald_deploy.shell import Shell

WORK_DIR = Path("build/herald-deploy")
# S3's DeleteObjects takes at most 1000 keys; one unpaginated listing of at most that many
# versions and delete markers is deleted at a time, until a listing comes back empty.
BATCH = 1000

# What outlives the stack: every resource whose DeletionPolicy is Retain or Snapshot, by
# logical ID (tests/infra/test_deploy_dry_run.py keeps this in step with the templates),
# then what no environment stack owns.
KEPT_RESOURCES = {
    "Database": "the database's final snapshot (DeletionPolicy: Snapshot), restorable "
    "with `aws rds restore-db-instance-from-db-snapshot`",
    "DatabaseKey": "the database's KMS key, which encrypts that snapshot (about $1 a month; "
    "schedule its deletion only with the snapshot's)",
    "AccessLogBucket": "the ALB's access-log bucket (its lifecycle rule expires the logs)",
    "SiteLogBucket": "the web app's access-log bucket (CloudFront and S3 logs, same lifecycle)",
}
KEPT_OUTSIDE = (
    "the backend images in ECR, the pipeline stack, the SES identity, the certificates "
    "and your DNS records: they are not part of the environment and are not touched",
)


def _example_versions() -> str:
    return json.dumps(
        {
            "Versions": [
                {"Key": "index.html", "VersionId": "3sL4kqtJlcpXroDTDmJ_example_1"},
                {"Key": "assets/index-1a2b3c4d.js", "VersionId": "null"},
            ],
            "DeleteMarkers": [
                {"Key": "assets/index-0f9e8d7c.js", "VersionId": "UIORUnfnd_example_2"}
            ],
        }
    )


def _versions(answer: str) -> list[dict[str, str]]:
    """Every version and delete marker of a list-object-versions answer, as Key/VersionId."""
    try:
        listed: dict[str, Any] = json.loads(answer) if answer else {}
        return [
            {"Key": str(item["Key"]), "VersionId": str(item["VersionId"])}
            for kind in ("Versions", "DeleteMarkers")
            for item in listed.get(kind) or []
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DeployError(f"unexpected list-object-versions answer: {answer[:200]!r}") from error


def empty_bucket(shell: Shell, bucket: str, *, region: str) -> None:
    """Delete every object version and delete marker of a versioned bucket."""
    request_file = WORK_DIR / f"{bucket}-versions.json"
    batch = 0
    while True:
        answer = shell.read(
            command(
                "aws", "s3api", "list-object-versions",
                "--region", region,
                "--bucket", bucket,
                "--max-keys", str(BATCH),
                "--no-paginate",
                "--output", "json",
            ),
            # The example bucket holds a few versions, then (deleted) none.
            dry_run_output=_example_versions() if batch == 0 else "{}",
        )  # fmt: skip
        versions = _versions(answer)
        if not versions:
            return
        batch += 1
        shell.write_file(request_file, json.dumps({"Objects": versions, "Quiet": True}))
        answer = shell.read(
            command(
                "aws", "s3api", "delete-objects",
                "--region", region,
                "--bucket", bucket,
                "--delete", f"file://{request_file}",
                "--output", "json",
            ),
            dry_run_output="{}",
        )  # fmt: skip
        errors = json.loads(answer).get("Errors") if answer else None
        if errors:
            first = errors[0]
            raise DeployError(
                f"S3 did not delete {len(errors)} object version(s) of {bucket}, the first "
                f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
            )


def _is_prod(environment: Environment) -> bool:
    # The templates' IsProd condition: the Environment parameter is "prod".
    return environment.parameters.get("Environment", environment.name) == "prod"


def _load_balancer_arn(shell: Shell, dns_name: str, *, region: str) -> str:
    arn = shell.read(
        command(
            "aws", "elbv2", "describe-load-balancers",
            "--region", region,
            "--query", f"LoadBalancers[?DNSName=='{dns_name}'].LoadBalancerArn",
            "--output", "text",
        ),
        dry_run_output=(
            f"arn:aws:elasticloadbalancing:{region}:111122223333:"
            "loadbalancer/app/herald-alb/0123456789abcdef"
        ),
    )  # fmt: skip
    if not arn.startswith("arn:"):
        raise DeployError(f"no load balancer answers to {dns_name} in {region}")
    return arn


def turn_off_deletion_protection(
    shell: Shell, environment: Environment, *, database_endpoint: str, table: str, alb_dns: str
) -> None:
    """Where the templates turn it on: the database always; the table and the ALB in prod."""
    region = environment.region
    # RDS endpoints are <instance identifier>.<account hash>.<region>.rds.amazonaws.com.
    database = database_endpoint.split(".", 1)[0]
    shell.read(
        command(
            "aws", "rds", "modify-db-instance",
            "--region", region,
            "--db-instance-identifier", database,
            "--no-deletion-protection",
            "--apply-immediately",
            "--query", "DBInstance.DBInstanceIdentifier",
            "--output", "text",
        ),
        dry_run_output=database,
    )  # fmt: skip
    if not _is_prod(environment):
        return
    shell.read(
        command(
            "aws", "dynamodb", "update-table",
            "--region", region,
            "--table-name", table,
            "--no-deletion-protection-enabled",
            "--query", "TableDescription.TableName",
            "--output", "text",
        ),
        dry_run_output=table,
    )  # fmt: skip
    shell.read(
        command(
            "aws", "elbv2", "modify-load-balancer-attributes",
            "--region", region,
            "--load-balancer-arn", _load_balancer_arn(shell, alb_dns, region=region),
            "--attributes", "Key=deletion_protection.enabled,Value=false",
            "--query", "Attributes[?Key=='deletion_protection.enabled'].Value",
            "--output", "text",
        ),
        dry_run_output="false",
    )  # fmt: skip


def destroy(
    shell: Shell, environment: Environment, *, dry_run_outputs: dict[str, str] | None = None
) -> None:
    """Empty the site bucket, lift deletion protection, `sam delete`, and say what stays."""
    region, stack = environment.region, environment.stack_name
    shell.say(f"destroying stack {stack} in {region}")
    outputs = read_stack_outputs(shell, environment, dry_run_outputs=dry_run_outputs)
    bucket = outputs["SiteBucketName"]
    shell.say(f"emptying the web app's versioned bucket {bucket}")
    empty_bucket(shell, bucket, region=region)
    shell.say("turning off deletion protection")
    turn_off_deletion_protection(
        shell,
        environment,
        database_endpoint=outputs["DatabaseEndpoint"],
        table=outputs["IdempotencyTableName"],
        alb_dns=outputs["LoadBalancerDnsName"],
    )
    shell.run(command("sam", "delete", "--stack-name", stack, "--region", region, "--no-prompts"))
    shell.say(f"stack {stack} is deleted; what stays (docs/deploying.md, Teardown):")
    for kept in (*KEPT_RESOURCES.values(), *KEPT_OUTSIDE):
        shell.say(f"  kept: {kept}")
