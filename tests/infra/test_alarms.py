"""Every component has its alarms; every alarm follows one pattern and has a runbook entry.

Herald's alarms are plain AWS::CloudWatch::Alarm resources declared beside what they watch
(template.yaml and the parts it nests: stacks/queue.yaml, stacks/ses.yaml; stacks/backend.yaml
and its services' stacks/service.yaml; stacks/database.yaml). The pattern they share is
enforced here, for every alarm of every template: it notifies the alarm topic when it fires
and when it clears, treats a missing datapoint deliberately, says what it means and what to
do, names its runbook entry, and has a literal (or per-environment mapped) threshold. A
template another nests once per instance is read inside it, each instance's alarms under the
names the runbook knows (TaskStack's QueueAgeAlarm is TaskQueueAgeAlarm).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.conftest import (
    NESTED_STACKS,
    ROOT_PARTS,
    ROOT_TEMPLATE,
    SERVICE_TEMPLATES,
    TEMPLATES,
    WHOLE_TEMPLATES,
    SamBuild,
    Template,
    container_definitions,
    function_properties,
    load_template,
    nested_stack_parameters,
    properties,
    read_whole,
    referenced_id,
    resources_of_type,
    template_id,
)
from tools.nested_stacks import nested_template_path

if TYPE_CHECKING:
    from pathlib import Path

DOCS = REPO_ROOT / "docs"
# Words an alarm description uses to tell the reader what to do.
ACTION_WORDS = ("fix", "raise", "lower", "redrive", "roll back", "add", "reduce", "delete")
MISSING_DATA_TREATMENTS = {"breaching", "notBreaching", "ignore", "missing"}
# Where the code of each Herald process lives: a Herald metric an alarm watches must be
# named there.
SOURCES_OF_SERVICE = {
    "herald-api": REPO_ROOT / "ecs_service" / "api",
    "herald-worker": REPO_ROOT / "ecs_service" / "worker",
    "herald-task-runner": REPO_ROOT / "src",
}


@dataclass(frozen=True)
class WatchedMetric:
    """One metric an alarm reads: directly, or as one input of its metric math."""

    namespace: str
    name: str
    dimensions: dict[str, Any]
    stat: str


@dataclass(frozen=True)
class Alarm:
    """One AWS::CloudWatch::Alarm as a template declares it."""

    name: str  # its logical ID as its template is read: the alarm's name in the runbook
    template_path: Path
    props: dict[str, Any]
    # Its template in `sam build`'s folder and its logical ID there (TaskStack's alarms are
    # in TaskStack/template.yaml, TaskQueueAgeAlarm as QueueAgeAlarm).
    built: tuple[str, str]

    @property
    def metrics(self) -> list[WatchedMetric]:
        if "Metrics" not in self.props:
            return [
                WatchedMetric(
                    self.props["Namespace"],
                    self.props["MetricName"],
                    dimensions(self.props.get("Dimensions", [])),
                    self.props.get("Statistic") or self.props["ExtendedStatistic"],
                )
            ]
        return [
            WatchedMetric(
                stat["Metric"]["Namespace"],
                stat["Metric"]["MetricName"],
                dimensions(stat["Metric"].get("Dimensions", [])),
                stat["Stat"],
            )
            for query in self.props["Metrics"]
            if (stat := query.get("MetricStat"))
        ]

    @property
    def metric(self) -> WatchedMetric:
        """The one metric of an alarm that watches a single metric."""
        (metric,) = self.metrics
        return metric

    @property
    def expression(self) -> str | None:
        """The metric math the alarm compares with its threshold, if any."""
        returned = [query for query in self.props.get("Metrics", []) if query["ReturnData"]]
        return str(returned[0]["Expression"]) if returned else None

    def metric_of(self, query_id: str) -> str:
        """The metric name behind one id of the alarm's metric math."""
        (query,) = [query for query in self.props["Metrics"] if query["Id"] == query_id]
        return str(query["MetricStat"]["Metric"]["MetricName"])

    @property
    def description(self) -> str:
        """The description's text (the string of a !Sub, its placeholders unresolved)."""
        description = self.props["AlarmDescription"]
        if isinstance(description, dict):
            sub = description["Fn::Sub"]
            return str(sub[0] if isinstance(sub, list) else sub)
        return str(description)

    def dimension_targets(self) -> set[str]:
        """The logical IDs the dimension values of its metrics point to."""
        return {
            target
            for metric in self.metrics
            for value in metric.dimensions.values()
            if (target := referenced_id(value))
        }


