"""The schema migration of a release, run as a one-off ECS task before `sam deploy`.

The chicken and egg: the stack's migration task definition runs the image the stack was
last deployed with, and `aws ecs run-task` can override a container's command and
environment but not its image. Deploying the stack first would roll the services onto
code whose schema does not exist yet. So the release registers a one-off revision of the
migration task definition: the stack's own definition (same roles, secret, network, logs)
with only the image replaced, runs it, waits for it to stop, checks the container's exit
code and deregisters the revision again. The services are never touched here: they
change through CloudFormation only, in the `sam deploy` that follows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herald_deploy.errors import DeployError
from herald_deploy.shell import command
from herald_deploy.stack_outputs import EXAMPLE_ACCOUNT

if TYPE_CHECKING:
    from herald_deploy.shell import Shell
    from herald_deploy.stack_outputs import StackOutputs

MIGRATION_CONTAINER = "migrate"
# What describe-task-definition returns but register-task-definition does not accept.
READ_ONLY_FIELDS = (
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
)
WORK_DIR = Path("build") / "herald-deploy"


def example_task_definition(task_definition_arn: str, region: str) -> dict[str, Any]:
    """The migration task definition a dry run pretends the stack has."""
    family = task_definition_arn.rsplit("/", 1)[-1].split(":")[0]
    account = task_definition_arn.split(":")[4]
    return {
        "taskDefinitionArn": task_definition_arn,
        "family": family,
        "revision": 7,
        "status": "ACTIVE",
        "executionRoleArn": f"arn:aws:iam::{account}:role/{family}-execution",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "runtimePlatform": {"operatingSystemFamily": "LINUX", "cpuArchitecture": "ARM64"},
        "volumes": [{"name": "tmp"}],
        "containerDefinitions": [
            {
                "name": MIGRATION_CONTAINER,
                "image": f"{account}.dkr.ecr.{region}.amazonaws.com/herald:previous",
                "command": ["herald", "migrate"],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": f"/herald/{family}/migrate",
                        "awslogs-stream-prefix": "migrate",
                    },
                },
            }
        ],
    }


def one_off_revision(task_definition: dict[str, Any], image_uri: str) -> dict[str, Any]:
    """The registration request of the stack's migration task definition with a new image."""
    request = {key: value for key, value in task_definition.items() if key not in READ_ONLY_FIELDS}
    containers = request.get("containerDefinitions", [])
    migrate = [c for c in containers if c.get("name") == MIGRATION_CONTAINER]
    if not migrate:
        raise DeployError(
            f"the migration task definition has no container named {MIGRATION_CONTAINER!r}"
        )
    request["containerDefinitions"] = [
        {**c, "image": image_uri} if c.get("name") == MIGRATION_CONTAINER else c for c in containers
    ]
    return request


def log_location(task_definition: dict[str, Any], task_arn: str) -> tuple[str, str] | None:
    """The migration container's CloudWatch log group and this task's stream in it
    (awslogs: <prefix>/<container>/<task id>); None when it logs elsewhere (Datadog)."""
    for container in task_definition.get("containerDefinitions", []):
        if container.get("name") != MIGRATION_CONTAINER:
            continue
        options = container.get("logConfiguration", {}).get("options", {})
        if "awslogs-group" in options:
            stream = f"{options.get('awslogs-stream-prefix', 'ecs')}/{MIGRATION_CONTAINER}/"
            return str(options["awslogs-group"]), stream + task_arn.rsplit("/", 1)[-1]
    return None


def log_hint(task_definition: dict[str, Any], task_arn: str, region: str) -> str:
    """How to read a one-off task's logs."""
    location = log_location(task_definition, task_arn)
    if location is None:
        return "its logs are in the migration task's log group"
    group, stream = location
    return f"its logs: aws logs tail {group} --region {region} --log-stream-names {stream}"


def migration_outcome(task: dict[str, Any]) -> tuple[int | None, str]:
    """The migration container's exit code and why the task stopped."""
    reasons = [str(task.get("stoppedReason", ""))]
    exit_code: int | None = None
    for container in task.get("containers", []):
        if container.get("name") == MIGRATION_CONTAINER:
            code = container.get("exitCode")
            exit_code = int(code) if code is not None else None
            reasons.append(str(container.get("reason", "")))
    return exit_code, "; ".join(reason for reason in reasons if reason)


