"""The root template keeps the promises DESIGN.md makes about queues, encryption and access."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from shared.settings import ObservabilitySettings, TaskRunnerSettings
from tests.conftest import REPO_ROOT
from tests.infra.conftest import (
    NESTED_STACKS,
    ROOT_PARTS,
    Template,
    as_list,
    function_properties,
    load_template,
    policy_statements,
    properties,
    referenced_id,
    resources_of_type,
    worst_case_number,
)

FOURTEEN_DAYS = 14 * 24 * 3600
MAX_RECEIVE_COUNT = 5

# The only actions an Allow statement may grant on Resource "*", and why.
STAR_RESOURCE_ALLOWLIST = {
    "xray:PutTraceSegments": "X-Ray has no resource-level permissions",
    "xray:PutTelemetryRecords": "X-Ray has no resource-level permissions",
}
# Statements exempt from the wildcard-action rule, by (resource, Sid), and why.
WILDCARD_ACTION_ALLOWLIST = {
    ("PipelineKey", "EnableIamPolicies"): (
        "the key policy's standard delegation to the account: it lets IAM policies grant "
        "use of the key, and grants nothing by itself"
    ),
    ("SiteKey", "EnableIamPolicies"): "the same delegation, in the web app's key",
}


def sqs_event_sources(template: Template) -> list[tuple[str, dict[str, Any]]]:
    """(function logical ID, SQS event properties) for every SQS-triggered function."""
    return [
        (function_id, event["Properties"])
        for function_id in resources_of_type(template, "AWS::Serverless::Function")
        for event in properties(template, function_id).get("Events", {}).values()
        if event.get("Type") == "SQS"
    ]


def dead_letter_queue_ids(template: Template) -> set[str]:
    """Queues that some queue's redrive policy names as its DLQ."""
    return {
        str(referenced_id(redrive["deadLetterTargetArn"]))
        for queue_id in resources_of_type(template, "AWS::SQS::Queue")
        if (redrive := properties(template, queue_id).get("RedrivePolicy"))
    }


def is_template_key(template: Template, value: Any) -> bool:
    """True when value is a !Ref / !GetAtt of a KMS key declared in this template."""
    return referenced_id(value) in resources_of_type(template, "AWS::KMS::Key")


# ------------------------------------------------------------------------- queues


def test_task_runner_queue_visibility_outlasts_six_timeouts_plus_batching_window(
    template: Template,
) -> None:
    # Given every SQS-triggered function and the queue it consumes
    sources = sqs_event_sources(template)
    assert sources, "the task runner must consume a queue"

    for function_id, event in sources:
        queue = properties(template, str(referenced_id(event["Queue"])))
        timeout = int(function_properties(template, function_id)["Timeout"])
        window = worst_case_number(template, event.get("MaximumBatchingWindowInSeconds", 0))

        # Then the queue hides a message longer than six timeouts plus the longest window
        # (Lambda's advice), so no message reappears while a batch still holds it
        assert int(queue["VisibilityTimeout"]) >= 6 * timeout + window, function_id


def test_every_source_queue_redrives_to_its_dlq_after_five_receives(template: Template) -> None:
    # Given the queues that are not themselves dead-letter queues
    dlqs = dead_letter_queue_ids(template)
    sources = set(resources_of_type(template, "AWS::SQS::Queue")) - dlqs
    assert sources

    for queue_id in sources:
        redrive = properties(template, queue_id).get("RedrivePolicy")

        # Then each moves a message to a DLQ of this template after the fifth receive
        assert redrive is not None, f"{queue_id} has no redrive policy"
        assert int(redrive["maxReceiveCount"]) == MAX_RECEIVE_COUNT, queue_id
        assert referenced_id(redrive["deadLetterTargetArn"]) in dlqs, queue_id


