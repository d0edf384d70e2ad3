"""deploy-backend: the commit's image in ECR, the migrations, then `sam deploy`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from herald_deploy.errors import DeployError
from herald_deploy.image import (
    DEFAULT_ARCHITECTURE,
    PLATFORM_BY_ARCHITECTURE,
    ImageRef,
    caller_account,
    ensure_image,
)
from herald_deploy.migrations import run_migrations
from herald_deploy.shell import command
from herald_deploy.stack_outputs import EXAMPLE_ACCOUNT, read_stack_outputs

if TYPE_CHECKING:
    from herald_deploy.samconfig import Environment
    from herald_deploy.shell import Shell

IMAGE_PARAMETER = "BackendImageUri"
# The task runner's DD_VERSION: the commit, as the containers' image tag is.
VERSION_PARAMETER = "ServiceVersion"
ARCHITECTURE_PARAMETER = "BackendCpuArchitecture"
# The pipeline stack's boundary, which its CloudFormation role requires on every role.
BOUNDARY_PARAMETER = "PermissionsBoundaryArn"


def backend_architecture(environment: Environment) -> str:
    """The CPU architecture the environment's tasks run on (template default: ARM64)."""
    architecture = environment.parameters.get(ARCHITECTURE_PARAMETER, DEFAULT_ARCHITECTURE)
    if architecture not in PLATFORM_BY_ARCHITECTURE:
        raise DeployError(
            f"{ARCHITECTURE_PARAMETER}={architecture} in samconfig.toml is not one of "
            f"{', '.join(PLATFORM_BY_ARCHITECTURE)}"
        )
    return architecture


def commit_image(
    shell: Shell, environment: Environment, *, repository: str, commit: str
) -> ImageRef:
    """The ECR image of `commit` in the account the credentials belong to."""
    account = caller_account(shell, environment.region, dry_run_account=EXAMPLE_ACCOUNT)
    return ImageRef(account=account, region=environment.region, repository=repository, tag=commit)


def push_image(shell: Shell, environment: Environment, *, repository: str, commit: str) -> str:
    """Build and push the commit's image unless ECR has it; return its URI."""
    image = commit_image(shell, environment, repository=repository, commit=commit)
    ensure_image(shell, image, architecture=backend_architecture(environment), commit=commit)
    return image.uri


def sam_deploy(
    shell: Shell,
    environment: Environment,
    *,
    image_uri: str,
    version: str,
    confirm_changeset: bool,
    cloudformation_role_arn: str | None,
    permissions_boundary_arn: str | None = None,
) -> None:
    """`sam build` then `sam deploy` of the environment with the new image and version.

    The command line's --parameter-overrides replaces samconfig.toml's list instead of
    merging with it, so every parameter of the environment is passed, the image replaced
    (and the permissions boundary, when the pipeline gives one).
    """
    shell.run(command("sam", "build", "--config-env", environment.config_env))
    overrides = {
        **environment.with_parameter(IMAGE_PARAMETER, image_uri),
        VERSION_PARAMETER: version,
        **({BOUNDARY_PARAMETER: permissions_boundary_arn} if permissions_boundary_arn else {}),
    }
    blank = [
        key for key, value in overrides.items() if not value or any(c.isspace() for c in value)
    ]
    if blank:
        raise DeployError(
            f"samconfig.toml [{environment.config_env}]: empty or blank parameter values are "
            f"not supported here: {', '.join(blank)}"
        )
    shell.run(
        command(
            "sam", "deploy",
            "--config-env", environment.config_env,
            *([] if confirm_changeset else ["--no-confirm-changeset"]),
            # CloudFormation acts as this role, so the caller itself needs no rights on the
            # resources (stacks/pipeline.yaml: CloudFormationExecutionRole).
            *(["--role-arn", cloudformation_role_arn] if cloudformation_role_arn else []),
            "--parameter-overrides",
            *(f"{key}={value}" for key, value in overrides.items()),
        )
    )  # fmt: skip


def deploy_backend(
    shell: Shell,
    environment: Environment,
    *,
    repository: str,
    commit: str,
    confirm_changeset: bool,
    cloudformation_role_arn: str | None = None,
    permissions_boundary_arn: str | None = None,
    dry_run_outputs: dict[str, str] | None = None,
) -> None:
    """Image, migrations, then the stack: the services roll only through CloudFormation."""
    shell.say(f"deploy-backend {environment.name}: stack {environment.stack_name}, commit {commit}")
    outputs = read_stack_outputs(shell, environment, dry_run_outputs=dry_run_outputs)
    image_uri = push_image(shell, environment, repository=repository, commit=commit)
    shell.say("running the migrations as a one-off ECS task")
    run_migrations(shell, outputs, region=environment.region, image_uri=image_uri)
    shell.say(f"sam deploy of {environment.stack_name} with {image_uri}")
    sam_deploy(
        shell,
        environment,
        image_uri=image_uri,
        version=commit,
        confirm_changeset=confirm_changeset,
        cloudformation_role_arn=cloudformation_role_arn,
        permissions_boundary_arn=permissions_boundary_arn,
    )
