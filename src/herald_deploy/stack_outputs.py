"""The root stack's Outputs: what the deploy steps learn about an environment.

A dry run answers `describe-stacks` with example outputs (or the ones `--outputs-file`
names), shaped like the real answer, so it exercises the same parsing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herald_deploy.errors import DeployError
from herald_deploy.shell import command

if TYPE_CHECKING:
    from herald_deploy.samconfig import Environment
    from herald_deploy.shell import Shell

EXAMPLE_ACCOUNT = "111122223333"


@dataclass(frozen=True)
class StackOutputs:
    """A stack's outputs by OutputKey."""

    stack_name: str
    values: dict[str, str]

    def __getitem__(self, key: str) -> str:
        try:
            return self.values[key]
        except KeyError:
            raise DeployError(
                f"stack {self.stack_name} has no output {key}: is it deployed from this "
                "version of template.yaml? (sam list stack-outputs --stack-name "
                f"{self.stack_name})"
            ) from None


def example_outputs(environment: Environment) -> dict[str, str]:
    """Outputs a dry run pretends the environment's stack has."""
    stack, region = environment.stack_name, environment.region
    api_domain = environment.parameters.get("ApiDomainName", f"api.{environment.name}.example.com")
    return {
        "ApiUrl": f"https://{api_domain}",
        "ClusterName": f"{stack}-cluster",
        "DatabaseEndpoint": (
            f"herald-{environment.name}-0a1b2c3d.c0example0000.{region}.rds.amazonaws.com"
        ),
        "IdempotencyTableName": f"{stack}-IdempotencyTable-EXAMPLE",
        "LoadBalancerDnsName": f"{stack}-alb-0example.{region}.elb.amazonaws.com",
        "MigrationTaskDefinitionArn": (
            f"arn:aws:ecs:{region}:{EXAMPLE_ACCOUNT}:task-definition/{stack}-migrate:7"
        ),
        "PrivateSubnetIds": "subnet-0example00000000a,subnet-0example00000000b",
        "MigrationSecurityGroupId": "sg-0example000000000",
        "SiteBucketName": f"{stack}-sitebucket-example",
        "SiteDistributionId": "E2EXAMPLE00000",
        "SiteUrl": "https://d111111abcdef8.cloudfront.net",
    }


def read_stack_outputs(
    shell: Shell, environment: Environment, *, dry_run_outputs: dict[str, str] | None = None
) -> StackOutputs:
    """`aws cloudformation describe-stacks`: the environment's root stack outputs."""
    example = dry_run_outputs if dry_run_outputs is not None else example_outputs(environment)
    try:
        answer = _describe_stack(shell, environment, example)
    except DeployError as error:
        if "does not exist" not in str(error):
            raise
        raise DeployError(
            f"{error}\nThe first deploy of an environment is made by hand with "
            "`sam deploy --guided` (docs/deploying.md, step 7)."
        ) from error
    try:
        outputs: list[dict[str, Any]] = json.loads(answer) or []
        values = {str(item["OutputKey"]): str(item["OutputValue"]) for item in outputs}
    except (ValueError, KeyError, TypeError) as error:
        raise DeployError(f"unexpected describe-stacks answer: {answer[:200]!r}") from error
    return StackOutputs(environment.stack_name, values)


def _describe_stack(shell: Shell, environment: Environment, example: dict[str, str]) -> str:
    return shell.read(
        command(
            "aws", "cloudformation", "describe-stacks",
            "--region", environment.region,
            "--stack-name", environment.stack_name,
            "--query", "Stacks[0].Outputs",
            "--output", "json",
        ),
        dry_run_output=json.dumps(
            [{"OutputKey": key, "OutputValue": value} for key, value in example.items()]
        ),
    )  # fmt: skip