def dimensions(declared: list[dict[str, Any]]) -> dict[str, Any]:
    return {dimension["Name"]: dimension["Value"] for dimension in declared}


def built_at(template_path: Path, logical_id: str) -> tuple[str, str]:
    """Where `sam build` puts the alarm ``logical_id`` of ``template_path`` (as read): the
    path of the template that declares it in the build folder, and its logical ID there."""
    if template_path == ROOT_TEMPLATE:
        folder, parts = "", ROOT_PARTS
    else:
        (folder,) = [stack_id for stack_id, path in NESTED_STACKS.items() if path == template_path]
        parts = SERVICE_TEMPLATES if folder == "BackendStack" else {}
    for stack_id, path in parts.items():
        own_id = logical_id.removeprefix(stack_id.removesuffix("Stack"))
        if own_id != logical_id and own_id in load_template(path)["Resources"]:
            return f"{folder}/{stack_id}/template.yaml".lstrip("/"), own_id
    return f"{folder}/template.yaml".lstrip("/"), logical_id


def alarms_of(template_path: Path) -> list[Alarm]:
    template = read_whole(template_path)
    return [
        Alarm(
            logical_id,
            template_path,
            properties(template, logical_id),
            built_at(template_path, logical_id),
        )
        for logical_id in resources_of_type(template, "AWS::CloudWatch::Alarm")
    ]


ALARMS = [alarm for path in WHOLE_TEMPLATES for alarm in alarms_of(path)]


def alarm_id(alarm: Alarm) -> str:
    return f"{template_id(alarm.template_path)}:{alarm.name}"


def the_alarm(name: str) -> Alarm:
    (alarm,) = [alarm for alarm in ALARMS if alarm.name == name]
    return alarm


def runbook() -> Path:
    """The page holding one entry per alarm: docs/monitoring.md (the runbook)."""
    return DOCS / "monitoring.md"


def runbook_entries() -> set[str]:
    """The alarm names the runbook has a heading for (`## Name — what it means`)."""
    text = runbook().read_text(encoding="utf-8")
    headings = re.findall(r"^#{2,4} +(.+)$", text, flags=re.MULTILINE)
    return {
        name
        for heading in headings
        for name in re.findall(r"\b([A-Z][A-Za-z0-9]*Alarm)\b", heading.split(" — ")[0])
    }


# ----------------------------------------------------------------- the pattern


def test_there_are_alarms_in_each_template_that_owns_a_component() -> None:
    # Given the templates that declare alarms
    owners = {alarm.template_path for alarm in ALARMS}

    # Then the root (runner, queues, SES), the backend (and its services) and the database
    # each declare theirs
    assert owners == {ROOT_TEMPLATE, NESTED_STACKS["BackendStack"], NESTED_STACKS["DatabaseStack"]}


def test_alarm_names_are_unique_across_templates() -> None:
    # Given every alarm of every template
    names = [alarm.name for alarm in ALARMS]

    # Then each name is one runbook entry, never two alarms
    assert len(names) == len(set(names)), sorted(names)


@pytest.mark.parametrize("alarm", ALARMS, ids=alarm_id)
def test_alarm_notifies_the_alarm_topic_when_it_fires_and_when_it_clears(alarm: Alarm) -> None:
    # Given an alarm's actions
    actions, ok_actions = alarm.props.get("AlarmActions"), alarm.props.get("OKActions")

    # Then both are the root's AlarmTopic, directly or through the stack's AlarmTopicArn,
    # which the root sets to AlarmTopic
    if alarm.template_path == ROOT_TEMPLATE:
        assert actions == ok_actions == [{"Ref": "AlarmTopic"}]
    else:
        assert actions == ok_actions == [{"Ref": "AlarmTopicArn"}]
        (stack_id,) = [
            stack_id
            for stack_id, path in NESTED_STACKS.items()
            if path.resolve() == alarm.template_path.resolve()
        ]
        passed = nested_stack_parameters(load_template(ROOT_TEMPLATE), stack_id)
        assert passed["AlarmTopicArn"] == {"Ref": "AlarmTopic"}


@pytest.mark.parametrize("alarm", ALARMS, ids=alarm_id)
def test_alarm_chooses_how_to_treat_missing_data(alarm: Alarm) -> None:
    # Given an alarm (CloudWatch's default, "missing", would be a choice nobody made)
    # Then it says what a period without data counts as
    assert alarm.props.get("TreatMissingData") in MISSING_DATA_TREATMENTS


