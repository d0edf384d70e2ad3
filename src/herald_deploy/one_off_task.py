"""A `herald` command run once inside the environment, as a task of the migration task
definition: a release's migrations, the restore drill's check and a tenant's bootstrap.

The stack's migration task definition is the one way in: the image the environment runs,
the database's address and secret, the private subnets and the security group the
database accepts. A run uses it as it is (or a one-off revision of it: the release's
migrations, `herald_deploy.migrations`), may override the container's command and some
environment variables (written to a file: `--overrides file://…`), waits for the task to
stop, and reads back its exit code and, when the container logs to CloudWatch, its output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herald_deploy.errors import DeployError
from herald_deploy.shell import command
from herald_deploy.stack_outputs import EXAMPLE_ACCOUNT

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from herald_deploy.shell import Shell
    from herald_deploy.stack_outputs import StackOutputs

MIGRATION_CONTAINER = "migrate"
WORK_DIR = Path("build") / "herald-deploy"
EXAMPLE_TASK_ID = "0fedcba987654321"


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


def describe_task_definition(shell: Shell, outputs: StackOutputs, *, region: str) -> dict[str, Any]:
    """The stack's migration task definition, as ECS describes it."""
    arn = outputs["MigrationTaskDefinitionArn"]
    described = shell.read(
        command(
            "aws", "ecs", "describe-task-definition",
            "--region", region,
            "--task-definition", arn,
            "--query", "taskDefinition",
            "--output", "json",
        ),
        dry_run_output=json.dumps(example_task_definition(arn, region)),
    )  # fmt: skip
    task_definition: dict[str, Any] = json.loads(described)
    return task_definition


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


def container_outcome(task: dict[str, Any]) -> tuple[int | None, str]:
    """The migration container's exit code and why the task stopped."""
    reasons = [str(task.get("stoppedReason", ""))]
    exit_code: int | None = None
    for container in task.get("containers", []):
        if container.get("name") == MIGRATION_CONTAINER:
            code = container.get("exitCode")
            exit_code = int(code) if code is not None else None
            reasons.append(str(container.get("reason", "")))
    return exit_code, "; ".join(reason for reason in reasons if reason)


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


@dataclass(frozen=True)
class OneOffRun:
    """How a one-off task ended, and what it printed (None: not read, or not readable)."""

    task_arn: str
    exit_code: int | None
    reason: str
    output: list[str] | None
    logs: str

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    def failure(self, what: str, *, found: str = "") -> DeployError:
        """`what` failed: its exit code, its last `herald:` line (the CLI's one-line error)
        or else ECS's reason, what it `found`, and where its logs are."""
        said = [line for line in self.output or [] if line.startswith("herald:")]
        why = said[-1] if said else self.reason or "no reason given"
        found = f"; it found {found}" if found else ""
        return DeployError(f"{what} failed (exit code {self.exit_code}; {why}){found}. {self.logs}")


def run_task(
    shell: Shell,
    outputs: StackOutputs,
    task_definition: dict[str, Any],
    *,
    region: str,
    task_definition_arn: str,
    started_by: str,
    label: str,
    overrides_file: Path | None = None,
) -> OneOffRun:
    """Start one task of `task_definition_arn` in the stack's private subnets with the
    migration security group, wait for it to stop and return how it ended (its output
    unread). `label` names it in the progress line and errors."""
    cluster = outputs["ClusterName"]
    subnets = ",".join(s.strip() for s in outputs["PrivateSubnetIds"].split(",") if s.strip())
    security_group = outputs["MigrationSecurityGroupId"]
    overrides = ["--overrides", f"file://{overrides_file}"] if overrides_file else []
    example_task = f"arn:aws:ecs:{region}:{EXAMPLE_ACCOUNT}:task/{cluster}/{EXAMPLE_TASK_ID}"
    started = shell.read(
        command(
            "aws", "ecs", "run-task",
            "--region", region,
            "--cluster", cluster,
            "--launch-type", "FARGATE",
            "--task-definition", task_definition_arn,
            "--started-by", started_by,
            "--network-configuration",
            f"awsvpcConfiguration={{subnets=[{subnets}],securityGroups=[{security_group}],"
            "assignPublicIp=DISABLED}",
            *overrides,
            "--output", "json",
        ),
        dry_run_output=json.dumps({"tasks": [{"taskArn": example_task}], "failures": []}),
    )  # fmt: skip
    answer: dict[str, Any] = json.loads(started)
    if answer.get("failures") or not answer.get("tasks"):
        raise DeployError(f"ECS did not start {label}: {answer.get('failures')}")
    task_arn = str(answer["tasks"][0]["taskArn"])
    shell.say(f"waiting for {label} to stop (the one-off task {task_arn})")
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
            f"{error}\n{label} ({task_arn}) had not stopped after 10 minutes. "
            f"{log_hint(task_definition, task_arn, region)}"
        ) from error
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
    exit_code, reason = container_outcome(json.loads(stopped))
    return OneOffRun(
        task_arn=task_arn,
        exit_code=exit_code,
        reason=reason,
        output=None,
        logs=log_hint(task_definition, task_arn, region),
    )


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
    """Run `argv` once in the stack's migration container (with `environment` added), wait,
    and read what it printed (`example_output` in a dry run)."""
    task_definition = describe_task_definition(shell, outputs, region=region)
    overrides_file = WORK_DIR / f"{name}.json"
    shell.write_file(overrides_file, json.dumps(container_overrides(argv, environment)))
    run = run_task(
        shell,
        outputs,
        task_definition,
        region=region,
        task_definition_arn=outputs["MigrationTaskDefinitionArn"],
        started_by=started_by,
        label=f"`{' '.join(argv)}`",
        overrides_file=overrides_file,
    )
    output = _read_output(shell, task_definition, run.task_arn, region, example_output)
    return replace(run, output=output)


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
