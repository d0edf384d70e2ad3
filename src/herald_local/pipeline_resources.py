"""The template's queues, table, SES identity and configuration set, in the local endpoint.

Every property that changes behaviour is copied from the template (visibility timeout,
retention, long polling, redrive, key schema, TTL, the configuration set's options ...).
Encryption settings are left out on purpose: moto keeps everything in memory, and the
KMS key's policy only means something in AWS. A property this module does not know is
reported, never dropped silently.

SES's event publishing is read from the template too, for the mailbox simulator
(``ses_simulator``): which event types each configuration set's EventBridge destination
matches, and the default bus's rules (pattern and SQS targets) that route them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3

from herald_local.eventbridge_rules import EventRule, UnsupportedPatternError
from herald_local.template import FEEDBACK_QUEUE, TASK_QUEUE, TemplateError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient

    from herald_local.template import PipelineTemplate, TemplateResource

STACK_NAME = "herald-local"

# CloudFormation property -> SQS attribute, for the properties that shape behaviour.
QUEUE_ATTRIBUTES = {
    "DelaySeconds": "DelaySeconds",
    "MaximumMessageSize": "MaximumMessageSize",
    "MessageRetentionPeriod": "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout": "VisibilityTimeout",
    "RedrivePolicy": "RedrivePolicy",
    "RedriveAllowPolicy": "RedriveAllowPolicy",
    "FifoQueue": "FifoQueue",
    "ContentBasedDeduplication": "ContentBasedDeduplication",
    "DeduplicationScope": "DeduplicationScope",
    "FifoThroughputLimit": "FifoThroughputLimit",
}
QUEUE_PROPERTIES_NOT_REPRODUCED = {
    "QueueName": "used as the queue's name",
    "Tags": "tags change no behaviour",
    "KmsMasterKeyId": "moto keeps messages in memory; encryption at rest is AWS's",
    "KmsDataKeyReusePeriodSeconds": "encryption at rest is AWS's",
    "SqsManagedSseEnabled": "encryption at rest is AWS's",
}
TABLE_CREATE_PROPERTIES = (
    "AttributeDefinitions",
    "KeySchema",
    "BillingMode",
    "ProvisionedThroughput",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "StreamSpecification",
    "DeletionProtectionEnabled",
)
# Applied after CreateTable, by UpdateTimeToLive and UpdateContinuousBackups.
TABLE_UPDATE_PROPERTIES = ("TimeToLiveSpecification", "PointInTimeRecoverySpecification")
TABLE_PROPERTIES_NOT_REPRODUCED = {
    "TableName": "used as the table's name",
    "Tags": "tags change no behaviour",
    "SSESpecification": "moto keeps items in memory; encryption at rest is AWS's",
}
# AWS::SES::ConfigurationSet properties, which SESv2 CreateConfigurationSet takes as they are.
CONFIGURATION_SET_OPTIONS = (
    "DeliveryOptions",
    "ReputationOptions",
    "SendingOptions",
    "SuppressionOptions",
    "TrackingOptions",
    "VdmOptions",
)


@dataclass(frozen=True)
class LocalPipeline:
    """Where the local pipeline's resources are, and the task runner's resolved settings."""

    task_queue_url: str
    task_queue_arn: str
    task_dead_letter_queue_url: str
    result_queue_url: str
    queue_urls: Mapping[str, str]  # logical ID -> URL, every queue of the template
    queue_settings: Mapping[str, Mapping[str, str]]  # logical ID -> attributes set
    table_names: Mapping[str, str]
    sender_identity: str
    function_environment: Mapping[str, str]
    warnings: tuple[str, ...]
    # SES event publishing: the configuration set the task runner sends through, the
    # event types each set publishes to EventBridge, the bus's rules, the worker's queue.
    configuration_set: str = ""
    ses_event_types: Mapping[str, frozenset[str]] = field(default_factory=dict)
    event_rules: tuple[EventRule, ...] = ()
    feedback_queue_url: str = ""


def create_pipeline_resources(
    template: PipelineTemplate,
    *,
    sender_email: str,
    visibility_timeout_override: int | None = None,
    sqs: SQSClient | None = None,
    dynamodb: DynamoDBClient | None = None,
    create_email_identity: Callable[[str], None] | None = None,
    sesv2: SESV2Client | None = None,
    name_prefix: str = STACK_NAME,
    queue_attributes: Mapping[str, Mapping[str, str]] | None = None,
) -> LocalPipeline:
    """Create the template's queues, tables, SES configuration sets and the sender's identity.

    Clients follow boto3's configuration, so ``AWS_ENDPOINT_URL`` must point at the local
    endpoint (``aws_isolation.isolate_from_real_aws`` makes sure it does).

    The one factory of the pipeline's resources: the local system, the tests (one
    ``name_prefix`` each, so they share an endpoint without sharing a queue) and the
    benchmarks (through the local system) all make them here, from the template.

    Parameters
    ----------
    visibility_timeout_override
        Replaces the task queue's ``VisibilityTimeout`` (300 s in the template), so a
        failed task comes back in seconds instead of five minutes. For tests and for
        watching a retry; the template's value is used when None.
    name_prefix
        What the names of resources the template leaves unnamed start with
        (``<name_prefix>-<logical ID>``); the stack's name by default.
    queue_attributes
        Logical ID -> SQS attributes set over the template's (a test's shorter
        ``VisibilityTimeout``, say).
    """
    sqs = sqs or boto3.client("sqs")
    dynamodb = dynamodb or boto3.client("dynamodb")
    resolver = template.resolver
    warnings: list[str] = []
    urls: dict[str, str] = {}
    settings: dict[str, dict[str, str]] = {}
    for queue in template.queues:
        attributes = _queue_attributes(queue, template, warnings)
        if queue.logical_id == TASK_QUEUE and visibility_timeout_override is not None:
            attributes["VisibilityTimeout"] = str(visibility_timeout_override)
        attributes.update((queue_attributes or {}).get(queue.logical_id, {}))
        name = str(
            resolver.resolve(queue.properties.get("QueueName"), queue.logical_id)
            or f"{name_prefix}-{queue.logical_id}"
        )
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]  # type: ignore[arg-type]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        resolver.refs[queue.logical_id] = url
        resolver.attributes[(queue.logical_id, "Arn")] = arn
        resolver.attributes[(queue.logical_id, "QueueName")] = name
        resolver.attributes[(queue.logical_id, "QueueUrl")] = url
        urls[queue.logical_id] = url
        settings[queue.logical_id] = attributes

    tables: dict[str, str] = {}
    for table in template.tables:
        tables[table.logical_id] = _create_table(table, template, dynamodb, warnings, name_prefix)

    sender_domain = sender_email.rpartition("@")[2].lower()
    ses = sesv2 or boto3.client("sesv2")
    if create_email_identity is None:

        def create_email_identity(identity: str) -> None:
            ses.create_email_identity(EmailIdentity=identity)

    # The domain, as the README advises for AWS: any address of it may send.
    create_email_identity(sender_domain)
    configuration_sets = [
        _create_configuration_set(resource, template, ses, warnings, name_prefix)
        for resource in template.configuration_sets
        if template.exists(resource)
    ]
    event_types = _ses_event_types(template, warnings)
    rules = _event_rules(template, urls, warnings)

    function = template.task_runner
    if function.event.queue_logical_id not in urls:
        raise TemplateError(f"the task runner's queue {function.event.queue_logical_id} is missing")
    environment = {
        name: _as_text(resolver.resolve(value, f"{function.logical_id}.Environment.{name}"))
        for name, value in function.environment.items()
    }
    task_queue = function.event.queue_logical_id
    redrive = json.loads(settings[task_queue].get("RedrivePolicy", "{}"))
    dlq_url = next(
        (
            urls[logical_id]
            for logical_id in urls
            if resolver.attributes[(logical_id, "Arn")] == redrive.get("deadLetterTargetArn")
        ),
        "",
    )
    return LocalPipeline(
        task_queue_url=urls[task_queue],
        task_queue_arn=resolver.attributes[(task_queue, "Arn")],
        task_dead_letter_queue_url=dlq_url,
        result_queue_url=environment.get("RESULT_QUEUE_URL", ""),
        queue_urls=urls,
        queue_settings=settings,
        table_names=tables,
        sender_identity=sender_domain,
        function_environment=environment,
        warnings=tuple(warnings),
        configuration_set=environment.get(
            "SES_CONFIGURATION_SET", configuration_sets[0] if configuration_sets else ""
        ),
        ses_event_types=event_types,
        event_rules=rules,
        feedback_queue_url=urls.get(FEEDBACK_QUEUE, ""),
    )


def _create_configuration_set(
    resource: TemplateResource,
    template: PipelineTemplate,
    sesv2: SESV2Client,
    warnings: list[str],
    name_prefix: str,
) -> str:
    resolver = template.resolver
    where = resource.logical_id
    for name in resource.properties:
        if name not in (*CONFIGURATION_SET_OPTIONS, "Name", "Tags"):
            warnings.append(f"{where}.{name} is not reproduced locally")
    name = str(
        resolver.resolve(resource.properties.get("Name"), f"{where}.Name")
        or f"{name_prefix}-{where}"
    )
    options = {
        option: resolver.resolve(resource.properties[option], f"{where}.{option}")
        for option in CONFIGURATION_SET_OPTIONS
        if option in resource.properties
    }
    sesv2.create_configuration_set(ConfigurationSetName=name, **options)
    resolver.refs[where] = name
    return name


def _ses_event_types(template: PipelineTemplate, warnings: list[str]) -> dict[str, frozenset[str]]:
    """Configuration set -> the event types its enabled EventBridge destinations match."""
    published: dict[str, frozenset[str]] = {}
    for resource in template.event_destinations:
        if not template.exists(resource):
            continue
        where = resource.logical_id
        properties = template.resolver.resolve(resource.properties, where)
        destination = properties.get("EventDestination", {})
        if not destination.get("Enabled", False):
            continue
        if "EventBridgeDestination" not in destination:
            kinds = sorted(set(destination) - {"Name", "Enabled", "MatchingEventTypes"})
            warnings.append(f"{where}: only EventBridge destinations are reproduced, not {kinds}")
            continue
        configuration_set = str(properties["ConfigurationSetName"])
        types = frozenset(_event_type(value) for value in destination["MatchingEventTypes"])
        published[configuration_set] = published.get(configuration_set, frozenset()) | types
    return published


def _event_type(value: str) -> str:
    """CloudFormation's ``renderingFailure`` or ``bounce`` as SESv2's ``RENDERING_FAILURE``."""
    text = str(value)
    if text.isupper():  # already SESv2's form
        return text
    return "".join(f"_{c}" if c.isupper() else c for c in text).upper()


def _event_rules(
    template: PipelineTemplate, queue_urls: Mapping[str, str], warnings: list[str]
) -> tuple[EventRule, ...]:
    """The default bus's enabled rules and their SQS targets, as URLs."""
    resolver = template.resolver
    url_by_arn = {resolver.attributes[(queue, "Arn")]: url for queue, url in queue_urls.items()}
    rules = []
    for resource in template.event_rules:
        where = resource.logical_id
        properties = resource.properties
        if not template.exists(resource) or "EventPattern" not in properties:
            continue
        if resolver.resolve(properties.get("State", "ENABLED"), f"{where}.State") != "ENABLED":
            continue
        if properties.get("EventBusName", "default") != "default":
            continue
        targets = resolver.resolve(properties.get("Targets", []), f"{where}.Targets")
        urls = []
        for target in targets:
            if str(target["Arn"]) in url_by_arn:
                urls.append(url_by_arn[str(target["Arn"])])
            else:
                warnings.append(
                    f"{where}: target {target.get('Id')} is not an SQS queue of the template"
                )
        try:
            rules.append(
                EventRule(
                    where,
                    resolver.resolve(properties["EventPattern"], f"{where}.EventPattern"),
                    tuple(urls),
                )
            )
        except UnsupportedPatternError as error:
            raise TemplateError(str(error)) from None
    return tuple(rules)