@pytest.mark.parametrize("alarm", ALARMS, ids=alarm_id)
def test_alarm_description_says_what_to_do_and_names_its_runbook_entry(alarm: Alarm) -> None:
    # Given an alarm's description
    description = alarm.description

    # Then it says what the alarm means, names an action and the runbook entry to read
    assert len(description) >= 120, description
    assert any(word in description.lower() for word in ACTION_WORDS), description
    assert description.rstrip().endswith(f"Runbook: {alarm.name}."), description


@pytest.mark.parametrize("alarm", ALARMS, ids=alarm_id)
def test_alarm_has_a_runbook_entry(alarm: Alarm) -> None:
    # Given the runbook's entries
    # Then one of them is this alarm's
    assert alarm.name in runbook_entries(), f"no entry for {alarm.name} in {runbook()}"


def test_runbook_has_no_entry_for_an_alarm_that_does_not_exist() -> None:
    # Given the runbook's entries and every alarm
    # Then each entry belongs to an alarm
    assert runbook_entries() <= {alarm.name for alarm in ALARMS}


@pytest.mark.parametrize("alarm", ALARMS, ids=alarm_id)
def test_alarm_threshold_is_a_literal_a_mapping_or_a_setting_of_what_it_watches(
    alarm: Alarm,
) -> None:
    # Given an alarm's threshold and its template
    threshold = alarm.props["Threshold"]
    template = read_whole(alarm.template_path)

    # Then it is a number written beside the alarm, a per-environment mapping with a value
    # for every environment, or a parameter that configures the component itself (used
    # by another resource), never a parameter that exists only to tune the alarm
    if isinstance(threshold, int | float):
        return
    if isinstance(threshold, dict) and "Fn::FindInMap" in threshold:
        mapping, key, _ = threshold["Fn::FindInMap"]
        assert key == {"Ref": "Environment"}
        environments = template["Parameters"]["Environment"]["AllowedValues"]
        assert set(template["Mappings"][mapping]) == set(environments)
        return
    name = referenced_id(threshold)
    assert name in template["Parameters"], f"{alarm.name}: threshold {threshold!r}"
    other_resources = {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] != "AWS::CloudWatch::Alarm"
    }
    assert {"Ref": name} in list(walk(other_resources)), f"{name} configures nothing else"


def alarm_properties(template: Template) -> dict[str, dict[str, Any]]:
    """Every alarm's properties, by logical ID."""
    return {
        logical_id: properties(template, logical_id)
        for logical_id in resources_of_type(template, "AWS::CloudWatch::Alarm")
    }


def walk(value: Any) -> Any:
    """Every value nested in ``value``, itself included."""
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


@pytest.mark.parametrize("template_path", TEMPLATES, ids=template_id)
def test_no_parameter_exists_to_tune_an_alarm(template_path: Path) -> None:
    # Given a template's parameters
    parameters = load_template(template_path).get("Parameters", {})

    # Then none is an alarm's threshold: the only alarm parameters are where they notify
    alarm_parameters = {name for name in parameters if "Alarm" in name}
    # (and, in stacks/service.yaml, which alarms roll a deployment back: names, not thresholds)
    assert alarm_parameters <= {"AlarmEmail", "AlarmTopicArn", "DeploymentAlarmNames"}


@pytest.mark.parametrize("template_path", TEMPLATES, ids=template_id)
def test_no_template_nests_a_stack_per_alarm_or_switches_a_lint_check_off_for_it(
    template_path: Path,
) -> None:
    # Given a template
    template = load_template(template_path)

    # Then every stack it nests is a whole unit (stacks/service.yaml: an ECS service with its
    # roles, log group and alarms; stacks/queue.yaml: a queue, its DLQ and their alarms),
    # never a wrapper around an alarm: alarms are plain resources, and one in a nested stack
    # watches a resource of that stack. And cfn-lint's warning about nested templates
    # (W3002) is not switched off
    for logical_id, stack in template.get("Resources", {}).items():
        nested_path = nested_template_path(stack, template_path)
        if nested_path is None:
            continue
        nested = load_template(nested_path)
        types = {resource["Type"] for resource in nested.get("Resources", {}).values()}
        assert types - {"AWS::CloudWatch::Alarm"}, f"{logical_id} nests only alarms"
        for alarm_id, props in alarm_properties(nested).items():
            watched = Alarm(alarm_id, nested_path, props, ("", "")).dimension_targets()
            outside = watched - set(nested["Resources"]) - set(nested.get("Parameters", {}))
            assert not outside, f"{logical_id} nests {alarm_id}, which watches {outside}"
    config = template.get("Metadata", {}).get("cfn-lint", {}).get("config", {})
    assert "W3002" not in config.get("ignore_checks", [])


