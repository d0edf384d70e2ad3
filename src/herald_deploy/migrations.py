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
from typing import TYPE_CHECKING, Any

from herald_deploy.errors import DeployError
from herald_deploy.one_off_task import (
    MIGRATION_CONTAINER,
    WORK_DIR,
    describe_task_definition,
    run_task,
)
from herald_deploy.shell import command

if TYPE_CHECKING:
    from herald_deploy.shell import Shell
    from herald_deploy.stack_outputs import StackOutputs

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
STARTED_BY = "herald-deploy"


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


def run_migrations(shell: Shell, outputs: StackOutputs, *, region: str, image_uri: str) -> None:
    """Run `herald migrate` from `image_uri` as a one-off Fargate task; fail unless it exits 0."""
    task_definition = describe_task_definition(shell, outputs, region=region)
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
        run = run_task(
            shell,
            outputs,
            task_definition,
            region=region,
            task_definition_arn=one_off_arn,
            started_by=STARTED_BY,
            label="the migration task",
        )
        if not run.succeeded:
            raise run.failure("the migration task")
    except DeployError as error:
        raise DeployError(f"{error}\nNothing was deployed.") from error
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
    shell.say("migrations applied: the schema is current")
