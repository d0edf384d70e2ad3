"""Every component has its alarms; every alarm notifies, says what to do, has a runbook entry.

Herald's alarms are instances of stacks/alarm.yaml (one AWS::CloudFormation::Stack per
alarm). These tests expand each instance as CloudFormation will: alarm.yaml's parameters
with their defaults, overridden by what the instance passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.conftest import (
    NESTED_STACKS,
    ROOT_TEMPLATE,
    STACKS_DIR,
    TEMPLATES,
    SamBuild,
    Template,
    container_definitions,
    function_properties,
    load_template,
    nested_stack_parameters,
    properties,
    referenced_id,
    resources_of_type,
    template_id,
)

if TYPE_CHECKING:
    from pathlib import Path

ALARM_TEMPLATE = STACKS_DIR / "alarm.yaml"
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"
# Words an alarm description uses to tell the reader what to do.
ACTION_WORDS = ("fix", "raise", "lower", "redrive", "roll back", "add", "reduce", "delete")


@dataclass(frozen=True)
class AlarmInstance:
    """One alarm as CloudFormation creates it: an instance of stacks/alarm.yaml, expanded."""

    name: str  # the instance's logical ID: the alarm's name in the runbook
    template_path: Path  # the template that declares the instance
    parameters: dict[str, Any]  # alarm.yaml's defaults overridden by the instance's values

    @property
    def template(self) -> Template:
        return load_template(self.template_path)

    def dimension_targets(self) -> set[str]:
        """The logical IDs the alarm's dimension values point to."""
        return {
            target
            for key in ("DimensionValue", "SecondDimensionValue")
            if (target := referenced_id(self.parameters.get(key)))
        }


def alarm_instances(template_path: Path) -> list[AlarmInstance]:
    """Every instance of stacks/alarm.yaml a template declares, expanded."""
    defaults = {
        name: parameter["Default"]
        for name, parameter in load_template(ALARM_TEMPLATE)["Parameters"].items()
        if "Default" in parameter
    }
    template = load_template(template_path)
    return [
        AlarmInstance(logical_id, template_path, {**defaults, **props.get("Parameters", {})})
        for logical_id in resources_of_type(template, "AWS::CloudFormation::Stack")
        if (props := properties(template, logical_id))
        and (template_path.parent / props["TemplateURL"]).resolve() == ALARM_TEMPLATE.resolve()
    ]


ALARMS = [alarm for path in TEMPLATES for alarm in alarm_instances(path)]


def alarm_id(alarm: AlarmInstance) -> str:
    return f"{template_id(alarm.template_path)}:{alarm.name}"


def runbook_headings() -> set[str]:
    """The alarm names docs/runbook.md has an entry for (`## Name — what it means`)."""
    text = RUNBOOK.read_text(encoding="utf-8")
    return set(re.findall(r"^## (\w+) — ", text, flags=re.MULTILINE))


def the_alarm(name: str) -> AlarmInstance:
    (alarm,) = [alarm for alarm in ALARMS if alarm.name == name]
    return alarm


# ----------------------------------------------------------------- the pattern


def test_the_alarm_pattern_notifies_its_topic_on_alarm_and_on_ok() -> None:
    # Given the one alarm stacks/alarm.yaml declares
    pattern = load_template(ALARM_TEMPLATE)
    (alarm_id_,) = resources_of_type(pattern, "AWS::CloudWatch::Alarm")
    alarm = properties(pattern, alarm_id_)

    # Then it notifies the topic it is given when it fires and when it clears
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopicArn"}]
    assert alarm["OKActions"] == [{"Ref": "AlarmTopicArn"}]
    # and its description, threshold and missing-data treatment are the instance's
    assert alarm["AlarmDescription"] == {"Ref": "AlarmDescription"}
    assert alarm["Threshold"] == {"Ref": "Threshold"}
    assert alarm["TreatMissingData"] == {"Ref": "TreatMissingData"}