def test_dead_letter_queues_redrive_nowhere_and_keep_messages_fourteen_days(
    template: Template,
) -> None:
    # Given the dead-letter queues
    dlqs = dead_letter_queue_ids(template)
    assert dlqs == {"TaskDeadLetterQueue", "ResultDeadLetterQueue", "FeedbackDeadLetterQueue"}

    for queue_id in dlqs:
        queue = properties(template, queue_id)

        # Then each keeps a message as long as SQS allows, and sends it nowhere else
        assert int(queue["MessageRetentionPeriod"]) == FOURTEEN_DAYS, queue_id
        assert "RedrivePolicy" not in queue, queue_id


def test_every_queue_refuses_requests_without_tls(template: Template) -> None:
    # Given the queue policies' deny statements on insecure transport
    denied_queues = {
        str(referenced_id(resource))
        for statement in policy_statements(template)
        if statement.owner_type == "AWS::SQS::QueuePolicy"
        and not statement.allows
        and statement.statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
        == "false"
        for resource in statement.resources
    }

    # Then they cover every queue
    assert denied_queues == set(resources_of_type(template, "AWS::SQS::Queue"))


# --------------------------------------------------------------------- encryption


def test_every_queue_is_encrypted_with_the_templates_kms_key(template: Template) -> None:
    # Given every queue; then each encrypts with the customer-managed key declared here
    for queue_id in resources_of_type(template, "AWS::SQS::Queue"):
        assert is_template_key(template, properties(template, queue_id).get("KmsMasterKeyId")), (
            queue_id
        )


def test_every_table_is_encrypted_with_the_templates_kms_key(template: Template) -> None:
    # Given every table; then each encrypts with the customer-managed key declared here
    for table_id in resources_of_type(template, "AWS::DynamoDB::Table"):
        sse = properties(template, table_id).get("SSESpecification", {})
        assert sse.get("SSEEnabled") is True, table_id
        assert sse.get("SSEType") == "KMS", table_id
        assert is_template_key(template, sse.get("KMSMasterKeyId")), table_id


def test_every_log_group_is_encrypted_with_the_templates_kms_key(template: Template) -> None:
    # Given every log group; then each encrypts with the customer-managed key declared here
    log_groups = resources_of_type(template, "AWS::Logs::LogGroup")
    assert log_groups
    for log_group_id in log_groups:
        assert is_template_key(template, properties(template, log_group_id).get("KmsKeyId")), (
            log_group_id
        )


def test_every_topic_is_encrypted_with_the_templates_kms_key(template: Template) -> None:
    # Given every topic; then each encrypts with the customer-managed key declared here
    topics = resources_of_type(template, "AWS::SNS::Topic")
    assert topics
    for topic_id in topics:
        assert is_template_key(template, properties(template, topic_id).get("KmsMasterKeyId")), (
            topic_id
        )


def test_task_runner_environment_is_encrypted_with_the_templates_kms_key(
    template: Template,
) -> None:
    assert is_template_key(
        template, function_properties(template, "TaskRunnerFunction")["KmsKeyArn"]
    )


def test_key_lets_cloudwatch_logs_encrypt_exactly_the_task_runners_log_group(
    template: Template,
) -> None:
    # Given the key policy's CloudWatch Logs statement and the log group's name
    [logs] = [
        statement
        for statement in policy_statements(template)
        if statement.owner == "PipelineKey"
        and statement.statement["Principal"].get("Service")
        == {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}
    ]
    log_group_name = properties(template, "TaskRunnerLogGroup")["LogGroupName"]["Fn::Sub"]

    # Then its encryption-context condition names that log group's ARN and nothing wider,
    # else CloudFormation fails to create the encrypted log group
    arn = logs.statement["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"]
    assert arn == {
        "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
        + log_group_name
    }


def test_every_kms_key_rotates(template: Template) -> None:
    # Given every KMS key; then AWS rotates its key material yearly
    keys = resources_of_type(template, "AWS::KMS::Key")
    assert keys
    for key_id in keys:
        assert properties(template, key_id).get("EnableKeyRotation") is True, key_id


def test_idempotency_table_recovers_to_a_point_in_time(template: Template) -> None:
    table = properties(template, "IdempotencyTable")
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


