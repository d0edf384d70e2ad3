"""Datadog in the templates: off unless DatadogApiKeySecretArn is given, and then the task
runner's layers and environment, the api's and worker's agent and FireLens log router, the
API key read from its secret only (never an environment variable), IAM scoped to that one
secret. CloudWatch stays on: the log router also sends each app container's logs to that
container's own log group, as EMF. Both variants pass cfn-lint, SAM's validation and checkov.

The "off" variant is the repository's templates, which test_template_linters already lints
and scans. The "on" variant is the same templates with a non-empty default for the secret,
rendered into a temporary directory. checkov does not look inside `Fn::If`, so it scans each
variant with the DatadogEnabled branches resolved (what CloudFormation would deploy).
"""

from __future__ import annotations

import json
import re
import shlex
from fnmatch import fnmatchcase
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import require_tool
from tests.infra.conftest import (
    NESTED_STACKS,
    ROOT_TEMPLATE,
    Template,
    checkov_report,
    describe,
    function_properties,
    load_stack,
    load_template,
    policy_statements,
    properties,
    referenced_id,
    resolve_datadog,
    run_tool,
    sam_validate_lint,
)

if TYPE_CHECKING:
    from pathlib import Path

BACKEND_TEMPLATE = NESTED_STACKS["BackendStack"]
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:herald/datadog-api-key-AbCdEf"
# The parameter as both templates declare it; the "on" variant gives it a default.
SECRET_PARAMETER = '  DatadogApiKeySecretArn:\n    Type: String\n    Default: ""\n'
HANDLER = "handlers.task_runner.lambda_handler"
LAYER_ACCOUNT = "464622532012"  # Datadog's account that publishes the Lambda layers
SIDECARS = {"datadog-agent-init", "datadog-agent", "log-router-init", "log_router"}
APP_SERVICES = {"ApiTaskDefinition": "api", "WorkerTaskDefinition": "worker"}
TASK_ROLES = {"ApiTaskDefinition": "ApiTaskRole", "WorkerTaskDefinition": "WorkerTaskRole"}
# The log router's extra Fluent Bit configuration, and the variable its init container
# writes it from.
CLOUDWATCH_CONFIG = "/fluent-bit/extra/cloudwatch.conf"
CLOUDWATCH_CONFIG_VARIABLE = "HERALD_FLUENT_BIT_CLOUDWATCH_CONF"
SECRET_LOOKING = re.compile(r"API_KEY|APIKEY|SECRET|PASSWORD|TOKEN", re.I)
# Named like secrets, hold ARNs: useless without the role that may read them.
SECRET_ARN_VARIABLES = {"DD_API_KEY_SECRET_ARN", "DATABASE_SECRET_ARN"}


def variant(template_path: Path, *, enabled: bool) -> Template:
    """A template as deployed with Datadog on or off; the backend with its processes'
    stacks/service.yaml inlined (ApiTaskDefinition, WorkerTaskRole, ...)."""
    loaded = load_stack(template_path) if template_path == BACKEND_TEMPLATE else None
    resolved: Template = resolve_datadog(loaded or load_template(template_path), enabled=enabled)
    return resolved


@pytest.fixture(scope="module")
def datadog_on_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """template.yaml and stacks/ with the secret's default set, in a temporary directory."""
    directory = tmp_path_factory.mktemp("datadog-on")
    (directory / "stacks").mkdir()
    for source in [ROOT_TEMPLATE, *sorted(BACKEND_TEMPLATE.parent.glob("*.yaml"))]:
        relative = source.relative_to(ROOT_TEMPLATE.parent)
        text = source.read_text(encoding="utf-8")
        if source in (ROOT_TEMPLATE, BACKEND_TEMPLATE):
            assert text.count(SECRET_PARAMETER) == 1, source
            text = text.replace(SECRET_PARAMETER, SECRET_PARAMETER.replace('""', f'"{SECRET_ARN}"'))
        (directory / relative).write_text(text, encoding="utf-8")
    return directory


def environment(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["Name"]: variable["Value"] for variable in container.get("Environment", [])}


def containers(backend: Template, task_id: str) -> dict[str, dict[str, Any]]:
    return {c["Name"]: c for c in properties(backend, task_id)["ContainerDefinitions"]}