# --------------------------------------------------------- every component

# (metric namespace, metric, the resource whose dimension the alarm watches): the issue's
# list of what must be watched. The api's and the worker's ECS services are each in their
# nested stack (stacks/service.yaml), read inlined: ApiService, beside its alarms.
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
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "FeedbackDeadLetterQueue"),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage", "FeedbackQueue"),
    ("AWS/SES", "Reputation.BounceRate", "SesConfigurationSet"),
    ("AWS/SES", "Reputation.ComplaintRate", "SesConfigurationSet"),
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
        for watched in alarm.metrics
        if (watched.namespace, watched.name) == (namespace, metric)
        and resource in alarm.dimension_targets()
    ]
    assert watching, f"no alarm on {namespace} {metric} of {resource}"


@pytest.mark.parametrize("name", ["ApiRunningTasksAlarm", "WorkerRunningTasksAlarm"])
def test_running_task_alarm_compares_running_with_desired(name: str) -> None:
    # Given a running-tasks alarm
    alarm = the_alarm(name)

    # Then it alarms on desired minus running
    assert alarm.expression == "desired - running"
    assert alarm.metric_of("desired") == "DesiredTaskCount"
    assert alarm.metric_of("running") == "RunningTaskCount"
    assert alarm.props["ComparisonOperator"] == "GreaterThanThreshold"


def test_target_5xx_alarm_is_a_rate_of_the_requests() -> None:
    # Given the api's target 5XX alarm
    alarm = the_alarm("ApiTarget5xxRateAlarm")

    # Then it divides the 5XX count by the request count, a missing count being none
    assert alarm.expression == "100 * FILL(errors, 0) / requests"
    assert alarm.metric_of("errors") == "HTTPCode_Target_5XX_Count"
    assert alarm.metric_of("requests") == "RequestCount"


def test_response_time_alarm_watches_the_99th_percentile() -> None:
    assert the_alarm("ApiResponseTimeAlarm").metric.stat == "p99"


def test_duration_alarm_watches_p99_below_the_task_runners_timeout(template: Template) -> None:
    # Given the task runner's timeout and its duration alarm
    timeout_ms = int(function_properties(template, "TaskRunnerFunction")["Timeout"]) * 1000
    alarm = the_alarm("TaskRunnerDurationAlarm")

    # Then it watches p99 and fires at 80 % of the timeout
    assert alarm.metric.stat == "p99"
    assert alarm.props["Threshold"] == timeout_ms * 8 // 10


def test_concurrency_alarm_fires_at_the_task_runners_maximum_concurrency(
    template: Template,
) -> None:
    # Given the SQS event source's concurrency cap and the concurrency alarm
    (event,) = properties(template, "TaskRunnerFunction")["Events"].values()
    cap = event["Properties"]["ScalingConfig"]["MaximumConcurrency"]
    alarm = the_alarm("TaskRunnerConcurrencyAlarm")

    # Then the alarm's threshold is that cap
    assert alarm.props["Threshold"] == cap
    assert alarm.props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


WORKER_METRIC_ALARMS = {
    # A backlog or lag the send rate holds is by design: the relay alarms read only the part
    # it does not explain.
    "RelayLagAlarm": "RelayLagUnpaced",
    "RelayBacklogAlarm": "RelayBacklogUnpaced",
    "RelayRowsFailedAlarm": "RelayRowsFailed",
    "ResultsRejectedAlarm": "ResultsRejected",
}


@pytest.mark.parametrize(("name", "metric"), WORKER_METRIC_ALARMS.items())
def test_worker_alarm_watches_the_metric_in_the_workers_namespace_and_dimensions(
    backend: Template, name: str, metric: str
) -> None:
    # Given the worker's metric settings and one of the alarms on its metrics
    worker = {
        variable["Name"]: variable["Value"]
        for variable in container_definitions(backend)["worker"]["Environment"]
    }
    watched = the_alarm(name).metric

    # Then it watches that metric in the worker's namespace, service and environment
    assert watched.namespace == worker["POWERTOOLS_METRICS_NAMESPACE"]
    assert watched.name == metric
    assert watched.dimensions == {
        "service": worker["POWERTOOLS_SERVICE_NAME"],
        "environment": worker["ENVIRONMENT"],
    }


