"""Delivery feedback in the root template (with its parts stacks/ses.yaml and the feedback
queue's stacks/queue.yaml inlined): the SES configuration set every send names, its events
through EventBridge's default bus to the encrypted feedback queue (and its DLQ), the task
runner's and the worker's share of it, and the optional sender domain identity."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import pytest
from moto.events.models import EventPattern

from tests.conftest import REPO_ROOT
from tests.infra.conftest import (
    Template,
    function_properties,
    nested_stack_parameters,
    policy_statements,
    properties,
    referenced_id,
)

if TYPE_CHECKING:
    from pathlib import Path

# The SES event types Herald records (CloudFormation's names for SEND, DELIVERY, BOUNCE,
# COMPLAINT, REJECT, DELIVERY_DELAY and RENDERING_FAILURE) and the detail-type EventBridge
# gives each (AWS's EventBridge reference for Amazon SES).
EVENT_TYPES = {
    "send": "Email Sent",
    "delivery": "Email Delivered",
    "bounce": "Email Bounced",
    "complaint": "Email Complaint Received",
    "reject": "Email Rejected",
    "deliveryDelay": "Email Delivery Delayed",
    "renderingFailure": "Email Rendering Failed",
}
# SES's events as the feedback queue receives them (EventBridge's envelope), one per type.
SAMPLE_EVENTS = sorted((REPO_ROOT / "events").glob("ses-feedback-*.json"))
STACK_UUID = {"StackUuid": {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}}
RULE_NAME = "herald-${Environment}-ses-events-${StackUuid}"
SENDER_DOMAIN = {"Fn::Select": [1, {"Fn::Split": ["@", {"Ref": "SenderEmail"}]}]}


def event_destination(template: Template) -> dict[str, Any]:
    destination: dict[str, Any] = properties(template, "SesEventDestination")["EventDestination"]
    return destination


def statement(template: Template, owner: str, sid: str) -> dict[str, Any]:
    (found,) = [
        found.statement
        for found in policy_statements(template)
        if found.owner == owner and found.sid == sid
    ]
    return dict(found)


# ------------------------------------------------------------ the configuration set


def test_configuration_set_requires_tls_and_publishes_reputation_metrics(
    template: Template,
) -> None:
    # Given the configuration set
    configuration_set = properties(template, "SesConfigurationSet")

    # Then its emails go only over TLS, it sends, and SES rates its reputation
    assert configuration_set["DeliveryOptions"] == {"TlsPolicy": "REQUIRE"}
    assert configuration_set["SendingOptions"] == {"SendingEnabled": True}
    assert configuration_set["ReputationOptions"] == {"ReputationMetricsEnabled": True}


def test_configuration_set_uses_ses_suppression_for_bounces_and_complaints(
    template: Template,
) -> None:
    suppression = properties(template, "SesConfigurationSet")["SuppressionOptions"]

    assert sorted(suppression["SuppressedReasons"]) == ["BOUNCE", "COMPLAINT"]


def test_configuration_set_name_is_unique_per_stack_and_fits_sess_limit(
    template: Template,
) -> None:
    # Given the configuration set's name
    name = properties(template, "SesConfigurationSet")["Name"]["Fn::Sub"]

    # Then it is the environment and the stack's UUID, at most 64 characters in the longest
    # environment (SES's limit)
    assert name == ["herald-${Environment}-${StackUuid}", STACK_UUID]
    longest = max(template["Parameters"]["Environment"]["AllowedValues"], key=len)
    assert len(f"herald-{longest}-") + 36 <= 64


# ------------------------------------------------------------ the event destination


def test_event_destination_publishes_every_event_type_herald_records(template: Template) -> None:
    # Given the configuration set's event destination
    destination = event_destination(template)

    # Then it is on, for this configuration set, and publishes the seven event types
    assert properties(template, "SesEventDestination")["ConfigurationSetName"] == {
        "Ref": "SesConfigurationSet"
    }
    assert destination["Enabled"] is True
    assert sorted(destination["MatchingEventTypes"]) == sorted(EVENT_TYPES)


def test_event_destination_is_eventbridges_default_bus(template: Template) -> None:
    destination = event_destination(template)

    assert destination["EventBridgeDestination"] == {
        "EventBusArn": {
            "Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}"
            ":event-bus/default"
        }
    }


# ------------------------------------------------------------------------ the rule


def test_rule_takes_only_this_configuration_sets_ses_events(template: Template) -> None:
    # Given the feedback rule's pattern
    rule = properties(template, "SesFeedbackRule")
    pattern = rule["EventPattern"]

    # Then it matches SES's events of the published types, tagged with this stack's
    # configuration set, on the default bus
    assert "EventBusName" not in rule
    assert pattern["source"] == ["aws.ses"]
    assert sorted(pattern["detail-type"]) == sorted(EVENT_TYPES.values())
    assert pattern["detail"] == {
        "mail": {"tags": {"ses:configuration-set": [{"Ref": "SesConfigurationSet"}]}}
    }


def rule_pattern_for(template: Template, configuration_set: str) -> EventPattern:
    """The rule's pattern as deployed, its configuration set's name resolved, compiled by
    moto's implementation of EventBridge's matching."""
    pattern = copy.deepcopy(properties(template, "SesFeedbackRule")["EventPattern"])
    pattern["detail"]["mail"]["tags"]["ses:configuration-set"] = [configuration_set]
    return EventPattern.load(json.dumps(pattern))


def configuration_set_of(event: dict[str, Any]) -> str:
    (name,) = event["detail"]["mail"]["tags"]["ses:configuration-set"]
    return str(name)


@pytest.mark.parametrize("sample", SAMPLE_EVENTS, ids=[path.stem for path in SAMPLE_EVENTS])
def test_rule_matches_each_ses_event_of_its_configuration_set(
    template: Template, sample: Path
) -> None:
    # Given one of SES's events (events/), and the rule deployed for its configuration set
    event = json.loads(sample.read_text(encoding="utf-8"))
    pattern = rule_pattern_for(template, configuration_set_of(event))

    # When EventBridge matches it; then the rule takes it to the feedback queue
    assert pattern.matches_event(event)


@pytest.mark.parametrize("sample", SAMPLE_EVENTS, ids=[path.stem for path in SAMPLE_EVENTS])
def test_rule_leaves_another_environments_ses_events_alone(
    template: Template, sample: Path
) -> None:
    # Given one of SES's events sent through another environment's configuration set
    event = json.loads(sample.read_text(encoding="utf-8"))
    pattern = rule_pattern_for(template, configuration_set_of(event))
    event["detail"]["mail"]["tags"]["ses:configuration-set"] = ["herald-prod-other-stack"]

    # When EventBridge matches it; then this environment's rule does not take it
    assert not pattern.matches_event(event)


def test_rule_leaves_ses_events_of_sends_without_a_configuration_set_alone(
    template: Template,
) -> None:
    # Given an SES event of a send that named no configuration set (no such tag)
    event = json.loads(SAMPLE_EVENTS[0].read_text(encoding="utf-8"))
    pattern = rule_pattern_for(template, configuration_set_of(event))
    del event["detail"]["mail"]["tags"]["ses:configuration-set"]

    # Then the rule does not take it
    assert not pattern.matches_event(event)


def test_there_is_a_sample_event_for_each_published_event_type(template: Template) -> None:
    # Given the sample events' detail-types
    shown = {json.loads(path.read_text(encoding="utf-8"))["detail-type"] for path in SAMPLE_EVENTS}

    # Then every event type the destination publishes has one the rule is checked against
    assert shown == set(EVENT_TYPES.values())


def test_rule_retries_then_dead_letters_what_it_cannot_deliver(template: Template) -> None:
    # Given the rule's one target
    (target,) = properties(template, "SesFeedbackRule")["Targets"]

    # Then it is the feedback queue, retried for EventBridge's full day, then the DLQ
    assert target["Arn"] == {"Fn::GetAtt": ["FeedbackQueue", "Arn"]}
    assert target["RetryPolicy"] == {
        "MaximumRetryAttempts": 185,
        "MaximumEventAgeInSeconds": 86400,
    }
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["FeedbackDeadLetterQueue", "Arn"]}}


def test_rule_name_is_the_one_the_key_policy_names(template: Template) -> None:
    # Given the rule's fixed name and the key statement that lets EventBridge use the key
    name = properties(template, "SesFeedbackRule")["Name"]["Fn::Sub"]
    key = statement(template, "PipelineKey", "AllowTheFeedbackRuleToDeliverToTheFeedbackQueues")

    # Then the statement's source ARN is exactly that rule's ARN on the default bus
    assert name == [RULE_NAME, STACK_UUID]
    assert key["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"] == [
        "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/" + RULE_NAME,
        STACK_UUID,
    ]
    longest = max(template["Parameters"]["Environment"]["AllowedValues"], key=len)
    assert len(f"herald-{longest}-ses-events-") + 36 <= 64  # EventBridge's limit


def test_key_lets_eventbridge_only_encrypt_for_this_accounts_rule(template: Template) -> None:
    # Given the key statement for EventBridge
    key = statement(template, "PipelineKey", "AllowTheFeedbackRuleToDeliverToTheFeedbackQueues")

    # Then EventBridge may only make and open data keys, for this account's rule
    assert key["Effect"] == "Allow"
    assert key["Principal"] == {"Service": "events.amazonaws.com"}
    assert sorted(key["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert key["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


# ---------------------------------------------------------------------- the queues


@pytest.mark.parametrize("queue_id", ["FeedbackQueue", "FeedbackDeadLetterQueue"])
def test_feedback_queue_is_encrypted_with_the_pipeline_key(
    template: Template, queue_id: str
) -> None:
    assert properties(template, queue_id)["KmsMasterKeyId"] == {"Ref": "PipelineKey"}


def test_feedback_queue_redrives_to_its_dlq_after_five_receives(template: Template) -> None:
    redrive = properties(template, "FeedbackQueue")["RedrivePolicy"]

    assert redrive == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["FeedbackDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }


def test_feedback_dlq_outlives_the_feedback_queue(template: Template) -> None:
    # Given both queues' retention (a message's age counts from its first enqueue)
    source = int(properties(template, "FeedbackQueue")["MessageRetentionPeriod"])
    dlq = int(properties(template, "FeedbackDeadLetterQueue")["MessageRetentionPeriod"])

    # Then a message moved to the DLQ on its last day still has days to be read
    assert dlq > source


def test_only_the_feedback_rule_may_send_to_the_feedback_queues(template: Template) -> None:
    # Given the feedback queues' policy and the rule's fixed name
    policy = properties(template, "FeedbackQueuePolicy")
    allow = statement(template, "FeedbackQueuePolicy", "AllowTheSenderRuleToSend")
    name = properties(template, "SesFeedbackRule")["Name"]["Fn::Sub"]

    # Then it covers both queues and lets EventBridge send only on behalf of the rule
    assert policy["Queues"] == [{"Ref": "FeedbackQueue"}, {"Ref": "FeedbackDeadLetterQueue"}]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert {referenced_id(resource) for resource in allow["Resource"]} == {
        "FeedbackQueue",
        "FeedbackDeadLetterQueue",
    }
    # (the rule's ARN built from its fixed name: a reference to the rule would close a cycle
    # through its target, this queue)
    assert name == [RULE_NAME, STACK_UUID]
    assert allow["Condition"] == {
        "ArnEquals": {
            "aws:SourceArn": {
                "Fn::Sub": [
                    "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/"
                    + RULE_NAME,
                    STACK_UUID,
                ]
            }
        }
    }


def test_feedback_queues_have_no_other_policy(template: Template) -> None:
    # Given every queue policy (SQS keeps one policy per queue: a second would replace it)
    owners = {
        str(referenced_id(queue)): logical_id
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::SQS::QueuePolicy"
        for queue in resource["Properties"]["Queues"]
    }

    # Then FeedbackQueuePolicy is the feedback queues' only one
    assert owners["FeedbackQueue"] == owners["FeedbackDeadLetterQueue"] == "FeedbackQueuePolicy"


# ------------------------------------------------------------- runner and worker


def test_task_runner_names_the_configuration_set_on_every_send(template: Template) -> None:
    variables = function_properties(template, "TaskRunnerFunction")["Environment"]["Variables"]

    assert variables["SES_CONFIGURATION_SET"] == {"Ref": "SesConfigurationSet"}


def test_backend_gets_the_feedback_queue_and_the_send_rate(template: Template) -> None:
    # Given what the root passes to the backend stack
    passed = nested_stack_parameters(template, "BackendStack")

    # Then the worker can consume the feedback queue and pace sends
    assert passed["FeedbackQueueUrl"] == {"Ref": "FeedbackQueue"}
    assert passed["FeedbackQueueArn"] == {"Fn::GetAtt": ["FeedbackQueue", "Arn"]}
    assert passed["SesMaxSendRate"] == {"Ref": "SesMaxSendRate"}


def test_send_rate_defaults_to_reading_it_from_ses(template: Template) -> None:
    parameter = template["Parameters"]["SesMaxSendRate"]

    assert (parameter["Type"], parameter["Default"], parameter["MinValue"]) == ("Number", 0, 0)


# ------------------------------------------------------- the sender domain identity


def test_sender_domain_identity_is_created_only_when_asked(template: Template) -> None:
    # Given the parameter and the identity resource
    parameter = template["Parameters"]["SenderDomainIdentity"]
    identity = template["Resources"]["SenderDomainEmailIdentity"]

    # Then "none" (the default) creates nothing, and "create" creates it
    assert (parameter["Default"], parameter["AllowedValues"]) == ("none", ["none", "create"])
    assert identity["Condition"] == "CreateSenderDomainIdentity"
    assert template["Conditions"]["CreateSenderDomainIdentity"] == {
        "Fn::Equals": [{"Ref": "SenderDomainIdentity"}, "create"]
    }


def test_sender_domain_identity_signs_with_2048_bit_dkim(template: Template) -> None:
    identity = properties(template, "SenderDomainEmailIdentity")

    assert identity["EmailIdentity"] == SENDER_DOMAIN
    assert identity["DkimAttributes"] == {"SigningEnabled": True}
    assert identity["DkimSigningAttributes"] == {"NextSigningKeyLength": "RSA_2048_BIT"}


def test_sender_domain_identity_has_its_mail_from_domain_and_keeps_sending_without_it(
    template: Template,
) -> None:
    mail_from = properties(template, "SenderDomainEmailIdentity")["MailFromAttributes"]

    assert mail_from["MailFromDomain"]["Fn::Sub"] == [
        "${MailFromSubdomain}.${SenderDomain}",
        {"SenderDomain": SENDER_DOMAIN},
    ]
    assert mail_from["BehaviorOnMxFailure"] == "USE_DEFAULT_VALUE"
    assert template["Parameters"]["MailFromSubdomain"]["Default"] == "mail"


def test_sender_domain_identity_defaults_to_the_configuration_set(template: Template) -> None:
    identity = properties(template, "SenderDomainEmailIdentity")

    assert identity["ConfigurationSetAttributes"] == {
        "ConfigurationSetName": {"Ref": "SesConfigurationSet"}
    }


@pytest.mark.parametrize(
    ("output", "token"),
    [(f"SenderDomainDkimRecord{n}", f"DkimDNSToken{{}}{n}") for n in (1, 2, 3)],
)
def test_each_dkim_record_is_an_output_when_the_identity_is_created(
    template: Template, output: str, token: str
) -> None:
    # Given one DKIM record output
    declared = template["Outputs"][output]

    # Then it exists only with the identity and reads "<name> CNAME <value>"
    assert declared["Condition"] == "CreateSenderDomainIdentity"
    name, value = token.format("Name"), token.format("Value")
    identity = "SenderDomainEmailIdentity"
    assert declared["Value"] == {"Fn::Sub": f"${{{identity}.{name}}} CNAME ${{{identity}.{value}}}"}


@pytest.mark.parametrize(
    ("output", "record"),
    [
        (
            "SenderMailFromMxRecord",
            "${MailFromSubdomain}.${SenderDomain} MX 10 feedback-smtp.${AWS::Region}.amazonses.com",
        ),
        (
            "SenderMailFromSpfRecord",
            '${MailFromSubdomain}.${SenderDomain} TXT "v=spf1 include:amazonses.com ~all"',
        ),
    ],
)
def test_each_mail_from_record_is_an_output_when_the_identity_is_created(
    template: Template, output: str, record: str
) -> None:
    declared = template["Outputs"][output]

    assert declared["Condition"] == "CreateSenderDomainIdentity"
    assert declared["Value"]["Fn::Sub"] == [record, {"SenderDomain": SENDER_DOMAIN}]
