"""Shared helpers of the infra tests: templates, their policies, and the tools that check them."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

from tests.conftest import REPO_ROOT, require_tool
from tools.nested_stacks import ROOT_INLINED_STACKS, inline_nested

ROOT_TEMPLATE = REPO_ROOT / "template.yaml"
STACKS_DIR = REPO_ROOT / "stacks"
# The root template and every nested or standalone stack beside it; new stacks are covered
# by every test parametrized over this list without a change here.
TEMPLATES = [ROOT_TEMPLATE, *sorted(STACKS_DIR.glob("*.yaml"))]
# The stacks template.yaml nests (AWS::Serverless::Application with a local Location).
NESTED_STACKS = {
    "NetworkStack": STACKS_DIR / "network.yaml",
    "DatabaseStack": STACKS_DIR / "database.yaml",
    "BackendStack": STACKS_DIR / "backend.yaml",
}
# The stacks template.yaml nests only to be shorter (tools/nested_stacks.ROOT_INLINED_STACKS):
# the `template` fixture reads them inlined, as part of the root.
ROOT_PARTS = {
    "TaskStack": STACKS_DIR / "queue.yaml",
    "ResultStack": STACKS_DIR / "queue.yaml",
    "FeedbackStack": STACKS_DIR / "queue.yaml",
    "SesStack": STACKS_DIR / "ses.yaml",
    "SiteStack": STACKS_DIR / "site.yaml",
    "DashboardStack": STACKS_DIR / "dashboard.yaml",
}
# The templates a nested stack nests in turn, by the logical IDs that nest them: one ECS
# process each (stacks/backend.yaml's api, worker and migration).
SERVICE_TEMPLATES = {
    "ApiStack": STACKS_DIR / "service.yaml",
    "WorkerStack": STACKS_DIR / "service.yaml",
    "MigrationStack": STACKS_DIR / "service.yaml",
}

Template = dict[str, Any]
# The templates read inside the one that nests them (the root's parts, the backend's
# services), under the names it gives their resources: WHOLE_TEMPLATES, read with
# `read_whole`, hold every resource once.
READ_INSIDE = {path.resolve() for path in [*ROOT_PARTS.values(), *SERVICE_TEMPLATES.values()]}
WHOLE_TEMPLATES = [path for path in TEMPLATES if path.resolve() not in READ_INSIDE]


def template_id(path: Path) -> str:
    """Name a template in test ids by its path inside the repository."""
    return str(path.relative_to(REPO_ROOT))


def load_template(path: Path) -> Template:
    """Parse a CloudFormation/SAM template; short-form tags become their long form."""
    loaded: Template = cfn_yaml.load(str(path))
    return loaded


@pytest.fixture(scope="session")
def template() -> Template:
    """The root SAM template as one piece: the stacks split out of it only to shorten it
    (ROOT_PARTS: stacks/queue.yaml, ses.yaml, site.yaml, dashboard.yaml) inlined under the
    logical IDs they had in it (TaskQueue, SiteBucket; the dashboard is DashboardPipeline);
    the network, database and backend stay nested stacks."""
    return load_root()


@pytest.fixture(scope="session")
def root_template() -> Template:
    """template.yaml as written, every nested stack a resource (its wiring)."""
    return load_template(ROOT_TEMPLATE)


def load_root() -> Template:
    """template.yaml with ROOT_INLINED_STACKS inlined (the `template` fixture)."""
    return inline_nested(
        load_template(ROOT_TEMPLATE), ROOT_TEMPLATE, load_template, ROOT_INLINED_STACKS
    )


@pytest.fixture(scope="session")
def network() -> Template:
    """stacks/network.yaml: the app VPC."""
    return load_template(NESTED_STACKS["NetworkStack"])


@pytest.fixture(scope="session")
def database() -> Template:
    """stacks/database.yaml: the database VPC, the peering and RDS PostgreSQL."""
    return load_template(NESTED_STACKS["DatabaseStack"])


@pytest.fixture(scope="session")
def backend() -> Template:
    """stacks/backend.yaml: ECS Fargate, the ALB and autoscaling, with its three processes'
    stacks/service.yaml inlined (`load_stack`): ApiTaskDefinition, WorkerTaskRole, ..."""
    return load_stack(NESTED_STACKS["BackendStack"])


def read_whole(path: Path) -> Template:
    """One of WHOLE_TEMPLATES with its parts: the root with ROOT_PARTS inlined (`load_root`),
    a stack with the templates it nests once per instance inlined (`load_stack`)."""
    return load_root() if path == ROOT_TEMPLATE else load_stack(path)


def load_stack(path: Path) -> Template:
    """A template with the templates it nests once per instance inlined under each
    instance's name (tools/nested_stacks.py): stacks/backend.yaml's ApiStack becomes
    ApiTaskDefinition, ApiTaskRole, ApiService, ... as if written out by hand, so a property
    of stacks/service.yaml is checked on every instance."""
    return inline_nested(load_template(path), path, load_template)


def resources_of_type(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    """Every resource of one type, by logical ID."""
    return {
        logical_id: resource
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == resource_type
    }


def properties(template: Template, logical_id: str) -> dict[str, Any]:
    """A resource's Properties (empty when it has none)."""
    props: dict[str, Any] = template["Resources"][logical_id].get("Properties", {})
    return props