@pytest.mark.parametrize(
    "template_path", [path for path in TEMPLATES if path != ALARM_TEMPLATE], ids=template_id
)
def test_no_alarm_is_declared_outside_the_pattern(template_path: Path) -> None:
    # Given a template other than the pattern itself
    # Then it declares no alarm of its own: alarms are instances of stacks/alarm.yaml
    assert resources_of_type(load_template(template_path), "AWS::CloudWatch::Alarm") == {}


def test_alarm_names_are_unique_across_templates() -> None:
    # Given every alarm of every template
    names = [alarm.name for alarm in ALARMS]

    # Then each name is one runbook entry, never two alarms
    assert len(names) == len(set(names)), sorted(names)


# ------------------------------------------------------------ every instance


@pytest.mark.parametrize("alarm", ALARMS, ids=alarm_id)
def test_alarm_notifies_the_alarm_topic(alarm: AlarmInstance) -> None:
    # Given an alarm and the topic its template knows as the alarm topic
    topic = alarm.parameters["AlarmTopicArn"]

    # Then it is the root's AlarmTopic, directly or through the stack's AlarmTopicArn,
    # which the root sets to AlarmTopic
    if alarm.template_path == ROOT_TEMPLATE:
        assert topic == {"Ref": "AlarmTopic"}
    else:
        assert topic == {"Ref": "AlarmTopicArn"}
        stack_id = next(
            stack_id
            for stack_id, path in NESTED_STACKS.items()
            if path.resolve() == alarm.template_path.resolve()
        )
        root = load_template(ROOT_TEMPLATE)
        passed = nested_stack_parameters(root, stack_id)
        assert passed["AlarmTopicArn"] == {"Ref": "AlarmTopic"}


@pytest.mark.parametrize("alarm", ALARMS, ids=alarm_id)
def test_alarm_description_says_what_to_do_and_names_its_runbook_entry(
    alarm: AlarmInstance,
) -> None:
    # Given an alarm's description
    description = str(alarm.parameters["AlarmDescription"])

    # Then it names an action and the runbook entry to read
    assert any(word in description.lower() for word in ACTION_WORDS), description
    assert f"Runbook: {alarm.name}." in description


@pytest.mark.parametrize("alarm", ALARMS, ids=alarm_id)
def test_alarm_has_a_runbook_entry(alarm: AlarmInstance) -> None:
    # Given the runbook's entries
    # Then one of them is this alarm's
    assert alarm.name in runbook_headings()


def test_runbook_has_no_entry_for_an_alarm_that_does_not_exist() -> None:
    # Given the runbook's entries and every alarm
    # Then each entry belongs to an alarm
    assert runbook_headings() == {alarm.name for alarm in ALARMS}


def test_readme_says_what_each_alarm_means() -> None:
    # Given the README's table of alarms ("What each alarm means": one row per alarm,
    # some rows naming two alarms) and every alarm
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### What each alarm means", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (`\w+`(?:, `\w+`)*) \|", section, flags=re.MULTILINE)
    named = {name for row in rows for name in re.findall(r"`(\w+)`", row)}
    # Then the table names exactly the alarms there are
    assert named == {alarm.name for alarm in ALARMS}


@pytest.mark.parametrize("alarm", ALARMS, ids=alarm_id)
def test_alarm_chooses_how_to_treat_missing_data(alarm: AlarmInstance) -> None:
    # Given an alarm (alarm.yaml gives TreatMissingData no default)
    # Then it says what a period without data counts as
    assert alarm.parameters.get("TreatMissingData") in {
        "breaching",
        "notBreaching",
        "ignore",
        "missing",
    }


@pytest.mark.parametrize("alarm", ALARMS, ids=alarm_id)
def test_alarm_threshold_is_a_bounded_described_parameter(alarm: AlarmInstance) -> None:
    # Given an alarm's threshold
    name = referenced_id(alarm.parameters["Threshold"])

    # Then it is a parameter of its template, described and bounded
    assert name is not None, f"{alarm.name}: threshold {alarm.parameters['Threshold']!r}"
    parameter = alarm.template.get("Parameters", {}).get(name)
    assert parameter is not None, f"{alarm.name}: {name} is not a parameter"
    assert parameter["Type"] == "Number"
    assert len(str(parameter.get("Description", ""))) >= 20
    assert ("MinValue" in parameter and "MaxValue" in parameter) or "AllowedValues" in parameter


