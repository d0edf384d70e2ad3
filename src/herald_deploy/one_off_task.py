"""A `herald` command run once inside the environment, as a task of the migration task
definition: the restore drill's check and a tenant's bootstrap.

The stack's migration task definition is the one way in: the image the environment runs,
the database's address and secret, the private subnets and the security group the
database accepts. A run overrides only the container's command and some environment
variables (written to a file: `--overrides file://…`), waits for the task to stop, and
reads back its exit code and, when the container logs to CloudWatch, its output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herald_deploy.errors import DeployError
from herald_deploy.migrations import (
    MIGRATION_CONTAINER,
    WORK_DIR,
    example_task_definition,
    log_hint,
    log_location,
    migration_outcome,
)
from herald_deploy.shell import command
from herald_deploy.stack_outputs import EXAMPLE_ACCOUNT

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from herald_deploy.shell import Shell
    from herald_deploy.stack_outputs import StackOutputs


@dataclass(frozen=True)
class OneOffRun:
    """How a one-off task ended, and what it printed (None: not readable from CloudWatch)."""

    task_arn: str
    exit_code: int | None
    reason: str
    output: list[str] | None
    logs: str

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


def container_overrides(argv: Sequence[str], environment: Mapping[str, str]) -> dict[str, Any]:
    """ECS's override of the migration container: another command, some variables."""
    return {
        "containerOverrides": [
            {
                "name": MIGRATION_CONTAINER,
                "command": list(argv),
                "environment": [{"name": k, "value": v} for k, v in environment.items()],
            }
        ]
    }


def run_one_off_task(
    shell: Shell,
    outputs: StackOutputs,
    *,
    region: str,
    name: str,
    argv: Sequence[str],
    environment: Mapping[str, str],
    started_by: str,
    example_output: Sequence[str],
) -> OneOffRun:
    """Run `argv` once in the migration container (with `environment` added) and wait."""
    cluster = outputs["ClusterName"]
    task_definition_arn = outputs["MigrationTaskDefinitionArn"]
    described = shell.read(
        command(
            "aws", "ecs", "describe-task-definition",
            "--region", region,
            "--task-definition", task_definition_arn,
            "--query", "taskDefinition",
            "--output", "json",
        ),
        dry_run_output=json.dumps(example_task_definition(task_definition_arn, region)),
    )  # fmt: skip
    task_definition: dict[str, Any] = json.loads(described)
    overrides_file = WORK_DIR / f"{name}.json"
    shell.write_file(overrides_file, json.dumps(container_overrides(argv, environment)))
    subnets = ",".join(s.strip() for s in outputs["PrivateSubnetIds"].split(",") if s.strip())
    example_task = f"arn:aws:ecs:{region}:{EXAMPLE_ACCOUNT}:task/{cluster}/0fedcba987654321"
    started = shell.read(
        command(
            "aws", "ecs", "run-task",
            "--region", region,
            "--cluster", cluster,
            "--launch-type", "FARGATE",
            "--task-definition", task_definition_arn,
            "--started-by", started_by,
            "--network-configuration",
            f"awsvpcConfiguration={{subnets=[{subnets}],"
            f"securityGroups=[{outputs['MigrationSecurityGroupId']}],assignPublicIp=DISABLED}}",
            "--overrides", f"file://{overrides_file}",
            "--output", "json",
        ),
        dry_run_output=json.dumps({"tasks": [{"taskArn": example_task}], "failures": []}),
    )  # fmt: skip
    answer: dict[str, Any] = json.loads(started)
    if answer.get("failures") or not answer.get("tasks"):
        raise DeployError(f"ECS did not start `{' '.join(argv)}`: {answer.get('failures')}")
    task_arn = str(answer["tasks"][0]["taskArn"])
    shell.say(f"running `{' '.join(argv)}` as the one-off task {task_arn}")
    shell.run(
        command(
            "aws", "ecs", "wait", "tasks-stopped",
            "--region", region, "--cluster", cluster, "--tasks", task_arn,
        )
    )  # fmt: skip
    stopped = shell.read(
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
    exit_code, reason = migration_outcome(json.loads(stopped))
    return OneOffRun(
        task_arn=task_arn,
        exit_code=exit_code,
        reason=reason,
        output=_read_output(shell, task_definition, task_arn, region, example_output),
        logs=log_hint(task_definition, task_arn, region),
    )


def _read_output(
    shell: Shell,
    task_definition: dict[str, Any],
    task_arn: str,
    region: str,
    example_output: Sequence[str],
) -> list[str] | None:
    location = log_location(task_definition, task_arn)
    if location is None:
        shell.say("the task does not log to CloudWatch (Datadog is on): its output is there")
        return None
    group, stream = location
    try:
        answer = shell.read(
            command(
                "aws", "logs", "get-log-events",
                "--region", region,
                "--log-group-name", group,
                "--log-stream-name", stream,
                "--start-from-head",
                "--query", "events[].message",
                "--output", "json",
            ),
            dry_run_output=json.dumps(list(example_output)),
        )  # fmt: skip
        messages = json.loads(answer)
    except (DeployError, ValueError) as error:
        shell.say(f"could not read the task's log ({str(error).splitlines()[0]})")
        return None
    return [str(message) for message in messages] if isinstance(messages, list) else None