def _queue_attributes(
    queue: TemplateResource, template: PipelineTemplate, warnings: list[str]
) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for name, raw in queue.properties.items():
        if name in QUEUE_PROPERTIES_NOT_REPRODUCED:
            continue
        if name not in QUEUE_ATTRIBUTES:
            warnings.append(f"{queue.logical_id}.{name} is not reproduced locally")
            continue
        value = template.resolver.resolve(raw, f"{queue.logical_id}.{name}")
        attributes[QUEUE_ATTRIBUTES[name]] = _as_text(value)
    return attributes


def _create_table(
    table: TemplateResource,
    template: PipelineTemplate,
    dynamodb: DynamoDBClient,
    warnings: list[str],
    name_prefix: str,
) -> str:
    resolver = template.resolver
    used = (*TABLE_CREATE_PROPERTIES, *TABLE_UPDATE_PROPERTIES, "TableName")
    for name in table.properties:
        if name not in used and name not in TABLE_PROPERTIES_NOT_REPRODUCED:
            warnings.append(f"{table.logical_id}.{name} is not reproduced locally")
    properties = {
        name: resolver.resolve(value, f"{table.logical_id}.{name}")
        for name, value in table.properties.items()
        if name in used
    }
    name = str(properties.get("TableName") or f"{name_prefix}-{table.logical_id}")
    request: dict[str, Any] = {
        key: properties[key] for key in TABLE_CREATE_PROPERTIES if key in properties
    }
    description = dynamodb.create_table(TableName=name, **request)["TableDescription"]
    if ttl := properties.get("TimeToLiveSpecification"):
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={
                "Enabled": bool(ttl["Enabled"]),
                "AttributeName": str(ttl["AttributeName"]),
            },
        )
    if pitr := properties.get("PointInTimeRecoverySpecification"):
        dynamodb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={
                "PointInTimeRecoveryEnabled": bool(pitr.get("PointInTimeRecoveryEnabled"))
            },
        )
    resolver.refs[table.logical_id] = name
    resolver.attributes[(table.logical_id, "Arn")] = description["TableArn"]
    return name


def _as_text(value: Any) -> str:
    """An attribute or environment value as SQS and Lambda hold them: text, JSON for objects."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