def run_migrations(shell: Shell, outputs: StackOutputs, *, region: str, image_uri: str) -> None:
    """Run `herald migrate` from `image_uri` as a one-off Fargate task; fail unless it exits 0."""
    cluster = outputs["ClusterName"]
    described = shell.read(
        command(
            "aws", "ecs", "describe-task-definition",
            "--region", region,
            "--task-definition", outputs["MigrationTaskDefinitionArn"],
            "--query", "taskDefinition",
            "--output", "json",
        ),
        dry_run_output=json.dumps(
            example_task_definition(outputs["MigrationTaskDefinitionArn"], region)
        ),
    )  # fmt: skip
    task_definition: dict[str, Any] = json.loads(described)
    request_file = WORK_DIR / f"{task_definition['family']}.json"
    shell.write_file(request_file, json.dumps(one_off_revision(task_definition, image_uri)))
    one_off_arn = shell.read(
        command(
            "aws", "ecs", "register-task-definition",
            "--region", region,
            "--cli-input-json", f"file://{request_file}",
            "--query", "taskDefinition.taskDefinitionArn",
            "--output", "text",
        ),
        dry_run_output=f"{task_definition['taskDefinitionArn'].rsplit(':', 1)[0]}:8",
    )  # fmt: skip
    try:
        _run_and_check(
            shell,
            task_definition,
            cluster=cluster,
            region=region,
            outputs=outputs,
            task_definition_arn=one_off_arn,
        )
    finally:
        # The revision was for this one run; the stack keeps owning the family's active one.
        shell.run(
            command(
                "aws", "ecs", "deregister-task-definition",
                "--region", region,
                "--task-definition", one_off_arn,
                "--query", "taskDefinition.status",
                "--output", "text",
            )
        )  # fmt: skip


def _run_and_check(
    shell: Shell,
    task_definition: dict[str, Any],
    *,
    cluster: str,
    region: str,
    outputs: StackOutputs,
    task_definition_arn: str,
) -> None:
    example_task = f"arn:aws:ecs:{region}:{EXAMPLE_ACCOUNT}:task/{cluster}/0123456789abcdef"
    subnets = ",".join(s.strip() for s in outputs["PrivateSubnetIds"].split(",") if s.strip())
    security_group = outputs["MigrationSecurityGroupId"]
    started = shell.read(
        command(
            "aws", "ecs", "run-task",
            "--region", region,
            "--cluster", cluster,
            "--launch-type", "FARGATE",
            "--task-definition", task_definition_arn,
            "--started-by", "herald-deploy",
            "--network-configuration",
            f"awsvpcConfiguration={{subnets=[{subnets}],securityGroups=[{security_group}],"
            "assignPublicIp=DISABLED}",
            "--output", "json",
        ),
        dry_run_output=json.dumps(
            {
                "tasks": [{"taskArn": example_task}],
                "failures": [],
            }
        ),
    )  # fmt: skip
    answer: dict[str, Any] = json.loads(started)
    if answer.get("failures") or not answer.get("tasks"):
        raise DeployError(f"ECS did not start the migration task: {answer.get('failures')}")
    task_arn = str(answer["tasks"][0]["taskArn"])
    shell.say(f"waiting for the migration task {task_arn} to stop")
    try:
        shell.run(
            command(
                "aws", "ecs", "wait", "tasks-stopped",
                "--region", region, "--cluster", cluster, "--tasks", task_arn,
            )
        )  # fmt: skip
    except DeployError as error:
        # The waiter gives up after 100 polls 6 s apart; the task may still be running.
        raise DeployError(
            f"{error}\nThe migration task {task_arn} had not stopped after 10 minutes; nothing "
            f"was deployed. {log_hint(task_definition, task_arn, region)}"
        ) from error
    described = shell.read(
        command(
            "aws", "ecs", "describe-tasks",
            "--region", region,
            "--cluster", cluster,
            "--tasks", task_arn,
            "--query", "tasks[0]",
            "--output", "json",
        ),
        dry_run_output=json.dumps(
            {
                "lastStatus": "STOPPED",
                "stoppedReason": "Essential container in task exited",
                "containers": [{"name": MIGRATION_CONTAINER, "exitCode": 0}],
            }
        ),
    )  # fmt: skip
    exit_code, reason = migration_outcome(json.loads(described))
    if exit_code != 0:
        raise DeployError(
            f"the migration task failed (exit code {exit_code}; {reason or 'no reason given'}); "
            f"nothing was deployed. {log_hint(task_definition, task_arn, region)}"
        )
    shell.say("migrations applied: the schema is current")