def function_properties(template: Template, logical_id: str) -> dict[str, Any]:
    """A SAM function's properties with Globals.Function merged in, as SAM does.

    Environment variables merge key by key; any other property set on the function wins.
    """
    defaults: dict[str, Any] = dict(template.get("Globals", {}).get("Function", {}))
    own = properties(template, logical_id)
    merged = {**defaults, **own}
    variables = {
        **defaults.get("Environment", {}).get("Variables", {}),
        **own.get("Environment", {}).get("Variables", {}),
    }
    if variables:
        merged["Environment"] = {"Variables": variables}
    return merged


def referenced_id(value: Any) -> str | None:
    """The logical ID a `!Ref X` or `!GetAtt X.Attr` points to, else None."""
    if isinstance(value, Mapping):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return str(target[0] if isinstance(target, Sequence) else target.split(".")[0])
    return None


def worst_case_number(template: Template, value: Any) -> int:
    """A number, or the largest value a `!Ref` to a Number parameter can take."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value)
    name = referenced_id(value)
    parameter = template.get("Parameters", {}).get(name)
    if parameter is None:
        raise AssertionError(f"expected a number or a Ref to a parameter, got {value!r}")
    if "MaxValue" in parameter:
        return int(parameter["MaxValue"])
    if "AllowedValues" in parameter:
        return max(int(allowed) for allowed in parameter["AllowedValues"])
    raise AssertionError(f"parameter {name} has no upper bound (MaxValue or AllowedValues)")


def as_list(value: Any) -> list[Any]:
    """A policy element that may be one item or a list, as a list."""
    return list(value) if isinstance(value, list) else [value]


@dataclass(frozen=True)
class PolicyStatement:
    """One statement of a policy document, with the resource that declares it."""

    owner: str
    owner_type: str
    statement: Mapping[str, Any]

    @property
    def sid(self) -> str:
        return str(self.statement.get("Sid", ""))

    @property
    def allows(self) -> bool:
        return self.statement.get("Effect") == "Allow"

    @property
    def actions(self) -> list[str]:
        return [str(action) for action in as_list(self.statement.get("Action", []))]

    @property
    def resources(self) -> list[Any]:
        return as_list(self.statement.get("Resource", []))

    def __str__(self) -> str:
        return f"{self.owner} ({self.owner_type}) statement {self.sid or '<no Sid>'}"


# Where each resource type keeps its policy documents (a path of property names; "*" walks
# a list).
POLICY_DOCUMENT_PATHS: dict[str, list[tuple[str, ...]]] = {
    "AWS::IAM::Role": [("Policies", "*", "PolicyDocument")],
    "AWS::IAM::Policy": [("PolicyDocument",)],
    "AWS::IAM::ManagedPolicy": [("PolicyDocument",)],
    "AWS::KMS::Key": [("KeyPolicy",)],
    "AWS::SQS::QueuePolicy": [("PolicyDocument",)],
    "AWS::SNS::TopicPolicy": [("PolicyDocument",)],
    "AWS::S3::BucketPolicy": [("PolicyDocument",)],
    "AWS::Serverless::Function": [("Policies", "*")],
}


def _walk(value: Any, path: tuple[str, ...]) -> Iterator[Any]:
    if not path:
        yield value
        return
    head, rest = path[0], path[1:]
    if head == "*":
        for item in value if isinstance(value, list) else []:
            yield from _walk(item, rest)
    elif isinstance(value, Mapping) and head in value:
        yield from _walk(value[head], rest)


def policy_statements(template: Template) -> Iterator[PolicyStatement]:
    """Every statement of every permission policy, key policy and resource policy."""
    for logical_id, resource in template.get("Resources", {}).items():
        resource_type = resource.get("Type", "")
        for path in POLICY_DOCUMENT_PATHS.get(resource_type, []):
            for document in _walk(resource.get("Properties", {}), path):
                if not isinstance(document, Mapping) or "Statement" not in document:
                    continue  # a SAM policy template or a managed policy's name
                for statement in as_list(document["Statement"]):
                    yield PolicyStatement(logical_id, resource_type, statement)


# The statement every KMS key policy carries (Control Tower's CT.KMS.PR.3): nobody may create
# a grant on the key unless an AWS service does it for a resource of the account.
KMS_GRANTS_ONLY_FOR_AWS_SERVICES = {
    "Sid": "DenyGrantsExceptForAwsServices",
    "Effect": "Deny",
    "Principal": {"AWS": "*"},
    "Action": "kms:CreateGrant",
    "Resource": "*",
    "Condition": {
        "BoolIfExists": {
            "kms:GrantIsForAWSResource": "false",
            "aws:PrincipalIsAWSService": "false",
        }
    },
}


def run_tool(
    command: Sequence[str], *, cwd: Path = REPO_ROOT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command line tool, capturing its output as text."""
    return subprocess.run(
        list(command),
        cwd=cwd,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0", **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """A failed command's exit code and output, for an assertion message."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def python313() -> str | None:
    """The Python 3.13 that src/Makefile compiles bytecode with, or None when there is none.

    Same lookup as the Makefile: HERALD_PYTHON313, else scripts/find-python.
    """
    candidate = os.environ.get("HERALD_PYTHON313")
    if not candidate:
        found = run_tool([str(REPO_ROOT / "scripts" / "find-python")])
        candidate = found.stdout.strip() if found.returncode == 0 else ""
    if not candidate:
        return None
    version = run_tool([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"])
    return candidate if version.stdout.strip() == "True" else None


@dataclass(frozen=True)
class SamBuild:
    """Where `sam build` wrote the application (template, nested stacks, the Lambda)."""

    build_dir: Path
    seconds: float
    log: str


@pytest.fixture(scope="session")
def sam_build(tmp_path_factory: pytest.TempPathFactory) -> SamBuild:
    """Run `sam build` of the whole application once, outside the repository."""
    sam = require_tool("sam")
    require_tool("make")
    workdir = tmp_path_factory.mktemp("sam-build")
    started = time.monotonic()
    result = run_tool(
        [
            sam,
            "build",
            "--template-file",
            str(ROOT_TEMPLATE),
            "--build-dir",
            str(workdir / "build"),
        ],
        cwd=workdir,  # sam writes build.toml into the working directory
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, describe(result)
    return SamBuild(workdir / "build", seconds, result.stdout + result.stderr)


def nested_stack_parameters(template: Template, logical_id: str) -> dict[str, Any]:
    """The Parameters template.yaml passes to one of its nested stacks."""
    parameters: dict[str, Any] = properties(template, logical_id).get("Parameters", {})
    return parameters


@dataclass(frozen=True)
class IngressRule:
    """One ingress rule: the security group it opens (a logical ID or a parameter) and the rule."""

    group: str
    rule: Mapping[str, Any]

    @property
    def cidrs(self) -> list[str]:
        return [str(self.rule[key]) for key in ("CidrIp", "CidrIpv6") if key in self.rule]


def ingress_rules(template: Template) -> list[IngressRule]:
    """Every ingress rule, inline in a security group or a resource of its own."""
    rules = [
        IngressRule(logical_id, rule)
        for logical_id in resources_of_type(template, "AWS::EC2::SecurityGroup")
        for rule in properties(template, logical_id).get("SecurityGroupIngress", [])
    ]
    rules += [
        IngressRule(str(referenced_id(props["GroupId"])), props)
        for logical_id in resources_of_type(template, "AWS::EC2::SecurityGroupIngress")
        if (props := properties(template, logical_id))
    ]
    return rules


def container_definitions(template: Template) -> dict[str, dict[str, Any]]:
    """Every container definition of every ECS task definition, by container name, as
    deployed with Datadog off (the default; test_datadog_template.py checks it on)."""
    deployed = resolve_datadog(template, enabled=False)
    return {
        container["Name"]: container
        for task_id in resources_of_type(deployed, "AWS::ECS::TaskDefinition")
        for container in properties(deployed, task_id)["ContainerDefinitions"]
    }


_NO_VALUE = object()


def resolve_datadog(value: Any, *, enabled: bool) -> Any:
    """``value`` with every ``Fn::If [DatadogEnabled, …]`` replaced by its chosen branch, and
    dropped where that branch is ``AWS::NoValue``, as CloudFormation does when it deploys.
    Other conditions stay as they are."""
    if isinstance(value, dict):
        if list(value) == ["Fn::If"] and value["Fn::If"][0] == "DatadogEnabled":
            _, when_on, when_off = value["Fn::If"]
            chosen = when_on if enabled else when_off
            if chosen == {"Ref": "AWS::NoValue"}:
                return _NO_VALUE
            return resolve_datadog(chosen, enabled=enabled)
        resolved = {str(k): resolve_datadog(v, enabled=enabled) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}
    if isinstance(value, list):
        items = [resolve_datadog(item, enabled=enabled) for item in value]
        return [item for item in items if item is not _NO_VALUE]
    return value


# `sam validate` offline: the region SAM needs, nothing that reaches an account.
SAM_ENV = {"AWS_DEFAULT_REGION": "us-east-1"}


def sam_validate_lint(template: Path) -> subprocess.CompletedProcess[str]:
    """``sam validate --lint`` of ``template``, run in its folder (no samconfig.toml is read
    unless one lies beside it), offline."""
    sam = require_tool("sam")
    return run_tool(
        [sam, "validate", "--lint", "--template-file", str(template)],
        cwd=template.parent,
        env=SAM_ENV,
    )


def checkov_report(template_path: Path) -> dict[str, Any]:
    """checkov's JSON report on one template (offline: no guideline download)."""
    checkov = require_tool("checkov")
    result = run_tool(
        [
            checkov,
            "--skip-download",
            "--framework",
            "cloudformation",
            "--output",
            "json",
            "--file",
            str(template_path),
        ]
    )
    assert result.returncode in (0, 1), describe(result)  # 1: some check failed
    report: dict[str, Any] | list[dict[str, Any]] = json.loads(result.stdout)
    # One report per framework; a single framework still comes as an object.
    report = report[0] if isinstance(report, list) else report
    # A template none of whose resources any check applies to (e.g. one of only CloudWatch
    # alarms: checkov has no alarm check) gets only a summary: no results, and none failed.
    if "results" not in report:
        assert report["failed"] == 0, report
        report = {
            "results": {"failed_checks": []},
            "summary": {"parsing_errors": report["parsing_errors"]},
        }
    return report
