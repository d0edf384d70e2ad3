"""Lambda SnapStart on the task runner (TaskRunnerSnapStart, issue 19): off by default, and
then the task queue invokes $LATEST as it always did and nothing is published; on, a
published version is snapshotted and the queue invokes it through the alias live, and a
new commit or a change of a parameter the function is configured from publishes a new one.
Datadog and SnapStart are refused together. After a restore the handler gives each
execution environment its own jitter.

The mappings are read as SAM's transform leaves the template (samtranslator, the library
cfn-lint and `sam validate` use): the SQS event's own mapping exists only there. The "on"
variant is the repository's templates with the parameter's default set to true, rendered
into a temporary directory for cfn-lint, `sam validate --lint` and checkov (the "off"
variant is the repository's own, which test_template_linters checks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
from cfnlint.schema.manager import PROVIDER_SCHEMA_MANAGER  # type: ignore[import-untyped]
from samtranslator.translator.transform import transform  # type: ignore[import-untyped]

from tests.conftest import REPO_ROOT, require_tool
from tests.infra.conftest import (
    ROOT_TEMPLATE,
    SAM_ENV,
    STACKS_DIR,
    Template,
    checkov_report,
    describe,
    function_properties,
    load_template,
    resolve_datadog,
    run_tool,
    sam_validate_lint,
)

if TYPE_CHECKING:
    from pathlib import Path

FUNCTION = "TaskRunnerFunction"
PARAMETER = "TaskRunnerSnapStart"
CONDITION = "TaskRunnerSnapStartOn"
ALIAS = "live"
# The parameter as template.yaml declares it; the "on" variant changes its default.
DECLARED = f'  {PARAMETER}:\n    Type: String\n    Default: "false"\n'
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:herald/datadog-api-key-AbCdEf"
# What the template needs from outside to be transformed, and where `sam package` would
# have put the artifact and the nested templates.
REQUIRED = {
    "SenderEmail": "herald@example.com",
    "BackendImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/herald:1.0.0",
    "CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/abc-123",
    "ApiDomainName": "api.example.com",
}
ARTIFACT = "s3://herald-artifacts/task-runner-0f1e2d.zip"


class NoManagedPolicies:
    """samtranslator's managed policy loader; the template names no managed policy."""

    def load(self) -> dict[str, str]:
        return {}


