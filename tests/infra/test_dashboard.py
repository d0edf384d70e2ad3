"""The pipeline dashboard: valid once CloudFormation substitutes it, built from real
resource names, and showing only metrics that exist: Herald's from the process that emits
them, AWS's from the namespaces listed here."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.conftest import (
    NESTED_STACKS,
    Template,
    container_definitions,
    function_properties,
    load_template,
    properties,
)

# The dashboard, read inlined in the root (stacks/dashboard.yaml's Pipeline, nested as
# DashboardStack; PipelineDashboard when it was written in template.yaml).
DASHBOARD = "DashboardPipeline"
PSEUDO_PARAMETERS = {"AWS::Region", "AWS::AccountId", "AWS::StackName", "AWS::Partition"}
# The AWS metrics the dashboard may show, by namespace (names as CloudWatch spells them).
AWS_METRICS = {
    "AWS/ApplicationELB": {
        "RequestCount",
        "HTTPCode_Target_5XX_Count",
        "HTTPCode_ELB_5XX_Count",
        "TargetResponseTime",
    },
    "AWS/SQS": {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateAgeOfOldestMessage",
    },
    "AWS/Lambda": {"Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions"},
    "AWS/RDS": {"CPUUtilization", "DatabaseConnections"},
    "AWS/SES": {"Reputation.BounceRate", "Reputation.ComplaintRate"},
}
# Where the code of each Herald process lives: a Herald metric must be named there.
SOURCES_OF_SERVICE = {
    "herald-api": REPO_ROOT / "ecs_service" / "api",
    "herald-worker": REPO_ROOT / "ecs_service" / "worker",
    "herald-task-runner": REPO_ROOT / "src",
}
# The pipeline end to end: what the dashboard must show (namespace, metric).
PIPELINE = [
    ("AWS/ApplicationELB", "RequestCount"),
    ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"),
    ("AWS/ApplicationELB", "TargetResponseTime"),
    ("Herald", "MessagesCreated"),
    ("Herald", "RelayBacklog"),
    ("Herald", "RelayLag"),
    ("Herald", "MessagesRelayed"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
    ("AWS/Lambda", "Invocations"),
    ("AWS/Lambda", "Errors"),
    ("AWS/Lambda", "Duration"),
    ("AWS/Lambda", "ConcurrentExecutions"),
    ("Herald", "EmailsSent"),
    ("Herald", "EmailsFailed"),
    ("Herald", "SendLatency"),
    ("Herald", "MessagesSent"),
    ("Herald", "MessagesFailed"),
    ("AWS/RDS", "CPUUtilization"),
    ("AWS/RDS", "DatabaseConnections"),
    ("Herald", "EmailsDelivered"),
    ("Herald", "EmailsBounced"),
    ("Herald", "EmailsComplained"),
    ("AWS/SES", "Reputation.BounceRate"),
    ("AWS/SES", "Reputation.ComplaintRate"),
]
PLACEHOLDER = re.compile(r"\$\{([^}!]+)\}")


def dashboard_body_template(template: Template) -> str:
    body = properties(template, DASHBOARD)["DashboardBody"]["Fn::Sub"]
    assert isinstance(body, str)
    return body


def substituted(template: Template) -> Any:
    """The body as CloudFormation renders it: numbers for Number parameters (their
    default), a placeholder string for every other name."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        parameter = template["Parameters"].get(name, {})
        if parameter.get("Type") == "Number":
            return str(parameter["Default"])
        return f"placeholder-{name.replace('.', '-').replace('::', '-')}"

    return json.loads(PLACEHOLDER.sub(value, dashboard_body_template(template)))


def metric_rows(template: Template) -> list[list[Any]]:
    """Every metric row of every widget: namespace, name, dimension pairs, options."""
    return [
        row
        for widget in substituted(template)["widgets"]
        if widget["type"] == "metric"
        for row in widget["properties"]["metrics"]
    ]


def dimensions_of(row: list[Any]) -> dict[str, str]:
    pairs = [part for part in row[2:] if isinstance(part, str)]
    assert len(pairs) % 2 == 0, row
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def test_dashboard_body_is_valid_json_once_substituted(template: Template) -> None:
    # Given the dashboard's body with every ${...} resolved
    body = substituted(template)

    # Then it is a dashboard whose widgets sit on the 24-column grid
    assert body["widgets"]
    for widget in body["widgets"]:
        assert widget["x"] + widget["width"] <= 24, widget


