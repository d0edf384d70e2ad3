"""Shared helpers of the infra tests: templates, their policies, and the tools that check them."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

from tests.conftest import REPO_ROOT, require_tool

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
# The templates a nested stack nests in turn, by the logical IDs that nest them: one ECS
# process each (stacks/backend.yaml's api, worker and migration).
SERVICE_TEMPLATES = {
    "ApiStack": STACKS_DIR / "service.yaml",
    "WorkerStack": STACKS_DIR / "service.yaml",
    "MigrationStack": STACKS_DIR / "service.yaml",
}

Template = dict[str, Any]


def template_id(path: Path) -> str:
    """Name a template in test ids by its path inside the repository."""
    return str(path.relative_to(REPO_ROOT))


def load_template(path: Path) -> Template:
    """Parse a CloudFormation/SAM template; short-form tags become their long form."""
    loaded: Template = cfn_yaml.load(str(path))
    return loaded


@pytest.fixture(scope="session")
def template() -> Template:
    """The root SAM template."""
    return load_template(ROOT_TEMPLATE)


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


# ------------------------------------------------------------------ nested stacks
# A template that nests a local template once per instance (stacks/backend.yaml nests
# stacks/service.yaml for the api, the worker and the migration) is read by the tests as
# one stack: each instance's resources inlined under its name, as if written out by hand.
# ApiStack's TaskDefinition becomes ApiTaskDefinition, its parameters become the values
# ApiStack passes, its conditions are decided where those values decide them, and the
# parent's reads of ApiStack's outputs become what the outputs hold. A property of the
# nested template is then checked on every instance, under the names it had when the
# instances were copies.

NESTED_STACK_TYPES = {
    "AWS::Serverless::Application": "Location",
    "AWS::CloudFormation::Stack": "TemplateURL",
}
_UNDECIDED = object()


def load_stack(path: Path) -> Template:
    """A template with every stack it nests from a local file inlined (`inline_nested`)."""
    return inline_nested(load_template(path), path)


def nested_template_path(resource: Mapping[str, Any], parent: Path) -> Path | None:
    """The local template a nested stack resource names, else None."""
    key = NESTED_STACK_TYPES.get(str(resource.get("Type")))
    location = resource.get("Properties", {}).get(key) if key else None
    if isinstance(location, str) and (parent.parent / location).is_file():
        return parent.parent / location
    return None


def inline_nested(template: Template, path: Path) -> Template:
    """``template`` with each nested stack of a local file replaced by its resources,
    prefixed with the nested stack's logical ID less "Stack" (ApiStack -> Api...)."""
    expanded: Template = copy.deepcopy(template)
    for stack_id, resource in template.get("Resources", {}).items():
        nested_path = nested_template_path(resource, path)
        if nested_path is None:
            continue
        nested = load_stack(nested_path)
        prefix = stack_id.removesuffix("Stack")
        outputs = _inline(expanded, stack_id, prefix, resource, nested)
        del expanded["Resources"][stack_id]
        expanded = _read_outputs(expanded, stack_id, outputs)
    return expanded


