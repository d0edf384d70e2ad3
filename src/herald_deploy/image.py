"""The backend image: built once per commit, pushed to ECR under the commit's SHA.

ECR tags are immutable, so a tag is pushed at most once: when the commit's image is
already there (a re-run, the prod deploy after staging, a rollback to an older commit)
it is used as it is, never rebuilt. The Dockerfile is built from the repository root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from herald_deploy.errors import DeployError
from herald_deploy.shell import command

if TYPE_CHECKING:
    from herald_deploy.shell import Shell

DOCKERFILE = "ecs_service/Dockerfile"
# BackendCpuArchitecture (template.yaml) -> docker's platform. Fargate runs the tasks on
# the architecture the parameter names; an image for the other one dies with
# "exec format error".
PLATFORM_BY_ARCHITECTURE = {"ARM64": "linux/arm64", "X86_64": "linux/amd64"}
DEFAULT_ARCHITECTURE = "ARM64"


@dataclass(frozen=True)
class ImageRef:
    """Where one commit's image lives in ECR."""

    account: str
    region: str
    repository: str
    tag: str

    @property
    def registry(self) -> str:
        return f"{self.account}.dkr.ecr.{self.region}.amazonaws.com"

    @property
    def uri(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def caller_account(shell: Shell, region: str, *, dry_run_account: str) -> str:
    """The AWS account the credentials belong to (the registry is in that account)."""
    return shell.read(
        command(
            "aws", "sts", "get-caller-identity",
            "--region", region, "--query", "Account", "--output", "text",
        ),
        dry_run_output=dry_run_account,
    )  # fmt: skip


def image_exists(shell: Shell, image: ImageRef) -> bool:
    """Whether ECR already holds the tag (a dry run says no, to show the whole build)."""
    answer = shell.read(
        command(
            "aws", "ecr", "list-images",
            "--region", image.region,
            "--repository-name", image.repository,
            "--filter", "tagStatus=TAGGED",
            "--output", "json",
        ),
        dry_run_output=json.dumps({"imageIds": []}),
    )  # fmt: skip
    try:
        tags = {str(entry.get("imageTag")) for entry in json.loads(answer)["imageIds"]}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DeployError(f"unexpected list-images answer: {answer[:200]!r}") from error
    return image.tag in tags


def build_and_push(shell: Shell, image: ImageRef, *, architecture: str, commit: str) -> None:
    """Log in to ECR, build the image for the tasks' architecture and push it."""
    platform = PLATFORM_BY_ARCHITECTURE[architecture]
    shell.pipe(
        command("aws", "ecr", "get-login-password", "--region", image.region),
        command("docker", "login", "--username", "AWS", "--password-stdin", image.registry),
    )
    shell.run(
        command(
            "docker", "build",
            "--platform", platform,
            "--file", DOCKERFILE,
            "--tag", image.uri,
            "--label", f"org.opencontainers.image.revision={commit}",
            ".",
        )
    )  # fmt: skip
    shell.run(command("docker", "push", image.uri))


def ensure_image(shell: Shell, image: ImageRef, *, architecture: str, commit: str) -> None:
    """Make sure ECR holds the commit's image: push it unless the tag is already there."""
    if image_exists(shell, image):
        shell.say(f"{image.uri} is already in ECR: not rebuilding it (tags are immutable)")
        return
    shell.say(f"building and pushing {image.uri} ({architecture})")
    build_and_push(shell, image, architecture=architecture, commit=commit)