# ------------------------------------------------------------------------ the runner


def test_task_runner_reports_partial_batch_failures_and_caps_its_concurrency(
    template: Template,
) -> None:
    # Given the task runner's SQS event source
    [(function_id, event)] = sqs_event_sources(template)
    assert function_id == "TaskRunnerFunction"

    # Then a failed record is retried alone, and the SES send rate is bounded by a parameter
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "TaskRunnerMaxConcurrency"}
    assert "ReservedConcurrentExecutions" not in function_properties(template, function_id)


def test_task_runner_environment_sets_every_variable_its_settings_read(
    template: Template,
) -> None:
    # Given the environment variables the code reads at cold start
    read_by_code = {
        str(field.validation_alias)
        for model in (TaskRunnerSettings, ObservabilitySettings)
        for field in model.model_fields.values()
    }

    # When the template's environment for the task runner is assembled (Globals included)
    variables = function_properties(template, "TaskRunnerFunction")["Environment"]["Variables"]

    # Then every one is set, none left to a default
    assert read_by_code <= set(variables)


def test_task_runner_environment_points_at_its_own_queues_table_and_sender(
    template: Template,
) -> None:
    variables = function_properties(template, "TaskRunnerFunction")["Environment"]["Variables"]

    assert variables["RESULT_QUEUE_URL"] == {"Ref": "ResultQueue"}
    assert variables["TASK_DLQ_URL"] == {"Ref": "TaskDeadLetterQueue"}
    assert variables["TASK_QUEUE_URL"] == {"Ref": "TaskQueue"}
    assert variables["IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    assert variables["SENDER_EMAIL"] == {"Ref": "SenderEmail"}
    assert variables["SES_CONFIGURATION_SET"] == {"Ref": "SesConfigurationSet"}
    assert variables["ENVIRONMENT"] == {"Ref": "Environment"}
    assert variables["LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert variables["POWERTOOLS_SERVICE_NAME"] == "herald-task-runner"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Herald"


def test_task_runner_may_queue_a_task_again_only_on_its_own_queue(template: Template) -> None:
    # Given the role's statement for re-queueing throttled tasks
    (requeue,) = [
        statement
        for statement in policy_statements(template)
        if statement.owner == "TaskRunnerRole" and statement.sid == "RequeueThrottledTasks"
    ]

    # Then it may send to the task queue it consumes, and nothing else
    assert requeue.actions == ["sqs:SendMessage"]
    assert requeue.resources == [{"Fn::GetAtt": ["TaskQueue", "Arn"]}]


def test_idempotency_records_outlive_a_task_redriven_from_the_dlq(template: Template) -> None:
    # Given the idempotency TTL and the task DLQ's retention
    variables = function_properties(template, "TaskRunnerFunction")["Environment"]["Variables"]
    retention = properties(template, "TaskDeadLetterQueue")["MessageRetentionPeriod"]

    # Then a task redriven on its last day in the DLQ still finds its record: no second email
    assert int(variables["IDEMPOTENCY_TTL_SECONDS"]) == int(retention)


def test_task_runner_logs_go_to_its_own_encrypted_log_group(template: Template) -> None:
    logging_config = function_properties(template, "TaskRunnerFunction")["LoggingConfig"]

    assert logging_config["LogGroup"] == {"Ref": "TaskRunnerLogGroup"}
    assert logging_config["LogFormat"] == "JSON"


# --------------------------------------------------------------------------- IAM


def test_no_allow_statement_grants_a_wildcard_action(template: Template) -> None:
    # Given every Allow statement of every policy (identity, key and resource policies);
    # Deny statements may use wildcards, since denying more is only safer
    for statement in policy_statements(template):
        if not statement.allows or (statement.owner, statement.sid) in WILDCARD_ACTION_ALLOWLIST:
            continue

        # Then it names each action it grants, and never grants "all but" some
        assert "NotAction" not in statement.statement, str(statement)
        assert not [action for action in statement.actions if "*" in action], str(statement)


def test_no_allow_statement_grants_on_any_resource_but_the_allowlisted(
    template: Template,
) -> None:
    for statement in policy_statements(template):
        if not statement.allows:
            continue
        assert "NotResource" not in statement.statement, str(statement)
        if "*" not in statement.resources:
            continue

        # Then Resource "*" is either a key policy's (where it means "this key") or only
        # grants actions that have no resource-level permissions
        if statement.owner_type == "AWS::KMS::Key":
            continue
        assert set(statement.actions) <= set(STAR_RESOURCE_ALLOWLIST), str(statement)


def test_no_allow_statement_has_a_wildcard_principal(template: Template) -> None:
    for statement in policy_statements(template):
        if not statement.allows or "Principal" not in statement.statement:
            continue
        principal = statement.statement["Principal"]
        principals = (
            [principal]
            if not isinstance(principal, dict)
            else [value for values in principal.values() for value in as_list(values)]
        )
        assert "*" not in principals, str(statement)


def test_task_runner_role_carries_only_its_inline_policy(template: Template) -> None:
    # Given the task runner's explicit role
    role = properties(template, "TaskRunnerRole")
    function = function_properties(template, "TaskRunnerFunction")

    # Then no managed policy (AWSLambdaBasicExecutionRole grants logs on "*") and no SAM
    # policy template widens it
    assert function["Role"] == {"Fn::GetAtt": ["TaskRunnerRole", "Arn"]}
    assert "Policies" not in function
    assert "ManagedPolicyArns" not in role


def test_task_runner_may_send_only_as_the_sender_address_through_its_identity(
    template: Template,
) -> None:
    # Given the role's SES statements
    ses = [
        statement
        for statement in policy_statements(template)
        if statement.owner == "TaskRunnerRole"
        and any(action.startswith("ses:") for action in statement.actions)
    ]

    # Then one statement allows ses:SendEmail on exactly the two identities of SenderEmail
    # and the configuration set every send names (SESv2 authorizes a send against both)
    [statement] = ses
    assert statement.actions == ["ses:SendEmail"]
    identity_prefix = "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/"
    address, domain, configuration_set = statement.resources
    assert configuration_set == {
        "Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:"
        "configuration-set/${SesConfigurationSet}"
    }
    assert address == {"Fn::Sub": identity_prefix + "${SenderEmail}"}
    assert domain["Fn::Sub"][0] == identity_prefix + "${SenderDomain}"
    assert domain["Fn::Sub"][1]["SenderDomain"] == {
        "Fn::Select": [1, {"Fn::Split": ["@", {"Ref": "SenderEmail"}]}]
    }
    # and only with SenderEmail itself as the From address
    assert statement.statement["Condition"] == {
        "StringEqualsIgnoreCase": {"ses:FromAddress": {"Ref": "SenderEmail"}}
    }


# ------------------------------------------------------------ parameters and outputs


def test_every_parameter_says_what_it_is(template: Template) -> None:
    for name, parameter in template["Parameters"].items():
        assert len(str(parameter.get("Description", "")).strip()) >= 20, name


def test_every_queue_table_and_function_has_a_name_and_an_arn_output(
    template: Template,
) -> None:
    # Given what the outputs point at: (logical ID, "Ref" | attribute)
    exported = set()
    for output in template["Outputs"].values():
        assert str(output.get("Description", "")).strip(), output
        value = output["Value"]
        if isinstance(value, dict) and "Ref" in value:
            exported.add((value["Ref"], "Ref"))
        elif isinstance(value, dict) and "Fn::GetAtt" in value:
            exported.add(tuple(value["Fn::GetAtt"]))

    # Then each queue (URL), table (name) and function (name) has its Ref and ARN output
    for resource_type in ("AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::Serverless::Function"):
        for logical_id in resources_of_type(template, resource_type):
            assert (logical_id, "Ref") in exported, logical_id
            assert (logical_id, "Arn") in exported, logical_id


# ------------------------------------------------------------------------ samconfig


def samconfig_overrides() -> list[tuple[str, str, str]]:
    """(environment, parameter, value) for every parameter override in samconfig.toml."""
    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    overrides = []
    for environment, sections in config.items():
        if not isinstance(sections, dict):
            continue  # version
        raw = sections.get("deploy", {}).get("parameters", {}).get("parameter_overrides", [])
        for pair in raw if isinstance(raw, list) else raw.split():
            name, _, value = pair.partition("=")
            overrides.append((environment, name, value.strip('"')))
    return overrides


SAMCONFIG_OVERRIDES = samconfig_overrides()


@pytest.mark.parametrize(
    ("environment", "name", "value"),
    SAMCONFIG_OVERRIDES,
    ids=[f"{environment}-{name}" for environment, name, _ in SAMCONFIG_OVERRIDES],
)
def test_samconfig_overrides_are_values_the_template_accepts(
    template: Template, environment: str, name: str, value: str
) -> None:
    # Given one parameter override of one samconfig environment
    parameter = template["Parameters"].get(name)

    # Then it names a template parameter and satisfies its constraints, so a deploy does
    # not fail on it halfway through a change set review
    assert parameter is not None, f"{environment}: unknown parameter {name}"
    if "AllowedValues" in parameter:
        assert value in [str(allowed) for allowed in parameter["AllowedValues"]]
    if "AllowedPattern" in parameter:
        assert re.fullmatch(parameter["AllowedPattern"], value)
    if "MinValue" in parameter:
        assert float(value) >= float(parameter["MinValue"])
    if "MaxValue" in parameter:
        assert float(value) <= float(parameter["MaxValue"])


def test_every_samconfig_environment_sets_the_parameters_without_defaults(
    template: Template,
) -> None:
    required = {
        name for name, parameter in template["Parameters"].items() if "Default" not in parameter
    }
    by_environment: dict[str, set[str]] = {}
    for environment, name, _ in SAMCONFIG_OVERRIDES:
        by_environment.setdefault(environment, set()).add(name)

    assert set(by_environment) == {"default", "staging", "prod"}
    for environment, names in by_environment.items():
        assert required <= names, environment


# --------------------------------------------------------------- budget (issue 18)


def budget_notifications(template: Template) -> dict[tuple[str, int], list[Any]]:
    """CostBudget's notifications: (type, threshold %) -> what they notify."""
    return {
        (entry["Notification"]["NotificationType"], int(entry["Notification"]["Threshold"])): [
            subscriber["Address"] for subscriber in entry["Subscribers"]
        ]
        for entry in properties(template, "CostBudget")["NotificationsWithSubscribers"]
    }


def test_budget_is_a_monthly_cost_budget_of_the_monthly_budget_parameter(
    template: Template,
) -> None:
    # Given the environment's budget
    budget = properties(template, "CostBudget")["Budget"]

    # Then it limits the month's cost in USD to MonthlyBudget
    assert (budget["BudgetType"], budget["TimeUnit"]) == ("COST", "MONTHLY")
    assert budget["BudgetLimit"] == {"Amount": {"Ref": "MonthlyBudget"}, "Unit": "USD"}


def test_budget_0_creates_no_budget(template: Template) -> None:
    # Given the budget's condition
    condition = template["Resources"]["CostBudget"]["Condition"]

    # Then MonthlyBudget 0 turns the budget off
    assert template["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "MonthlyBudget"}, 0]}]
    }
    assert template["Parameters"]["MonthlyBudget"]["MinValue"] == 0


def test_budget_tells_the_alarm_topic_at_80_percent_spent_and_100_percent_forecast(
    template: Template,
) -> None:
    # Given the budget's notifications
    notifications = budget_notifications(template)

    # Then both go to the alarm topic, which people subscribe to
    assert notifications == {
        ("ACTUAL", 80): [{"Ref": "AlarmTopic"}],
        ("FORECASTED", 100): [{"Ref": "AlarmTopic"}],
    }
    for entry in properties(template, "CostBudget")["NotificationsWithSubscribers"]:
        assert entry["Notification"]["ComparisonOperator"] == "GREATER_THAN"
        assert entry["Notification"]["ThresholdType"] == "PERCENTAGE"


def test_budget_counts_the_environments_tag_that_samconfig_puts_on_the_stack(
    template: Template,
) -> None:
    # Given the budget's cost filter and the tags each samconfig environment deploys with
    tag_filter = properties(template, "CostBudget")["Budget"]["CostFilters"]["TagKeyValue"]
    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    tags = {
        dict(pair.split("=", 1) for pair in sections["deploy"]["parameters"]["tags"].split())[
            "Environment"
        ]
        for sections in config.values()
        if isinstance(sections, dict)
    }

    # Then it filters on the user tag Environment (user:<key>$<value>), whose values are the
    # environments' names
    assert tag_filter == [{"Fn::Join": ["", ["user:Environment$", {"Ref": "Environment"}]]}]
    assert tags == set(template["Parameters"]["Environment"]["AllowedValues"])


def test_aws_budgets_may_publish_to_the_encrypted_alarm_topic(template: Template) -> None:
    # Given who may publish to the alarm topic and use its key
    for owner in ("AlarmTopicPolicy", "PipelineKey"):
        [statement] = [
            s
            for s in policy_statements(template)
            if s.owner == owner
            and s.allows
            and s.statement.get("Principal") == {"Service": "budgets.amazonaws.com"}
        ]

        # Then AWS Budgets may, for this account's budgets only
        condition = statement.statement["Condition"]
        assert condition["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        assert "aws:SourceArn" in condition["ArnLike"]


def test_samconfig_sets_a_budget_for_staging_and_prod() -> None:
    budgets = {env: value for env, name, value in SAMCONFIG_OVERRIDES if name == "MonthlyBudget"}

    assert set(budgets) == {"staging", "prod"}
    assert all(float(value) > 0 for value in budgets.values())


# ------------------------------------------------------ permissions boundary (issue 18)

BOUNDARY = {
    "Fn::If": [
        "HasPermissionsBoundary",
        {"Ref": "PermissionsBoundaryArn"},
        {"Ref": "AWS::NoValue"},
    ]
}


def test_every_role_of_the_root_carries_the_permissions_boundary(template: Template) -> None:
    # Given the root's roles (the site's and the dashboard's stacks inlined: they have none)
    roles = resources_of_type(template, "AWS::IAM::Role")
    assert roles

    # Then each carries the boundary the pipeline's role insists on, none when it is empty
    for logical_id in roles:
        assert properties(template, logical_id).get("PermissionsBoundary") == BOUNDARY, logical_id
    assert template["Conditions"]["HasPermissionsBoundary"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "PermissionsBoundaryArn"}, ""]}]
    }
    assert template["Parameters"]["PermissionsBoundaryArn"]["Default"] == ""


def test_no_function_has_sam_create_a_role_without_the_boundary(template: Template) -> None:
    # Given the SAM functions: a function without Role would get a role SAM makes
    for logical_id in resources_of_type(template, "AWS::Serverless::Function"):
        # Then each names its own role (which carries the boundary)
        assert "Role" in function_properties(template, logical_id), logical_id


def test_every_nested_stack_with_roles_gets_the_boundary(root_template: Template) -> None:
    # Given the root's nested stacks and the templates they nest
    for stack_id, path in {**NESTED_STACKS, **ROOT_PARTS}.items():
        nested = load_template(path)
        passed = properties(root_template, stack_id).get("Parameters", {})

        # Then a stack that declares the parameter (it has roles, or nests stacks that do)
        # gets the root's, and a stack that does not declare it creates no role
        if "PermissionsBoundaryArn" in nested.get("Parameters", {}):
            assert passed["PermissionsBoundaryArn"] == {"Ref": "PermissionsBoundaryArn"}
        else:
            assert not resources_of_type(nested, "AWS::IAM::Role"), stack_id