def _inline(
    parent: Template, stack_id: str, prefix: str, stack: Mapping[str, Any], nested: Template
) -> dict[str, Any]:
    """Add ``nested``'s resources, conditions and mappings to ``parent``; return its
    outputs' values, renamed."""
    passed = stack.get("Properties", {}).get("Parameters", {})
    values: dict[str, Any] = {}
    for name, declared in nested.get("Parameters", {}).items():
        if name in passed:
            value = passed[name]
            join = value.get("Fn::Join") if isinstance(value, Mapping) else None
            listed = "List" in str(declared.get("Type"))
            if listed and join and join[0] == ",":  # a list passed as its joined string
                value = join[1]
            elif listed and isinstance(value, str):
                value = value.split(",")
            elif listed and not _is_list_parameter(parent, value):  # a list of one
                value = [value]
            values[name] = value
        else:
            assert "Default" in declared, f"{stack_id} does not pass {name}"
            values[name] = declared["Default"]
    resources = nested.get("Resources", {})
    renamed = {logical_id: prefix + logical_id for logical_id in resources}

    def rename(value: Any) -> Any:
        return _substitute(value, values, renamed)

    # Conditions: decided now when the passed values decide them, else kept (shared with
    # the parent's condition of the same name when that one means the same).
    decided: dict[str, Any] = {}
    condition_names: dict[str, str] = {}
    for name, condition in nested.get("Conditions", {}).items():
        definition = rename(condition)
        outcome = _evaluate(definition, decided, parent.get("Parameters", {}))
        if outcome is not _UNDECIDED:
            decided[name] = outcome
            continue
        definition = _decide_conditions(definition, decided, condition_names)
        if "Fn::And" in definition:  # And[C, true...] is C: use C's name
            undecided = [
                c for c in definition["Fn::And"] if decided.get(c.get("Condition")) is not True
            ]
            if len(undecided) == 1 and list(undecided[0]) == ["Condition"]:
                condition_names[name] = undecided[0]["Condition"]
                continue
        existing = parent.setdefault("Conditions", {}).get(name)
        kept = name if existing in (None, definition) else prefix + name
        parent["Conditions"][kept] = definition
        condition_names[name] = kept
    for name, mapping in nested.get("Mappings", {}).items():
        assert parent.setdefault("Mappings", {}).get(name, mapping) == mapping, name
        parent["Mappings"][name] = mapping

    depends_on = as_list(stack.get("DependsOn", []))
    for logical_id, resource in resources.items():
        inlined = _decide_conditions(rename(resource), decided, condition_names)
        condition = resource.get("Condition")
        if condition in decided:
            if not decided[condition]:
                continue
            del inlined["Condition"]
        inlined["DependsOn"] = [
            *(renamed.get(d, d) for d in as_list(inlined.get("DependsOn", []))),
            *depends_on,
        ] or None
        if inlined["DependsOn"] is None:
            del inlined["DependsOn"]
        parent["Resources"][renamed[logical_id]] = inlined
    return {
        name: _decide_conditions(rename(output["Value"]), decided, condition_names)
        for name, output in nested.get("Outputs", {}).items()
        if decided.get(output.get("Condition"), True)
    }


def _is_list_parameter(template: Template, value: Any) -> bool:
    """Whether ``value`` is a Ref to a list parameter of ``template``."""
    declared = template.get("Parameters", {}).get(referenced_id(value) or "", {})
    return "Ref" in value and "List" in str(declared.get("Type"))


def _substitute(value: Any, values: Mapping[str, Any], renamed: Mapping[str, str]) -> Any:
    """``value`` with Refs to parameters replaced by the values passed, and Refs, GetAtts
    and ${...} to resources renamed."""
    if isinstance(value, list):
        return [_substitute(item, values, renamed) for item in value]
    if not isinstance(value, dict):
        return value
    if list(value) == ["Ref"]:
        name = value["Ref"]
        if name in values:
            return copy.deepcopy(values[name])
        return {"Ref": renamed.get(name, name)}
    if list(value) == ["Fn::GetAtt"]:
        target = value["Fn::GetAtt"]
        logical_id, attribute = target if isinstance(target, list) else target.split(".", 1)
        return {"Fn::GetAtt": [renamed.get(logical_id, logical_id), attribute]}
    if list(value) == ["Fn::Sub"]:
        sub = value["Fn::Sub"]
        text, variables = (sub[0], dict(sub[1])) if isinstance(sub, list) else (sub, {})
        local = {k: _substitute(v, values, renamed) for k, v in variables.items()}
        extra: dict[str, Any] = {}

        def placeholder(match: re.Match[str]) -> str:
            name, _, attribute = match.group(1).partition(".")
            if match.group(1) in local or name.startswith("AWS::"):
                return match.group(0)
            if name in values:
                passed = values[name]
                if isinstance(passed, str | int | float):
                    return str(passed)
                target = referenced_id(passed)
                if target is not None and "Ref" in passed:
                    return "${" + target + "}"
                if target is not None:
                    return "${" + ".".join(passed["Fn::GetAtt"]) + "}"
                extra[name] = copy.deepcopy(passed)
                return match.group(0)
            return (
                "${"
                + ".".join([renamed.get(name, name), *([attribute] if attribute else [])])
                + "}"
            )

        text = re.sub(r"\$\{([^!}][^}]*)\}", placeholder, text)
        local |= extra
        if not local and "${" not in text:  # nothing left to substitute: the string itself
            return text
        return {"Fn::Sub": [text, local] if local else text}
    return {key: _substitute(item, values, renamed) for key, item in value.items()}


def _may_equal(value: Any, literal: Any, parameters: Mapping[str, Any]) -> bool:
    """Whether a reference can take a literal value: only a parameter of the parent that
    allows it explicitly (its Default, AllowedValues or AllowedPattern) can; a resource's
    Ref or attribute, or a value built from them, is taken to be a real (non-empty) value."""
    declared = parameters.get(referenced_id(value) or "") if "Ref" in value else None
    if declared is None:
        return False
    text = str(literal)
    return (
        str(declared.get("Default")) == text
        or text in [str(allowed) for allowed in declared.get("AllowedValues", [])]
        or bool(re.fullmatch(declared.get("AllowedPattern", "(?!)"), text))
    )