def transformed(parameters: dict[str, str]) -> Template:
    """template.yaml after SAM's transform with these parameter values, as CloudFormation
    runs it after `sam package` (the artifact and nested templates in S3)."""
    document = load_template(ROOT_TEMPLATE)
    for resource_id, resource in document["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = ARTIFACT
        if resource["Type"] == "AWS::Serverless::Application":
            resource["Properties"]["Location"] = f"https://s3.amazonaws.com/b/{resource_id}.yaml"
    os.environ.setdefault("AWS_DEFAULT_REGION", SAM_ENV["AWS_DEFAULT_REGION"])
    result: Template = transform(document, {**REQUIRED, **parameters}, NoManagedPolicies())
    return result


def of_type(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}


def evaluate(value: Any, parameters: dict[str, str]) -> Any:
    """A rule's or condition's expression with these parameter values (Ref, Equals, Not)."""
    if isinstance(value, dict) and len(value) == 1:
        [(function, argument)] = value.items()
        if function == "Ref":
            return parameters[argument]
        if function == "Fn::Equals":
            left, right = (evaluate(item, parameters) for item in argument)
            return left == right
        if function == "Fn::Not":
            return not evaluate(argument[0], parameters)
    return value


def deployed_with(template: Template, snapstart: str) -> Any:
    """The function's SnapStart setting with its condition decided by the parameter."""
    condition = template["Conditions"][CONDITION]
    chosen = evaluate(condition, {PARAMETER: snapstart})
    setting = function_properties(template, FUNCTION)["SnapStart"]["ApplyOn"]
    [(name, (when, on, off))] = setting.items()
    assert (name, when) == ("Fn::If", CONDITION)
    return on if chosen else off


def resolve_snapstart(value: Any, *, enabled: bool) -> Any:
    """``value`` with every ``Fn::If [TaskRunnerSnapStartOn, …]`` replaced by its branch."""
    if isinstance(value, dict):
        if list(value) == ["Fn::If"] and value["Fn::If"][0] == CONDITION:
            return resolve_snapstart(value["Fn::If"][1 if enabled else 2], enabled=enabled)
        return {k: resolve_snapstart(v, enabled=enabled) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_snapstart(item, enabled=enabled) for item in value]
    return value


@pytest.fixture(scope="module")
def snapstart_on_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """template.yaml and stacks/ with TaskRunnerSnapStart's default true."""
    directory = tmp_path_factory.mktemp("snapstart-on")
    (directory / "stacks").mkdir()
    text = ROOT_TEMPLATE.read_text(encoding="utf-8")
    assert text.count(DECLARED) == 1
    (directory / "template.yaml").write_text(
        text.replace(DECLARED, DECLARED.replace('"false"', '"true"')), encoding="utf-8"
    )
    for source in sorted(STACKS_DIR.glob("*.yaml")):
        (directory / "stacks" / source.name).write_text(source.read_text(encoding="utf-8"))
    return directory


# ------------------------------------------------------------------- linters


def test_cfn_lint_finds_nothing_with_snapstart_on(snapstart_on_dir: Path) -> None:
    # Given the root template with SnapStart on
    cfn_lint = require_tool("cfn-lint")

    # When cfn-lint checks it
    result = run_tool([cfn_lint, str(snapstart_on_dir / "template.yaml")], cwd=snapstart_on_dir)

    # Then it reports nothing
    assert result.returncode == 0, describe(result)


def test_sam_validate_with_lint_passes_with_snapstart_on(snapstart_on_dir: Path) -> None:
    # Given the root template with SnapStart on, and no samconfig.toml beside it
    # When SAM transforms and lints it (the alias and version come from the transform)
    result = sam_validate_lint(snapstart_on_dir / "template.yaml")

    # Then it is valid
    assert result.returncode == 0, describe(result)


def test_checkov_reports_no_failed_check_with_snapstart_on(tmp_path: Path) -> None:
    # Given the root template as deployed with SnapStart on and Datadog off (checkov skips
    # Fn::If branches, so both are resolved)
    on = resolve_snapstart(
        resolve_datadog(load_template(ROOT_TEMPLATE), enabled=False), enabled=True
    )
    rendered = tmp_path / "template.json"
    rendered.write_text(json.dumps(on), encoding="utf-8")

    # When checkov scans it
    report = checkov_report(rendered)

    # Then no check fails
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert report["summary"]["parsing_errors"] == 0
    assert failed == []


# ------------------------------------------------------------------ parameter


def test_snapstart_is_off_by_default_and_on_only_with_true(template: Template) -> None:
    # Given the parameter
    parameter = template["Parameters"][PARAMETER]

    # Then it defaults to false, and only true snapshots published versions
    assert parameter["Default"] == "false"
    assert parameter["AllowedValues"] == ["true", "false"]
    assert deployed_with(template, "false") == "None"
    assert deployed_with(template, "true") == "PublishedVersions"


def test_the_parameter_states_its_cost_and_caveats(template: Template) -> None:
    description = template["Parameters"][PARAMETER]["Description"]
    for said in (
        "USD a GB-second",
        "USD a GB restored",
        "docs/cost.md",
        "Datadog",
        "ServiceVersion",
    ):
        assert said in description


@pytest.mark.parametrize(
    ("snapstart", "secret", "accepted"),
    [("true", SECRET_ARN, False), ("true", "", True), ("false", SECRET_ARN, True)],
    ids=["snapstart-with-datadog", "snapstart-alone", "datadog-alone"],
)
def test_the_template_refuses_snapstart_with_datadog_on(
    template: Template, snapstart: str, secret: str, accepted: bool
) -> None:
    # Given the stack's rules and a choice of both parameters
    values = {PARAMETER: snapstart, "DatadogApiKeySecretArn": secret}

    # When CloudFormation checks every rule whose condition holds
    refused = [
        name
        for name, rule in template["Rules"].items()
        if PARAMETER in json.dumps(rule)
        and evaluate(rule.get("RuleCondition", True), values)
        and not all(evaluate(a["Assert"], values) for a in rule["Assertions"])
    ]

    # Then only SnapStart with Datadog is refused
    assert (refused == []) == accepted


def test_nothing_snapstart_cannot_run_with_is_configured(template: Template) -> None:
    # Given the task runner as deployed (Globals merged)
    function = function_properties(template, FUNCTION)

    # Then it has what SnapStart supports: Python 3.12+, no provisioned concurrency, no EFS,
    # ephemeral storage of at most 512 MB
    runtime = function["Runtime"]
    assert runtime.startswith("python3.") and int(runtime.split(".")[1]) >= 12
    assert "ProvisionedConcurrencyConfig" not in function
    assert "FileSystemConfigs" not in function
    assert function.get("EphemeralStorage", {"Size": 512})["Size"] <= 512


# ----------------------------------------------------- alias, version, mapping


def consuming(deployed: Template, snapstart: str) -> list[Any]:
    """What each enabled event source mapping that exists with this parameter invokes."""
    values = {PARAMETER: snapstart}
    exists = {CONDITION: evaluate(deployed["Conditions"][CONDITION], values)}
    invoked = []
    for mapping in of_type(deployed, "AWS::Lambda::EventSourceMapping").values():
        if not exists.get(mapping.get("Condition", ""), True):
            continue
        enabled = mapping["Properties"].get("Enabled", True)
        if isinstance(enabled, dict):
            when, on, off = enabled["Fn::If"]
            enabled = on if exists[when] else off
        if enabled:
            invoked.append(mapping["Properties"]["FunctionName"])
    return invoked


@pytest.mark.parametrize(
    ("snapstart", "invoked"),
    [("false", {"Ref": FUNCTION}), ("true", {"Ref": "TaskRunnerLiveAlias"})],
    ids=["off-latest", "on-alias"],
)
def test_the_task_queue_invokes_latest_without_snapstart_and_the_alias_with_it(
    snapstart: str, invoked: dict[str, str]
) -> None:
    # Given the template as SAM's transform leaves it
    deployed = transformed({PARAMETER: snapstart})

    # When the event source mappings that exist and are enabled are read
    # Then exactly one consumes the task queue: $LATEST (as before this parameter existed)
    # without SnapStart, the alias live with it
    assert consuming(deployed, snapstart) == [invoked]


def test_without_snapstart_no_version_alias_or_second_mapping_exists(template: Template) -> None:
    # Given the resources SnapStart adds
    added = ["TaskRunnerSnapStartVersion", "TaskRunnerLiveAlias", "TaskRunnerSnapStartTaskQueue"]

    # Then each exists only with SnapStart on, and SAM publishes nothing of its own
    for resource_id in added:
        assert template["Resources"][resource_id]["Condition"] == CONDITION
    assert "AutoPublishAlias" not in function_properties(template, FUNCTION)


def test_the_snapstart_mapping_has_the_sqs_events_settings() -> None:
    # Given SAM's mapping of the SQS event and the one on the alias
    deployed = transformed({PARAMETER: "true"})
    mappings = of_type(deployed, "AWS::Lambda::EventSourceMapping")
    sam_event = dict(mappings[f"{FUNCTION}TaskQueue"]["Properties"])
    on_alias = dict(mappings["TaskRunnerSnapStartTaskQueue"]["Properties"])

    # When what each invokes and whether it is enabled are set aside
    for properties_ in (sam_event, on_alias):
        properties_.pop("FunctionName")
        properties_.pop("Enabled", None)

    # Then they read the same queue with the same batch, window, responses and concurrency
    assert on_alias == sam_event


def test_the_alias_invokes_the_published_version(template: Template) -> None:
    alias = template["Resources"]["TaskRunnerLiveAlias"]["Properties"]
    version = template["Resources"]["TaskRunnerSnapStartVersion"]["Properties"]
    assert alias["Name"] == ALIAS
    assert alias["FunctionVersion"] == {"Fn::GetAtt": ["TaskRunnerSnapStartVersion", "Version"]}
    assert alias["FunctionName"] == version["FunctionName"] == {"Ref": FUNCTION}


def test_a_new_commit_or_configuring_parameter_publishes_a_new_version(template: Template) -> None:
    # Given the version: CloudFormation replaces (publishes anew) a version whose
    # description changes, and deletes the one replaced
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", "AWS::Lambda::Version")
    version = template["Resources"]["TaskRunnerSnapStartVersion"]
    assert "/properties/Description" in schema.schema["createOnlyProperties"]

    # When its description is read
    description = version["Properties"]["Description"]["Fn::Sub"]

    # Then it names the commit and every parameter the function's configuration follows,
    # and the replaced version (and its billed snapshot) is not kept
    for parameter in ("ServiceVersion", "LogLevel", "TaskRunnerMemorySize", "SenderEmail"):
        assert "${" + parameter + "}" in description
    assert "Retain" not in (version.get("DeletionPolicy"), version.get("UpdateReplacePolicy"))


# -------------------------------------------------------------- the handler

# Lambda's runtime library, as its documented API (register_after_restore), recording the
# hooks; the test runs them as Lambda does after a restore.
FAKE_RUNTIME_HOOKS = """
AFTER_RESTORE = []

def register_after_restore(func, *args, **kwargs):
    AFTER_RESTORE.append((func, args, kwargs))
    return func
"""

# Initialises the handler once (the snapshot), then forks two processes from it (two
# execution environments resumed from one snapshot) and prints the first jitter each draws.
RESUME_TWO_ENVIRONMENTS = """
import json, os, random, sys
import handlers.task_runner as handler

def resumed(run_hooks):
    read, write = os.pipe()
    if os.fork() == 0:
        if run_hooks:
            import snapshot_restore_py
            for func, args, kwargs in snapshot_restore_py.AFTER_RESTORE:
                func(*args, **kwargs)
        draws = [handler.runner._rng.random(), random.random()]
        os.write(write, json.dumps(draws).encode())
        os._exit(0)
    os.wait()
    return json.loads(os.read(read, 4096))

run_hooks = sys.argv[1] == "hooks"
print(json.dumps({
    "imported": "snapshot_restore_py" in sys.modules,
    "environments": [resumed(run_hooks), resumed(run_hooks)],
}))
"""


def run_handler(tmp_path: Path, *, initialization: str | None, hooks: bool) -> dict[str, Any]:
    """Import the handler in a fresh interpreter as Lambda would, with the runtime's hook
    library on the path; report whether it was imported and each environment's draws."""
    (tmp_path / "snapshot_restore_py.py").write_text(textwrap.dedent(FAKE_RUNTIME_HOOKS))
    environment = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(tmp_path)]),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "RESULT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/herald-results",
        "TASK_DLQ_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/herald-tasks-dlq",
        "IDEMPOTENCY_TABLE": "herald-idempotency",
        "SENDER_EMAIL": "herald@example.com",
        "DD_TRACE_ENABLED": "false",
        "POWERTOOLS_METRICS_NAMESPACE": "Herald",
        "POWERTOOLS_SERVICE_NAME": "herald-task-runner",
    }
    if initialization is not None:
        environment["AWS_LAMBDA_INITIALIZATION_TYPE"] = initialization
    result = subprocess.run(
        [sys.executable, "-c", RESUME_TWO_ENVIRONMENTS, "hooks" if hooks else "none"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.skipif(not hasattr(os, "fork"), reason="resuming two environments forks")
def test_environments_resumed_from_one_snapshot_draw_their_own_jitter(tmp_path: Path) -> None:
    # Given the handler initialised under SnapStart, and two environments resumed from it
    # When each runs the hooks Lambda runs after a restore, then draws its first jitter
    restored = run_handler(tmp_path, initialization="snap-start", hooks=True)
    # (and, for contrast, two resumed without the hooks)
    unrestored = run_handler(tmp_path, initialization="snap-start", hooks=False)

    # Then the hook was registered, and the restored environments draw differently
    assert restored["imported"] is True
    first, second = restored["environments"]
    assert first[0] != second[0] and first[1] != second[1]
    # (without them the runner's jitter repeats; the global ``random`` cannot show it here:
    # Python reseeds it in a forked child, which a restored snapshot is not)
    same_first, same_second = unrestored["environments"]
    assert same_first[0] == same_second[0]


def test_without_snapstart_the_runtime_hooks_are_never_imported(tmp_path: Path) -> None:
    # Given the handler initialised on demand (no SnapStart), as the bench measures it
    # When it is imported
    report = run_handler(tmp_path, initialization="on-demand", hooks=False)

    # Then the runtime hook library was not imported: the cold start pays nothing for it
    assert report["imported"] is False
