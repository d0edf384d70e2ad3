"""restore-drill: restore an environment's database to a point in time, check it, delete it.

A backup nobody restored is a hope. The drill restores the environment's RDS instance
(point-in-time recovery, from its automated backups) into a temporary instance beside it,
`<instance>-restore-drill`: the same DB subnet group, security group and parameter group
(so TLS is forced as on the source), encrypted with the same KMS key (a point-in-time
restore keeps the source's key), not public, single-AZ, no backups of its own, no deletion
protection, and its own RDS-managed master secret encrypted with the source secret's key.
When it is available, a one-off task of the stack's migration task definition (the backend
image the environment runs, in the private subnets, with the migration security group the
database accepts) runs `herald db check` against it: the schema's revision must be the
image's Alembic head, and each table's row count is printed. Then the temporary instance
is deleted, always, also when a step failed or the drill was interrupted; if even that
fails, the last line says how to delete it by hand.

The fixed name allows one drill per environment at a time: a second one is refused by RDS
(DBInstanceAlreadyExists) and deletes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from herald_deploy.errors import DeployError
from herald_deploy.one_off_task import run_one_off_task
from herald_deploy.shell import command
from herald_deploy.stack_outputs import EXAMPLE_ACCOUNT, read_stack_outputs

if TYPE_CHECKING:
    from herald_deploy.samconfig import Environment
    from herald_deploy.shell import Shell
    from herald_deploy.stack_outputs import StackOutputs

DRILL_SUFFIX = "-restore-drill"
STARTED_BY = "herald-restore-drill"
CHECK_COMMAND = ("herald", "db", "check")
CHECK_MARKER = "herald-db-check"  # ecs_service.db.schema_check.CHECK_MARKER
# The RDS waiter gives up after 30 minutes (60 polls, 30 s apart); a large restore takes
# longer, so it is asked again while the instance is still on its way.
WAIT_ROUNDS = 8
ON_ITS_WAY = frozenset(
    {
        "creating",
        "backing-up",
        "modifying",
        "configuring-enhanced-monitoring",
        "configuring-iam-database-auth",
        "configuring-log-exports",
        "storage-optimization",
        "rebooting",
        "starting",
    }
)
EXAMPLE_LATEST_RESTORABLE = "2026-12-03T09:55:00+00:00"


@dataclass(frozen=True)
class SourceDatabase:
    """What the temporary instance copies from the environment's database."""

    identifier: str
    instance_class: str
    subnet_group: str
    security_groups: tuple[str, ...]
    parameter_group: str
    kms_key_id: str
    secret_kms_key_id: str
    latest_restorable_time: str


@dataclass(frozen=True)
class RestoredDatabase:
    """Where the temporary instance answers and the secret RDS made for it."""

    identifier: str
    address: str
    port: str
    secret_arn: str
    kms_key_id: str


def parse_restore_time(text: str | None) -> str | None:
    """RESTORE_TIME as RDS takes it (UTC, ISO 8601); None for the latest restorable time."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise DeployError(
            f"RESTORE_TIME={text!r} is not a time with its zone: write it as "
            "2026-12-03T09:30:00Z (UTC), within the backup retention period"
        )
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _instance_identifier(endpoint: str) -> str:
    # RDS endpoints are <instance identifier>.<account hash>.<region>.rds.amazonaws.com.
    return endpoint.split(".", 1)[0]


def _example_source(identifier: str, region: str) -> dict[str, Any]:
    key = f"arn:aws:kms:{region}:{EXAMPLE_ACCOUNT}:key/0example-0000-4000-8000-000000000000"
    return {
        "DBInstanceClass": "db.t4g.small",
        "DBSubnetGroup": {"DBSubnetGroupName": f"{identifier}-subnets"},
        "VpcSecurityGroups": [{"VpcSecurityGroupId": "sg-0exampledatabase00"}],
        "DBParameterGroups": [{"DBParameterGroupName": f"{identifier}-parameters"}],
        "KmsKeyId": key,
        "MasterUserSecret": {"KmsKeyId": key},
        "LatestRestorableTime": EXAMPLE_LATEST_RESTORABLE,
    }


def _describe_instance(
    shell: Shell, identifier: str, *, region: str, example: dict[str, Any]
) -> dict[str, Any]:
    """`aws rds describe-db-instances` of one instance (`example` in a dry run)."""
    answer = shell.read(
        command(
            "aws", "rds", "describe-db-instances",
            "--region", region,
            "--db-instance-identifier", identifier,
            "--query", "DBInstances[0]",
            "--output", "json",
        ),
        dry_run_output=json.dumps(example),
    )  # fmt: skip
    try:
        described = json.loads(answer)
    except ValueError:
        described = answer
    if not isinstance(described, dict):
        raise _unexpected(identifier, described)
    return described


def _unexpected(identifier: str, described: object) -> DeployError:
    return DeployError(
        f"unexpected describe-db-instances answer for {identifier}: {str(described)[:200]!r}"
    )


def _wait(shell: Shell, waiter: str, identifier: str, *, region: str) -> None:
    """`aws rds wait <waiter>` for one instance (the waiter gives up after 30 minutes)."""
    shell.run(
        command(
            "aws", "rds", "wait", waiter,
            "--region", region, "--db-instance-identifier", identifier,
        )
    )  # fmt: skip


def describe_source(shell: Shell, identifier: str, *, region: str) -> SourceDatabase:
    """The environment's database: its network, parameters, keys and restorable window."""
    example = _example_source(identifier, region)
    described = _describe_instance(shell, identifier, region=region, example=example)
    try:
        return SourceDatabase(
            identifier=identifier,
            instance_class=str(described["DBInstanceClass"]),
            subnet_group=str(described["DBSubnetGroup"]["DBSubnetGroupName"]),
            security_groups=tuple(
                str(group["VpcSecurityGroupId"]) for group in described["VpcSecurityGroups"]
            ),
            parameter_group=str(described["DBParameterGroups"][0]["DBParameterGroupName"]),
            kms_key_id=str(described["KmsKeyId"]),
            secret_kms_key_id=str(described["MasterUserSecret"]["KmsKeyId"]),
            latest_restorable_time=str(described.get("LatestRestorableTime", "unknown")),
        )
    except (KeyError, IndexError, TypeError) as error:
        raise _unexpected(identifier, described) from error