def _evaluate(condition: Any, decided: Mapping[str, bool], parameters: Mapping[str, Any]) -> Any:
    """A condition's outcome when the values in it decide it, else _UNDECIDED."""
    if not isinstance(condition, Mapping) or len(condition) != 1:
        return _UNDECIDED
    [(function, arguments)] = condition.items()
    if function == "Condition":
        return decided.get(arguments, _UNDECIDED)
    if function == "Fn::Equals":
        left, right = arguments
        if isinstance(left, dict) and isinstance(right, dict):
            return _UNDECIDED
        if isinstance(left, dict) or isinstance(right, dict):
            reference, literal = (left, right) if isinstance(left, dict) else (right, left)
            return _UNDECIDED if _may_equal(reference, literal, parameters) else False
        return str(left) == str(right)
    outcomes = [_evaluate(argument, decided, parameters) for argument in arguments]
    if function == "Fn::Not":
        return _UNDECIDED if outcomes[0] is _UNDECIDED else not outcomes[0]
    if function == "Fn::And":
        if False in outcomes:
            return False
        return _UNDECIDED if _UNDECIDED in outcomes else True
    if function == "Fn::Or":
        if True in outcomes:
            return True
        return _UNDECIDED if _UNDECIDED in outcomes else False
    return _UNDECIDED


def _decide_conditions(value: Any, decided: Mapping[str, bool], names: Mapping[str, str]) -> Any:
    """``value`` with each Fn::If on a decided condition replaced by its branch (dropped
    when that is AWS::NoValue), and the conditions kept renamed as the parent knows them."""
    if isinstance(value, list):
        items = [_decide_conditions(item, decided, names) for item in value]
        return [item for item in items if item is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if list(value) == ["Fn::If"]:
        name, when_true, when_false = value["Fn::If"]
        if name in decided:
            chosen = when_true if decided[name] else when_false
            if chosen == {"Ref": "AWS::NoValue"}:
                return _NO_VALUE
            return _decide_conditions(chosen, decided, names)
        branches = [
            _decide_conditions(branch, decided, names) for branch in (when_true, when_false)
        ]
        return {"Fn::If": [names.get(name, name), *branches]}
    if list(value) == ["Condition"] and isinstance(value["Condition"], str):
        return {"Condition": names.get(value["Condition"], value["Condition"])}
    resolved = {key: _decide_conditions(item, decided, names) for key, item in value.items()}
    if isinstance(resolved.get("Condition"), str):
        resolved["Condition"] = names.get(resolved["Condition"], resolved["Condition"])
    return {key: item for key, item in resolved.items() if item is not _NO_VALUE}


def _read_outputs(template: Template, stack_id: str, outputs: Mapping[str, Any]) -> Template:
    """``template`` with its reads of a nested stack's outputs replaced by their values."""

    def replace(value: Any) -> Any:
        if isinstance(value, list):
            return [replace(item) for item in value]
        if not isinstance(value, dict):
            return value
        if list(value) == ["Fn::GetAtt"]:
            target = value["Fn::GetAtt"]
            logical_id, attribute = target if isinstance(target, list) else target.split(".", 1)
            if logical_id == stack_id and attribute.startswith("Outputs."):
                return copy.deepcopy(outputs[attribute.removeprefix("Outputs.")])
        if list(value) == ["Fn::Sub"]:
            sub = value["Fn::Sub"]
            text, variables = (sub[0], sub[1]) if isinstance(sub, list) else (sub, {})

            def placeholder(match: re.Match[str]) -> str:
                output = outputs[match.group(1)]
                target = referenced_id(output)
                assert target is not None, f"{stack_id}.Outputs.{match.group(1)}: {output!r}"
                if "Ref" in output:
                    return "${" + target + "}"
                return "${" + ".".join(output["Fn::GetAtt"]) + "}"

            text = re.sub(r"\$\{" + stack_id + r"\.Outputs\.([A-Za-z0-9]+)\}", placeholder, text)
            return {"Fn::Sub": [text, replace(variables)] if variables else text}
        return {key: replace(item) for key, item in value.items()}

    return {
        key: replace(item) if key in ("Resources", "Outputs") else item
        for key, item in template.items()
    }


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