def test_every_name_the_body_substitutes_exists(template: Template) -> None:
    # Given the names the body substitutes
    names = set(PLACEHOLDER.findall(dashboard_body_template(template)))

    # Then each is a parameter, a pseudo parameter, a resource (or its attribute) or an
    # output of the nested stack it names
    for name in names:
        if name in template["Parameters"] or name in PSEUDO_PARAMETERS:
            continue
        logical_id, *rest = name.split(".")
        assert logical_id in template["Resources"], name
        if rest[:1] == ["Outputs"]:
            nested = load_template(NESTED_STACKS[logical_id])
            assert rest[1] in nested["Outputs"], name


def test_aws_metrics_shown_are_in_the_listed_namespaces(template: Template) -> None:
    # Given every AWS metric the dashboard shows
    for row in metric_rows(template):
        namespace, name = row[0], row[1]
        if namespace == "Herald":
            continue
        # Then it is a metric of its namespace that the list above knows
        assert name in AWS_METRICS.get(namespace, set()), row


def test_herald_metrics_shown_are_emitted_by_the_process_they_name(
    template: Template, backend: Template
) -> None:
    # Given the services Herald's processes report as, from their configuration
    containers = container_definitions(backend)
    env = {
        name: {v["Name"]: v["Value"] for v in containers[name]["Environment"]}
        for name in ("api", "worker")
    }
    task_runner = function_properties(template, "TaskRunnerFunction")["Environment"]["Variables"]
    configured = {
        env["api"]["POWERTOOLS_SERVICE_NAME"],
        env["worker"]["POWERTOOLS_SERVICE_NAME"],
        task_runner["POWERTOOLS_SERVICE_NAME"],
    }
    assert configured == set(SOURCES_OF_SERVICE)

    for row in metric_rows(template):
        if row[0] != "Herald":
            continue
        dimensions = dimensions_of(row)
        # Then each Herald metric is selected by the dimensions Powertools adds (service
        # and environment), and its name is in the code of that service
        assert set(dimensions) == {"service", "environment"}, row
        assert dimensions["environment"] == "placeholder-Environment", row
        sources = SOURCES_OF_SERVICE[dimensions["service"]]
        code = "\n".join(path.read_text(encoding="utf-8") for path in sources.rglob("*.py"))
        assert f'"{row[1]}"' in code, f"{row[1]} is not emitted by {dimensions['service']}"


@pytest.mark.parametrize(("namespace", "metric"), PIPELINE, ids=[m for _, m in PIPELINE])
def test_dashboard_shows_the_pipeline_stage(
    template: Template, namespace: str, metric: str
) -> None:
    # Given the dashboard's metrics
    shown = {(row[0], row[1]) for row in metric_rows(template)}

    # Then this stage of the pipeline is on it
    assert (namespace, metric) in shown


def test_dashboard_shows_every_dead_letter_queue(template: Template) -> None:
    # Given the queues whose depth the dashboard shows
    queues = {
        dimensions_of(row).get("QueueName")
        for row in metric_rows(template)
        if row[:2] == ["AWS/SQS", "ApproximateNumberOfMessagesVisible"]
    }

    # Then every DLQ is among them
    assert {
        "placeholder-TaskDeadLetterQueue-QueueName",
        "placeholder-ResultDeadLetterQueue-QueueName",
        "placeholder-FeedbackDeadLetterQueue-QueueName",
    } <= queues


def test_reputation_rates_shown_are_the_configuration_sets(template: Template) -> None:
    # Given the SES metrics the dashboard shows
    rows = [row for row in metric_rows(template) if row[0] == "AWS/SES"]

    # Then each is selected by this stack's configuration set, as the alarms watch them
    assert rows
    selected = {"ses:configuration-set": "placeholder-SesConfigurationSet"}
    for row in rows:
        assert dimensions_of(row) == selected, row


def test_an_output_links_to_the_dashboard(template: Template) -> None:
    # Given the dashboard's output
    url = template["Outputs"]["PipelineDashboardUrl"]["Value"]["Fn::Sub"]

    # Then it opens this dashboard in the stack's region
    assert "console.aws.amazon.com/cloudwatch" in url
    assert "${" + DASHBOARD + "}" in url
    assert "region=${AWS::Region}" in url


def test_each_threshold_line_is_its_alarms_threshold(template: Template) -> None:
    # Given the horizontal lines the dashboard draws, each labelled with an alarm's name,
    # and every alarm of the root and its nested stacks
    lines = [
        line
        for widget in substituted(template)["widgets"]
        if widget["type"] == "metric"
        for line in widget["properties"].get("annotations", {}).get("horizontal", [])
    ]
    thresholds = {
        logical_id: resource["Properties"]["Threshold"]
        for stack in [template, *(load_template(path) for path in NESTED_STACKS.values())]
        for logical_id, resource in stack["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }

    # Then each line sits at the threshold of the alarm it names
    assert lines
    for line in lines:
        assert line["value"] == thresholds[line["label"]], line