def restore(
    shell: Shell,
    source: SourceDatabase,
    target: str,
    *,
    restore_time: str | None,
    region: str,
    stack: str,
) -> None:
    """Start the point-in-time restore into `target` (RDS refuses if it exists already)."""
    when = ["--restore-time", restore_time] if restore_time else ["--use-latest-restorable-time"]
    shell.read(
        command(
            "aws", "rds", "restore-db-instance-to-point-in-time",
            "--region", region,
            "--source-db-instance-identifier", source.identifier,
            "--target-db-instance-identifier", target,
            *when,
            "--db-instance-class", source.instance_class,
            "--db-subnet-group-name", source.subnet_group,
            "--vpc-security-group-ids", *source.security_groups,
            "--db-parameter-group-name", source.parameter_group,
            "--no-multi-az",
            "--no-publicly-accessible",
            "--no-deletion-protection",
            "--backup-retention-period", "0",
            "--manage-master-user-password",
            "--master-user-secret-kms-key-id", source.secret_kms_key_id,
            "--tags", f"Key=herald:restore-drill,Value={stack}",
            "--query", "DBInstance.DBInstanceStatus",
            "--output", "text",
        ),
        dry_run_output="creating",
    )  # fmt: skip


def wait_until_available(shell: Shell, target: str, *, region: str) -> None:
    """Wait for the restore, asking RDS's waiter again while the instance is on its way."""
    for _ in range(WAIT_ROUNDS):
        try:
            _wait(shell, "db-instance-available", target, region=region)
            return
        except DeployError as error:
            described = _describe_instance(
                shell, target, region=region, example={"DBInstanceStatus": "available"}
            )
            status = str(described.get("DBInstanceStatus"))
            if status == "available":
                return
            if status not in ON_ITS_WAY:
                raise DeployError(f"the restored instance {target} is {status!r}") from error
    raise DeployError(f"the restored instance {target} was not available after 4 hours")


def describe_restored(shell: Shell, target: str, *, region: str) -> RestoredDatabase:
    """The temporary instance's endpoint, secret and key."""
    example = {
        "Endpoint": {
            "Address": f"{target}.c0example0000.{region}.rds.amazonaws.com",
            "Port": 5432,
        },
        "MasterUserSecret": {
            "SecretArn": f"arn:aws:secretsmanager:{region}:{EXAMPLE_ACCOUNT}:secret:"
            "rds!db-0example-0000-4000-8000-000000000000-AbCdEf"
        },
        "KmsKeyId": _example_source(target, region)["KmsKeyId"],
    }
    described = _describe_instance(shell, target, region=region, example=example)
    try:
        return RestoredDatabase(
            identifier=target,
            address=str(described["Endpoint"]["Address"]),
            port=str(described["Endpoint"]["Port"]),
            secret_arn=str(described["MasterUserSecret"]["SecretArn"]),
            kms_key_id=str(described["KmsKeyId"]),
        )
    except (KeyError, TypeError) as error:
        raise _unexpected(target, described) from error


def check_environment(restored: RestoredDatabase) -> dict[str, str]:
    """Where the check finds the temporary instance, and which secret holds its password:
    the task reads the password itself, so no secret passes through this machine."""
    return {
        "DATABASE_HOST": restored.address,
        "DATABASE_PORT": restored.port,
        "DATABASE_SECRET_ARN": restored.secret_arn,
    }