@pytest.mark.parametrize("alarm", ALARMS, ids=alarm_id)
def test_alarm_threshold_has_one_default_in_the_root_template(alarm: AlarmInstance) -> None:
    # Given an alarm's threshold parameter and the root template
    name = str(referenced_id(alarm.parameters["Threshold"]))
    root = load_template(ROOT_TEMPLATE)

    # Then the root declares it with a default, within the same bounds as the stack's
    root_parameter = root["Parameters"][name]
    assert "Default" in root_parameter
    if alarm.template_path != ROOT_TEMPLATE:
        stack_parameter = alarm.template["Parameters"][name]
        assert "Default" not in stack_parameter  # one default, the root's
        for bound in ("MinValue", "MaxValue"):
            assert stack_parameter.get(bound) == root_parameter.get(bound), bound
        stack_id = next(
            stack_id
            for stack_id, path in NESTED_STACKS.items()
            if path.resolve() == alarm.template_path.resolve()
        )
        assert nested_stack_parameters(root, stack_id)[name] == {"Ref": name}


# --------------------------------------------------------- every component

# (metric namespace, metric, the resource whose dimension the alarm watches): the issue's
# list of what must be watched.
REQUIRED_ALARMS = [
    ("AWS/ECS", "CPUUtilization", "ApiService"),
    ("AWS/ECS", "MemoryUtilization", "ApiService"),
    ("ECS/ContainerInsights", "RunningTaskCount", "ApiService"),
    ("AWS/ECS", "CPUUtilization", "WorkerService"),
    ("AWS/ECS", "MemoryUtilization", "WorkerService"),
    ("ECS/ContainerInsights", "RunningTaskCount", "WorkerService"),
    ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", "LoadBalancer"),
    ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "ApiTargetGroup"),
    ("AWS/ApplicationELB", "UnHealthyHostCount", "ApiTargetGroup"),
    ("AWS/ApplicationELB", "TargetResponseTime", "ApiTargetGroup"),
    ("AWS/RDS", "CPUUtilization", "Database"),
    ("AWS/RDS", "FreeStorageSpace", "Database"),
    ("AWS/RDS", "FreeableMemory", "Database"),
    ("AWS/RDS", "DatabaseConnections", "Database"),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage", "TaskQueue"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "TaskDeadLetterQueue"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "ResultDeadLetterQueue"),
    ("AWS/Lambda", "Errors", "TaskRunnerFunction"),
    ("AWS/Lambda", "Throttles", "TaskRunnerFunction"),
    ("AWS/Lambda", "Duration", "TaskRunnerFunction"),
    ("AWS/Lambda", "ConcurrentExecutions", "TaskRunnerFunction"),
]


@pytest.mark.parametrize(
    ("namespace", "metric", "resource"),
    REQUIRED_ALARMS,
    ids=[f"{resource}-{metric}" for _, metric, resource in REQUIRED_ALARMS],
)
def test_component_has_its_alarm(namespace: str, metric: str, resource: str) -> None:
    # Given every alarm
    # Then one watches this metric of this resource
    watching = [
        alarm.name
        for alarm in ALARMS
        if alarm.parameters["Namespace"] == namespace
        and alarm.parameters["MetricName"] == metric
        and resource in alarm.dimension_targets()
    ]
    assert watching, f"no alarm on {namespace} {metric} of {resource}"


def test_running_task_alarms_compare_running_with_desired() -> None:
    # Given the two running-tasks alarms
    for name in ("ApiRunningTasksAlarm", "WorkerRunningTasksAlarm"):
        parameters = the_alarm(name).parameters

        # Then each alarms on desired minus running
        assert parameters["SecondMetricName"] == "DesiredTaskCount"
        assert parameters["Expression"] == "m2 - m1"
        assert parameters["ComparisonOperator"] == "GreaterThanThreshold"