def fluent_bit_sections(config: str) -> list[tuple[str, dict[str, str]]]:
    """The sections of a Fluent Bit classic-mode configuration, in order: each header's name
    (``OUTPUT``) and its ``key value`` entries, keys lower-cased (Fluent Bit ignores case)."""
    sections: list[tuple[str, dict[str, str]]] = []
    for number, raw in enumerate(config.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = re.fullmatch(r"\[([A-Z]+)\]", line)
        if header:
            assert raw == line, f"line {number}: a section header is not indented"
            sections.append((header.group(1), {}))
            continue
        assert sections, f"line {number}: an entry before any section"
        assert raw != line, f"line {number}: an entry is indented under its section"
        key, _, value = line.partition(" ")
        entries = sections[-1][1]
        assert key.lower() not in entries, f"line {number}: {key} given twice"
        assert value.strip(), f"line {number}: {key} has no value"
        entries[key.lower()] = value.strip()
    return sections


def cloudwatch_config(init: dict[str, Any]) -> str:
    """The configuration text log-router-init writes (a Fn::Sub string, unresolved)."""
    value = environment(init)[CLOUDWATCH_CONFIG_VARIABLE]
    assert list(value) == ["Fn::Sub"] and isinstance(value["Fn::Sub"], str)
    config: str = value["Fn::Sub"]
    return config


def log_group_with_datadog_off(task_id: str) -> str:
    """The log group the app container of a task writes to with Datadog off."""
    [app] = properties(variant(BACKEND_TEMPLATE, enabled=False), task_id)["ContainerDefinitions"]
    return str(referenced_id(app["LogConfiguration"]["Options"]["awslogs-group"]))


def logs_grants(template: Template, role_id: str) -> set[tuple[str, str]]:
    """Every (logs action, resource logical ID) a role's own policies allow."""
    return {
        (action, str(referenced_id(resource)))
        for statement in policy_statements(template)
        if statement.owner == role_id and statement.allows
        for action in statement.actions
        if action.startswith("logs:")
        for resource in statement.resources
    }


# ------------------------------------------------------------------- linters


@pytest.mark.parametrize("relative", ["template.yaml", "stacks/backend.yaml"])
def test_cfn_lint_finds_nothing_with_datadog_on(datadog_on_dir: Path, relative: str) -> None:
    # Given a template with Datadog on
    cfn_lint = require_tool("cfn-lint")

    # When cfn-lint checks it
    result = run_tool([cfn_lint, str(datadog_on_dir / relative)], cwd=datadog_on_dir)

    # Then it reports nothing
    assert result.returncode == 0, describe(result)


def test_sam_validate_with_lint_passes_with_datadog_on(datadog_on_dir: Path) -> None:
    # Given the root template with Datadog on, and no samconfig.toml beside it
    # When SAM transforms and lints it (the layers and Tracing go through the transform)
    result = sam_validate_lint(datadog_on_dir / "template.yaml")

    # Then it is valid
    assert result.returncode == 0, describe(result)


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
@pytest.mark.parametrize(
    "template_path", [ROOT_TEMPLATE, BACKEND_TEMPLATE], ids=["root", "backend"]
)
def test_checkov_reports_no_failed_check_with_the_branches_resolved(
    tmp_path: Path, template_path: Path, enabled: bool
) -> None:
    # Given a template as deployed with Datadog on or off (checkov skips Fn::If branches)
    rendered = tmp_path / f"{template_path.stem}.json"
    rendered.write_text(json.dumps(variant(template_path, enabled=enabled)), encoding="utf-8")

    # When checkov scans it
    report = checkov_report(rendered)

    # Then no check fails
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert report["summary"]["parsing_errors"] == 0
    assert failed == []


# ------------------------------------------------------------------ parameters


def test_datadog_is_off_by_default_and_on_exactly_when_the_secret_is_given(
    template: Template, backend: Template
) -> None:
    for document in (template, backend):
        parameter = document["Parameters"]["DatadogApiKeySecretArn"]
        assert parameter["Default"] == ""
        assert re.fullmatch(parameter["AllowedPattern"], "")
        assert re.fullmatch(parameter["AllowedPattern"], SECRET_ARN)
        assert not re.fullmatch(parameter["AllowedPattern"], "my-datadog-key")
        assert document["Conditions"]["DatadogEnabled"] == {
            "Fn::Not": [{"Fn::Equals": [{"Ref": "DatadogApiKeySecretArn"}, ""]}]
        }


def test_backend_gets_what_its_sidecars_need(template: Template) -> None:
    parameters = properties(template, "BackendStack")["Parameters"]

    for name in ("DatadogApiKeySecretArn", "DatadogSite", "DatadogAgentImage", "FluentBitImage"):
        assert parameters[name] == {"Ref": name}


def test_images_and_layers_are_pinned(template: Template) -> None:
    parameters = template["Parameters"]

    assert not str(parameters["DatadogAgentImage"]["Default"]).endswith((":latest", ":7"))
    assert re.fullmatch(
        parameters["FluentBitImage"]["AllowedPattern"], parameters["FluentBitImage"]["Default"]
    )
    assert not re.fullmatch(
        parameters["FluentBitImage"]["AllowedPattern"],
        "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable",
    )
    for name in ("DatadogExtensionLayerVersion", "DatadogPythonLayerVersion"):
        assert parameters[name]["Type"] == "Number"
        assert int(parameters[name]["Default"]) >= 1


def test_an_output_says_whether_datadog_is_on(template: Template) -> None:
    assert template["Outputs"]["DatadogEnabled"]["Value"] == {
        "Fn::If": ["DatadogEnabled", "true", "false"]
    }


# ----------------------------------------------------------------- task runner


def test_task_runner_with_datadog_on_has_both_layers_and_passes_x_ray_through() -> None:
    # Given the task runner as deployed with Datadog on
    function = function_properties(variant(ROOT_TEMPLATE, enabled=True), "TaskRunnerFunction")
    extension, python = (layer["Fn::Sub"] for layer in function["Layers"])

    # Then it runs the arm64 extension and the python3.13 arm64 layer at pinned versions,
    # the same handler, and X-Ray only passes the trace header through
    assert extension == (
        f"arn:${{AWS::Partition}}:lambda:${{AWS::Region}}:{LAYER_ACCOUNT}:layer:"
        "Datadog-Extension-ARM:${DatadogExtensionLayerVersion}"
    )
    assert python == (
        f"arn:${{AWS::Partition}}:lambda:${{AWS::Region}}:{LAYER_ACCOUNT}:layer:"
        "Datadog-Python313-ARM:${DatadogPythonLayerVersion}"
    )
    assert (function["Runtime"], function["Architectures"]) == ("python3.13", ["arm64"])
    assert function["Handler"] == HANDLER
    assert function["Tracing"] == "PassThrough"


def test_task_runner_with_datadog_on_gets_the_contracts_environment() -> None:
    variables = function_properties(variant(ROOT_TEMPLATE, enabled=True), "TaskRunnerFunction")[
        "Environment"
    ]["Variables"]

    assert variables["DD_TRACE_ENABLED"] == "true"
    assert variables["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert variables["DD_SERVICE"] == variables["POWERTOOLS_SERVICE_NAME"] == "herald-task-runner"
    assert variables["DD_ENV"] == {"Ref": "Environment"}
    assert variables["DD_VERSION"] == {"Ref": "ServiceVersion"}
    assert variables["DD_SITE"] == {"Ref": "DatadogSite"}
    assert variables["DD_API_KEY_SECRET_ARN"] == {"Ref": "DatadogApiKeySecretArn"}
    assert variables["DD_MERGE_XRAY_TRACES"] == "false"
    assert variables["DD_SERVERLESS_LOGS_ENABLED"] == "true"
    assert variables["DD_LOGS_INJECTION"] == "true"
    assert "DD_API_KEY" not in variables


def test_task_runner_with_datadog_off_has_no_layer_and_traces_with_x_ray() -> None:
    function = function_properties(variant(ROOT_TEMPLATE, enabled=False), "TaskRunnerFunction")
    variables = function["Environment"]["Variables"]

    assert "Layers" not in function
    assert function["Tracing"] == "Active"
    assert function["Handler"] == HANDLER
    assert variables["DD_TRACE_ENABLED"] == "false"
    assert variables["POWERTOOLS_TRACE_DISABLED"] == "false"


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_task_runner_may_read_exactly_the_datadog_secret_only_when_on(enabled: bool) -> None:
    # Given the task runner role's statements that touch Secrets Manager or KMS for Datadog
    statements = {
        s.sid: s
        for s in policy_statements(variant(ROOT_TEMPLATE, enabled=enabled))
        if s.owner == "TaskRunnerRole" and "Datadog" in s.sid
    }

    # Then there are none with Datadog off, and with it on: that one secret, and a key only
    # through Secrets Manager for that secret
    if not enabled:
        assert statements == {}
        return
    assert_reads_exactly_the_datadog_secret(statements)


def assert_reads_exactly_the_datadog_secret(statements: dict[str, Any]) -> None:
    assert set(statements) == {"ReadTheDatadogApiKey", "DecryptTheDatadogApiKey"}
    read, decrypt = statements["ReadTheDatadogApiKey"], statements["DecryptTheDatadogApiKey"]
    assert read.actions == ["secretsmanager:GetSecretValue"]
    assert read.resources == [{"Ref": "DatadogApiKeySecretArn"}]
    assert decrypt.actions == ["kms:Decrypt"]
    assert decrypt.statement["Condition"] == {
        "StringEquals": {
            "kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"},
            "kms:EncryptionContext:SecretARN": {"Ref": "DatadogApiKeySecretArn"},
        }
    }


# ------------------------------------------------------------------------- ECS


@pytest.mark.parametrize("task_id", sorted(APP_SERVICES))
def test_task_with_datadog_on_runs_the_agent_and_the_log_router(task_id: str) -> None:
    # Given the task as deployed with Datadog on
    backend = variant(BACKEND_TEMPLATE, enabled=True)
    service = APP_SERVICES[task_id]
    found = containers(backend, task_id)
    agent, router = found["datadog-agent"], found["log_router"]
    agent_env = environment(agent)

    # Then the agent runs APM for Fargate with the key from the secret, health-checked and
    # not essential; the log router is FireLens's Fluent Bit, essential
    assert set(found) == SIDECARS | {service}
    assert agent["Image"] == {"Ref": "DatadogAgentImage"}
    assert agent["Essential"] is False
    assert (agent_env["ECS_FARGATE"], agent_env["DD_APM_ENABLED"]) == ("true", "true")
    assert agent_env["DD_SITE"] == {"Ref": "DatadogSite"}
    assert agent["Secrets"] == [
        {"Name": "DD_API_KEY", "ValueFrom": {"Ref": "DatadogApiKeySecretArn"}}
    ]
    assert agent["HealthCheck"]["Command"] == ["CMD-SHELL", "agent health"]
    assert router["Image"] == {"Ref": "FluentBitImage"}
    assert router["Essential"] is True
    assert router["FirelensConfiguration"]["Type"] == "fluentbit"
    # And the sidecars' own logs still go to CloudWatch
    for name in SIDECARS:
        assert found[name]["LogConfiguration"]["LogDriver"] == "awslogs", name


@pytest.mark.parametrize("task_id", sorted(APP_SERVICES))
def test_app_with_datadog_on_logs_through_firelens_to_datadog(task_id: str) -> None:
    backend = variant(BACKEND_TEMPLATE, enabled=True)
    service = APP_SERVICES[task_id]
    app = containers(backend, task_id)[service]
    logging = app["LogConfiguration"]

    assert logging["LogDriver"] == "awsfirelens"
    assert logging["Options"]["Name"] == "datadog"
    assert logging["Options"]["Host"] == {"Fn::Sub": "http-intake.logs.${DatadogSite}"}
    assert logging["Options"]["TLS"] == "on"
    assert logging["Options"]["provider"] == "ecs"
    assert logging["Options"]["dd_service"] == f"herald-{service}"
    assert logging["Options"]["dd_source"] == "python"
    assert logging["Options"]["dd_tags"] == {"Fn::Sub": "env:${Environment}"}
    assert "apikey" not in logging["Options"]
    assert logging["SecretOptions"] == [
        {"Name": "apikey", "ValueFrom": {"Ref": "DatadogApiKeySecretArn"}}
    ]
    assert app["DependsOn"] == [{"ContainerName": "log_router", "Condition": "START"}]


@pytest.mark.parametrize("task_id", sorted(APP_SERVICES))
def test_app_with_datadog_on_gets_the_contracts_environment(task_id: str) -> None:
    backend = variant(BACKEND_TEMPLATE, enabled=True)
    service = APP_SERVICES[task_id]
    variables = environment(containers(backend, task_id)[service])

    assert variables["DD_TRACE_ENABLED"] == "true"
    assert variables["DD_SERVICE"] == variables["POWERTOOLS_SERVICE_NAME"] == f"herald-{service}"
    assert variables["DD_ENV"] == {"Ref": "Environment"}
    assert variables["DD_AGENT_HOST"] == "127.0.0.1"
    assert variables["DD_TRACE_AGENT_PORT"] == "8126"
    assert variables["DD_LOGS_INJECTION"] == "true"
    # The image's tag: the part after ":" of the repository path in ImageUri
    image_path = {"Fn::Select": [1, {"Fn::Split": [".amazonaws.com/", {"Ref": "ImageUri"}]}]}
    assert variables["DD_VERSION"] == {"Fn::Select": [1, {"Fn::Split": [":", image_path]}]}


@pytest.mark.parametrize("task_id", sorted(APP_SERVICES))
def test_task_with_datadog_off_is_as_before_plus_dd_trace_enabled_false(
    backend: Template, task_id: str
) -> None:
    # Given the task as deployed with Datadog off, and the template without any Datadog
    off = variant(BACKEND_TEMPLATE, enabled=False)
    service = APP_SERVICES[task_id]
    task = properties(off, task_id)
    [app] = task["ContainerDefinitions"]
    variables = environment(app)

    # Then one container, its CloudWatch logs, its own size, and of Datadog only
    # DD_TRACE_ENABLED=false
    assert app["Name"] == service
    assert app["LogConfiguration"]["LogDriver"] == "awslogs"
    assert "DependsOn" not in app
    assert [name for name in variables if name.startswith("DD_")] == ["DD_TRACE_ENABLED"]
    assert variables["DD_TRACE_ENABLED"] == "false"
    assert task["Volumes"] == [{"Name": "tmp"}]
    prefix = "Api" if service == "api" else "Worker"
    assert (task["Cpu"], task["Memory"]) == ({"Ref": f"{prefix}Cpu"}, {"Ref": f"{prefix}Memory"})


@pytest.mark.parametrize("task_id", sorted(APP_SERVICES))
def test_task_with_datadog_on_is_doubled_to_fit_the_sidecars(
    backend: Template, task_id: str
) -> None:
    # Given the task's size with Datadog on, for every CPU and memory value it accepts
    task = properties(variant(BACKEND_TEMPLATE, enabled=True), task_id)
    prefix = "Api" if task_id.startswith("Api") else "Worker"
    doubled = backend["Mappings"]["TaskSizeWithDatadog"]

    # Then both come from the doubling table, which doubles every accepted value
    assert task["Cpu"] == {
        "Fn::FindInMap": ["TaskSizeWithDatadog", {"Ref": f"{prefix}Cpu"}, "Doubled"]
    }
    assert task["Memory"] == {
        "Fn::FindInMap": ["TaskSizeWithDatadog", {"Ref": f"{prefix}Memory"}, "Doubled"]
    }
    for name in (f"{prefix}Cpu", f"{prefix}Memory"):
        for value in backend["Parameters"][name]["AllowedValues"]:
            assert int(doubled[str(value)]["Doubled"]) == 2 * int(value), (name, value)


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_every_container_keeps_a_read_only_root_filesystem(enabled: bool) -> None:
    backend = variant(BACKEND_TEMPLATE, enabled=enabled)

    for task_id in APP_SERVICES:
        for name, container in containers(backend, task_id).items():
            assert container["ReadonlyRootFilesystem"] is True, (task_id, name)
            assert container.get("Privileged", False) is False, (task_id, name)
            volumes = {volume["Name"] for volume in properties(backend, task_id)["Volumes"]}
            for mount in container.get("MountPoints", []):
                assert mount["SourceVolume"] in volumes, (task_id, name, mount)


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_no_environment_variable_holds_an_api_key(enabled: bool) -> None:
    # Given every environment variable of the task runner and of every container
    root = variant(ROOT_TEMPLATE, enabled=enabled)
    backend = variant(BACKEND_TEMPLATE, enabled=enabled)
    variables = dict(function_properties(root, "TaskRunnerFunction")["Environment"]["Variables"])
    for task_id in APP_SERVICES:
        for container in containers(backend, task_id).values():
            variables |= environment(container)

    # Then none is named like a key (but the secrets' ARNs) and none resolves one at deploy
    assert [
        n for n in variables if SECRET_LOOKING.search(n) and n not in SECRET_ARN_VARIABLES
    ] == []
    assert [n for n, v in variables.items() if "{{resolve:" in json.dumps(v)] == []


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_execution_role_may_read_exactly_the_datadog_secret_only_when_on(enabled: bool) -> None:
    statements = [
        s
        for s in policy_statements(variant(BACKEND_TEMPLATE, enabled=enabled))
        if "Datadog" in s.sid
    ]

    if not enabled:
        assert statements == []
        return
    # The execution roles of the api's and the worker's tasks (the migration runs no Datadog)
    owners = {"ApiTaskExecutionRole", "WorkerTaskExecutionRole"}
    assert {s.owner for s in statements} == owners
    for owner in owners:
        assert_reads_exactly_the_datadog_secret({s.sid: s for s in statements if s.owner == owner})


def test_the_api_and_the_worker_run_the_same_sidecars() -> None:
    # Given both tasks' sidecars with Datadog on, their log groups and the log router's
    # CloudWatch configuration (each task's own, checked below) set aside
    backend = variant(BACKEND_TEMPLATE, enabled=True)

    def sidecars(task_id: str) -> str:
        found = containers(backend, task_id)
        shapes = {name: dict(found[name]) for name in SIDECARS}
        shapes["log-router-init"]["Environment"] = [
            variable
            for variable in shapes["log-router-init"]["Environment"]
            if variable["Name"] != CLOUDWATCH_CONFIG_VARIABLE
        ]
        for shape in shapes.values():
            shape["LogConfiguration"] = {
                **shape["LogConfiguration"],
                "Options": {
                    k: v
                    for k, v in shape["LogConfiguration"]["Options"].items()
                    if k != "awslogs-group"
                },
            }
        return json.dumps(shapes, sort_keys=True)

    # Then they are the same two copies of one shape
    assert sidecars("ApiTaskDefinition") == sidecars("WorkerTaskDefinition")


def test_migration_task_has_no_datadog() -> None:
    backend = variant(BACKEND_TEMPLATE, enabled=True)
    [migrate] = properties(backend, "MigrationTaskDefinition")["ContainerDefinitions"]

    variables = environment(migrate)
    assert {name: variables[name] for name in variables if name.startswith("DD_")} == {
        "DD_TRACE_ENABLED": "false"
    }
    assert migrate["LogConfiguration"]["LogDriver"] == "awslogs"


@pytest.mark.parametrize("task_id", sorted(APP_SERVICES))
def test_app_with_datadog_on_stays_non_root_capability_free_and_secret_free(task_id: str) -> None:
    # Given the application container as deployed with Datadog on
    service = APP_SERVICES[task_id]
    app = containers(variant(BACKEND_TEMPLATE, enabled=True), task_id)[service]

    # Then it is the same hardened container as with Datadog off: same image and command,
    # non-root, no capability, only /tmp writable, and ECS injects no secret into it
    assert app["Image"] == {"Ref": "ImageUri"}
    assert app["Command"] == ["herald", service]
    assert app["User"] == "10001:10001"
    assert app["LinuxParameters"]["Capabilities"]["Drop"] == ["ALL"]
    assert app["MountPoints"] == [
        {"SourceVolume": "tmp", "ContainerPath": "/tmp", "ReadOnly": False}
    ]
    assert "Secrets" not in app
    assert app["Essential"] is True


# ------------------------------------------------- CloudWatch beside Datadog


@pytest.mark.parametrize("task_id", sorted(APP_SERVICES))
def test_log_router_with_datadog_on_includes_the_cloudwatch_config(task_id: str) -> None:
    # Given the log router as deployed with Datadog on
    found = containers(variant(BACKEND_TEMPLATE, enabled=True), task_id)
    router = found["log_router"]
    directory = str(PurePosixPath(CLOUDWATCH_CONFIG).parent)

    # Then FireLens includes the extra configuration file, which the router reads from the
    # volume its init container writes, read-only
    assert router["FirelensConfiguration"]["Options"] == {
        "enable-ecs-log-metadata": "true",
        "config-file-type": "file",
        "config-file-value": CLOUDWATCH_CONFIG,
    }
    [config_mount] = [m for m in router["MountPoints"] if m["ContainerPath"] == directory]
    assert config_mount == {
        "SourceVolume": "log-router-config",
        "ContainerPath": directory,
        "ReadOnly": True,
    }
    # And no other container than these two mounts that volume
    holders = {
        name
        for name, container in found.items()
        for mount in container.get("MountPoints", [])
        if mount["SourceVolume"] == "log-router-config"
    }
    assert holders == {"log-router-init", "log_router"}


@pytest.mark.parametrize("task_id", sorted(APP_SERVICES))
def test_cloudwatch_config_sends_the_app_records_to_its_own_log_group_as_emf(task_id: str) -> None:
    # Given the CloudWatch configuration of a task's log router with Datadog on, parsed
    service = APP_SERVICES[task_id]
    init = containers(variant(BACKEND_TEMPLATE, enabled=True), task_id)["log-router-init"]
    sections = fluent_bit_sections(cloudwatch_config(init))

    # Then it is one CloudWatch Logs output
    assert [name for name, _ in sections] == ["OUTPUT"]
    [(_, output)] = sections
    assert output["name"] == "cloudwatch_logs"
    # for exactly the app container's records (FireLens tags them <container>-firelens-<task>)
    task = "0123456789abcdef0123456789abcdef"
    assert fnmatchcase(f"{service}-firelens-{task}", output["match"])
    for other in ({"api", "worker"} - {service}) | SIDECARS:
        assert not fnmatchcase(f"{other}-firelens-{task}", output["match"]), other
    # into the log group the container uses with Datadog off, in the stack's region
    assert output["log_group_name"] == "${" + log_group_with_datadog_off(task_id) + "}"
    assert output["region"] == "${AWS::Region}"
    assert output["log_stream_prefix"] == f"{service}/"
    # each line as the app wrote it, which CloudWatch reads as EMF (the metrics)
    assert output["log_key"] == "log"
    assert output["log_format"] == "json/emf"
    # into the stack's own (encrypted, retained) group, never one Fluent Bit would create
    assert output["auto_create_group"] == "false"
    assert set(output) == {
        "name",
        "match",
        "region",
        "log_group_name",
        "log_stream_prefix",
        "log_key",
        "log_format",
        "auto_create_group",
    }


def test_the_config_parser_reads_sections_and_refuses_what_fluent_bit_would() -> None:
    assert fluent_bit_sections("# a comment\n[OUTPUT]\n    Name  x\n    Match *\n") == [
        ("OUTPUT", {"name": "x", "match": "*"})
    ]
    for broken in ("    Name x\n", "[OUTPUT]\nName x\n", "[OUTPUT]\n    Name x\n    name y\n"):
        with pytest.raises(AssertionError):
            fluent_bit_sections(broken)


@pytest.mark.parametrize("task_id", sorted(APP_SERVICES))
def test_log_router_init_writes_exactly_that_file_and_exits(task_id: str) -> None:
    # Given the log router's init container with Datadog on
    init = containers(variant(BACKEND_TEMPLATE, enabled=True), task_id)["log-router-init"]
    directory = str(PurePosixPath(CLOUDWATCH_CONFIG).parent)

    # Then it runs the log router's image, writes the variable's text to the included file
    # and nothing else, and is not essential: it exits once that is done
    assert init["Image"] == {"Ref": "FluentBitImage"}
    shell, flag, script = init["Command"]
    assert (shell, flag) == ("/bin/sh", "-c")
    assert shlex.split(script) == [
        "printf",
        "%s",
        f"${CLOUDWATCH_CONFIG_VARIABLE}",
        ">",
        CLOUDWATCH_CONFIG,
    ]
    assert init["Essential"] is False
    assert init["MountPoints"] == [
        {"SourceVolume": "log-router-config", "ContainerPath": directory, "ReadOnly": False}
    ]
    # And the text is configuration, not a secret: only that variable, and no secret
    assert set(environment(init)) == {CLOUDWATCH_CONFIG_VARIABLE}
    assert "Secrets" not in init


@pytest.mark.parametrize("task_id", sorted(APP_SERVICES))
def test_start_order_is_config_then_log_router_then_app(task_id: str) -> None:
    # Given the task's containers with Datadog on
    found = containers(variant(BACKEND_TEMPLATE, enabled=True), task_id)
    service = APP_SERVICES[task_id]

    # Then the init container waits for nothing, the log router starts only after it
    # succeeded (so the file is there), and the app only once the log router started
    assert "DependsOn" not in found["log-router-init"]
    assert found["log_router"]["DependsOn"] == [
        {"ContainerName": "log-router-init", "Condition": "SUCCESS"}
    ]
    assert found[service]["DependsOn"] == [{"ContainerName": "log_router", "Condition": "START"}]


@pytest.mark.parametrize("task_id", sorted(APP_SERVICES))
def test_task_role_with_datadog_on_may_write_exactly_its_log_group(task_id: str) -> None:
    # Given the task role, with Datadog on and off (Fluent Bit uses the task role)
    role_id = TASK_ROLES[task_id]
    group = log_group_with_datadog_off(task_id)
    on = variant(BACKEND_TEMPLATE, enabled=True)

    # Then with Datadog on it may create streams in and write to exactly the app's log
    # group, by the group's ARN (which covers its streams), and with it off, no log at all
    assert logs_grants(on, role_id) == {
        ("logs:CreateLogStream", group),
        ("logs:PutLogEvents", group),
    }
    [statement] = [
        s for s in policy_statements(on) if s.owner == role_id and s.sid.startswith("LogRouter")
    ]
    assert statement.resources == [{"Fn::GetAtt": [group, "Arn"]}]
    assert "Condition" not in statement.statement
    assert logs_grants(variant(BACKEND_TEMPLATE, enabled=False), role_id) == set()


def test_with_datadog_off_nothing_of_the_cloudwatch_copy_exists() -> None:
    # Given the backend as deployed with Datadog off
    off = variant(BACKEND_TEMPLATE, enabled=False)
    rendered = json.dumps(off)

    # Then there is no log router, no extra configuration, no volume for it, no grant for it
    assert "log-router" not in rendered
    assert CLOUDWATCH_CONFIG_VARIABLE not in rendered
    assert "cloudwatch_logs" not in rendered
    assert "FirelensConfiguration" not in rendered
    for role_id in TASK_ROLES.values():
        assert not [
            s for s in policy_statements(off) if s.owner == role_id and "LogRouter" in s.sid
        ]


def test_worker_with_datadog_on_does_not_let_botocore_inject_sqs_context() -> None:
    # Given both apps' environments with Datadog on and off
    on = variant(BACKEND_TEMPLATE, enabled=True)
    off = variant(BACKEND_TEMPLATE, enabled=False)

    # Then the worker (the one that relays to SQS) has ddtrace's botocore injection off,
    # a second guard beside ecs_service.cli's; the api and the "off" variant do not need it
    assert (
        environment(containers(on, "WorkerTaskDefinition")["worker"])[
            "DD_BOTOCORE_DISTRIBUTED_TRACING"
        ]
        == "false"
    )
    assert "DD_BOTOCORE_DISTRIBUTED_TRACING" not in environment(
        containers(on, "ApiTaskDefinition")["api"]
    )
    assert "DD_BOTOCORE_DISTRIBUTED_TRACING" not in environment(
        containers(off, "WorkerTaskDefinition")["worker"]
    )