def _example_report() -> str:
    return json.dumps(
        {
            "check": CHECK_MARKER,
            "revision": "0009",
            "head": "0009",
            "current": True,
            "rows": {"api_keys": 3, "messages": 1200, "tenants": 2},
        }
    )


def _report(output: list[str] | None) -> dict[str, Any] | None:
    """The check's JSON line among the task's log lines."""
    for message in output or []:
        try:
            line = json.loads(message)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("check") == CHECK_MARKER:
            return line
    return None


def run_check(
    shell: Shell, outputs: StackOutputs, restored: RestoredDatabase, *, region: str
) -> dict[str, Any] | None:
    """Run `herald db check` against the temporary instance; fail unless it exits 0; return
    its report (None when its log cannot be read: the exit code has decided already)."""
    run = run_one_off_task(
        shell,
        outputs,
        region=region,
        name=f"{restored.identifier}-check",
        argv=CHECK_COMMAND,
        environment=check_environment(restored),
        started_by=STARTED_BY,
        example_output=[_example_report()],
    )
    report = _report(run.output)
    if not run.succeeded:
        raise run.failure(
            "the check of the restored database", found=_summary(report) if report else ""
        )
    return report


def _summary(report: dict[str, Any]) -> str:
    rows = report.get("rows") or {}
    counted = ", ".join(f"{name} {count}" for name, count in sorted(rows.items()))
    return (
        f"schema revision {report.get('revision')} (the image's head: {report.get('head')}); "
        f"rows: {counted or 'no tables'}"
    )


def delete(shell: Shell, target: str, *, region: str) -> None:
    """Delete the temporary instance (no final snapshot, no backups) and wait until gone."""
    shell.read(
        command(
            "aws", "rds", "delete-db-instance",
            "--region", region,
            "--db-instance-identifier", target,
            "--skip-final-snapshot",
            "--delete-automated-backups",
            "--query", "DBInstance.DBInstanceStatus",
            "--output", "text",
        ),
        dry_run_output="deleting",
    )  # fmt: skip
    _wait(shell, "db-instance-deleted", target, region=region)


def _by_hand(target: str, region: str) -> str:
    return (
        f"delete it by hand: aws rds delete-db-instance --region {region} "
        f"--db-instance-identifier {target} --skip-final-snapshot --delete-automated-backups"
    )


def restore_drill(
    shell: Shell,
    environment: Environment,
    *,
    restore_time: str | None,
    dry_run_outputs: dict[str, str] | None = None,
) -> None:
    """Restore, wait, check, and delete the temporary instance whatever happened."""
    region = environment.region
    when = parse_restore_time(restore_time)
    outputs = read_stack_outputs(shell, environment, dry_run_outputs=dry_run_outputs)
    source = describe_source(
        shell, _instance_identifier(outputs["DatabaseEndpoint"]), region=region
    )
    target = f"{source.identifier}{DRILL_SUFFIX}"
    shell.say(
        f"restore drill of {environment.stack_name}: {source.identifier} as of "
        f"{when or f'its latest restorable time ({source.latest_restorable_time})'} into "
        f"{target} ({source.instance_class}, subnet group {source.subnet_group}, security "
        f"group {', '.join(source.security_groups)}, not public)"
    )
    restore(shell, source, target, restore_time=when, region=region, stack=environment.stack_name)
    try:
        shell.say(f"waiting for {target} to be available (a restore takes 10 minutes or more)")
        wait_until_available(shell, target, region=region)
        restored = describe_restored(shell, target, region=region)
        if restored.kms_key_id != source.kms_key_id:
            raise DeployError(
                f"{target} is encrypted with {restored.kms_key_id}, not the source's "
                f"{source.kms_key_id}"
            )
        report = run_check(shell, outputs, restored, region=region)
    except BaseException:
        # Whatever stopped the drill (a failed check, Ctrl-C), the copy must not stay.
        shell.say(f"the drill failed: deleting {target}")
        try:
            delete(shell, target, region=region)
        except DeployError as error:
            shell.say(f"could not delete {target} ({str(error).splitlines()[0]}): "
                      f"{_by_hand(target, region)}")  # fmt: skip
        raise
    shell.say(
        f"the restored database is readable and its schema is the image's: "
        f"{_summary(report) if report else 'the check passed (its counts are in its log)'}"
    )
    shell.say(f"deleting the temporary instance {target}")
    try:
        delete(shell, target, region=region)
    except DeployError as error:
        raise DeployError(f"{error}\nThe drill passed but {target} is left: "
                          f"{_by_hand(target, region)}") from error  # fmt: skip
    shell.say(f"restore drill passed: {target} is deleted")