def test_target_5xx_alarm_is_a_rate_of_the_requests() -> None:
    # Given the api's target 5XX alarm
    parameters = the_alarm("ApiTarget5xxRateAlarm").parameters

    # Then it divides the 5XX count by the request count, a missing count being none
    assert parameters["SecondMetricName"] == "RequestCount"
    assert parameters["Expression"] == "100 * FILL(m1, 0) / m2"


def test_response_time_alarm_watches_the_99th_percentile() -> None:
    assert the_alarm("ApiResponseTimeAlarm").parameters["Statistic"] == "p99"


def test_duration_alarm_watches_p99_below_the_task_runners_timeout(template: Template) -> None:
    # Given the task runner's timeout and its duration alarm
    timeout_ms = int(function_properties(template, "TaskRunnerFunction")["Timeout"]) * 1000
    alarm = the_alarm("TaskRunnerDurationAlarm").parameters
    threshold = template["Parameters"][str(referenced_id(alarm["Threshold"]))]

    # Then it watches p99 and can only be set below the timeout, by default at 80 % of it
    assert alarm["Statistic"] == "p99"
    assert int(threshold["MaxValue"]) <= timeout_ms
    assert int(threshold["Default"]) == timeout_ms * 8 // 10


def test_concurrency_alarm_fires_at_the_task_runners_maximum_concurrency(
    template: Template,
) -> None:
    # Given the SQS event source's concurrency cap and the concurrency alarm
    (event,) = properties(template, "TaskRunnerFunction")["Events"].values()
    cap = event["Properties"]["ScalingConfig"]["MaximumConcurrency"]
    alarm = the_alarm("TaskRunnerConcurrencyAlarm").parameters

    # Then the alarm's threshold is that cap
    assert alarm["Threshold"] == cap
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def assert_watches_the_workers_metric(
    backend: Template, alarm: dict[str, Any], metric: str
) -> None:
    """The alarm watches ``metric`` in the worker's namespace, service and environment."""
    worker = {
        variable["Name"]: variable["Value"]
        for variable in container_definitions(backend)["worker"]["Environment"]
    }
    assert alarm["Namespace"] == worker["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["MetricName"] == metric
    assert (alarm["DimensionName"], alarm["DimensionValue"]) == (
        "service",
        worker["POWERTOOLS_SERVICE_NAME"],
    )
    assert (alarm["SecondDimensionName"], alarm["SecondDimensionValue"]) == (
        "environment",
        worker["ENVIRONMENT"],
    )


def test_relay_lag_alarm_watches_the_metric_the_worker_emits(backend: Template) -> None:
    assert_watches_the_workers_metric(backend, the_alarm("RelayLagAlarm").parameters, "RelayLag")


def test_relay_backlog_alarm_watches_the_metric_the_worker_emits(backend: Template) -> None:
    # Given the relay backlog alarm
    alarm = the_alarm("RelayBacklogAlarm").parameters

    # Then it watches RelayBacklog in the worker's namespace, service and environment,
    # and fires only on a backlog that stays: the minimum of 5 minutes in a row
    assert_watches_the_workers_metric(backend, alarm, "RelayBacklog")
    assert alarm["Statistic"] == "Minimum"
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (5, 5)


# ----------------------------------------------------------------- the build


def test_sam_build_carries_the_alarm_pattern_for_every_alarm(sam_build: SamBuild) -> None:
    # Given the built application
    # Then every alarm's nested template is there, as sam deploy will upload it
    for alarm in ALARMS:
        folder = sam_build.build_dir
        if alarm.template_path != ROOT_TEMPLATE:
            folder /= next(
                stack_id
                for stack_id, path in NESTED_STACKS.items()
                if path.resolve() == alarm.template_path.resolve()
            )
        built = load_template(folder / alarm.name / "template.yaml")
        assert resources_of_type(built, "AWS::CloudWatch::Alarm"), alarm.name