@pytest.mark.parametrize(
    "alarm",
    [alarm for alarm in ALARMS if any(m.namespace == "Herald" for m in alarm.metrics)],
    ids=alarm_id,
)
def test_herald_metric_alarm_watches_a_metric_its_process_emits(alarm: Alarm) -> None:
    # Given an alarm on one of Herald's own metrics and the code of the process it names
    sources = SOURCES_OF_SERVICE[alarm.metric.dimensions["service"]]
    code = "\n".join(path.read_text(encoding="utf-8") for path in sources.rglob("*.py"))

    # Then that code emits the metric
    assert f'"{alarm.metric.name}"' in code, f"{alarm.metric.name} is not emitted"


def test_relay_backlog_alarm_fires_only_on_a_backlog_that_stays() -> None:
    # Given the relay backlog alarm
    alarm = the_alarm("RelayBacklogAlarm")

    # Then it compares the minimum of each minute, 5 minutes in a row
    assert alarm.metric.stat == "Minimum"
    assert (alarm.props["EvaluationPeriods"], alarm.props["DatapointsToAlarm"]) == (5, 5)


@pytest.mark.parametrize("name", ["RelayRowsFailedAlarm", "ResultsRejectedAlarm"])
def test_worker_failure_count_alarm_fires_on_any_count_in_5_minutes(name: str) -> None:
    # Given an alarm on a count of rows or results the worker had to give up on
    alarm = the_alarm(name)

    # Then a single one in 5 minutes sets it off
    assert alarm.metric.stat == "Sum"
    assert alarm.props["Period"] * alarm.props["EvaluationPeriods"] == 300
    assert alarm.props["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm.props["Threshold"] == 0
    assert alarm.props["TreatMissingData"] == "notBreaching"


# AWS reviews an account at a 5 % bounce rate and a 0.1 % complaint rate; Herald's alarms
# warn at well under half of each (SES publishes the rates as fractions).
REPUTATION_ALARMS = {
    "SesBounceRateAlarm": ("Reputation.BounceRate", 0.02),
    "SesComplaintRateAlarm": ("Reputation.ComplaintRate", 0.0005),
}


@pytest.mark.parametrize(
    ("name", "metric", "threshold"),
    [(name, metric, threshold) for name, (metric, threshold) in REPUTATION_ALARMS.items()],
)
def test_reputation_alarm_fires_well_before_awss_review_threshold(
    name: str, metric: str, threshold: float
) -> None:
    # Given a reputation alarm
    alarm = the_alarm(name)

    # Then it watches this configuration set's rate (not the account's, which other
    # senders of the account share) and fires from its threshold on
    assert alarm.metric.namespace == "AWS/SES"
    assert alarm.metric.name == metric
    assert alarm.metric.dimensions == {"ses:configuration-set": {"Ref": "SesConfigurationSet"}}
    assert alarm.props["Threshold"] == threshold
    assert alarm.props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


@pytest.mark.parametrize("name", sorted(REPUTATION_ALARMS))
def test_reputation_alarm_keeps_the_last_published_rate(name: str) -> None:
    # Given a reputation alarm (SES publishes a rate only while there is sending to rate)
    # Then a period without a rate neither clears nor raises it
    assert the_alarm(name).props["TreatMissingData"] == "ignore"


def test_reputation_metrics_are_published_for_the_configuration_set_the_alarms_watch(
    template: Template,
) -> None:
    # Given the configuration set the reputation alarms name
    configuration_set = properties(template, "SesConfigurationSet")

    # Then SES publishes its reputation metrics, else the alarms would never see data
    assert configuration_set["ReputationOptions"] == {"ReputationMetricsEnabled": True}


# ----------------------------------------------------------------- the build


def test_sam_build_carries_every_alarm(sam_build: SamBuild) -> None:
    # Given the built application (the root and each nested template, as sam deploy
    # uploads them)
    for alarm in ALARMS:
        path, built_name = alarm.built
        built = load_template(sam_build.build_dir / path)

        # Then every alarm is in the template that declares it
        assert built_name in resources_of_type(built, "AWS::CloudWatch::Alarm"), alarm.name
