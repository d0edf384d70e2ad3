"""The local SES, as botocore sees it: moto behind the local endpoint's SES behaviour.

The module starts a local AWS endpoint on a free port (in this process), creates the
template's resources in it, and talks to it with real clients, so what is checked is
what the task runner's client gets, and, for the mailbox simulator, what the worker reads
from the feedback queue the template makes.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from herald_local.local_aws import LocalAwsEndpoint
from herald_local.pipeline_resources import LocalPipeline, create_pipeline_resources
from herald_local.ses_events import EVENTS_PATH
from herald_local.ses_simulator import SesEventRouting
from herald_local.template import read_pipeline_template
from tests.integration.conftest import REPO_ROOT

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient

SENDER = "herald@example.com"


def client_options(endpoint: LocalAwsEndpoint) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint.url,
        "region_name": "us-east-1",
        "aws_access_key_id": "herald-local",
        "aws_secret_access_key": "herald-local",
        # One attempt: the test sees SES's answer, not botocore's retries of it.
        "config": Config(retries={"max_attempts": 1, "mode": "standard"}),
    }


@dataclass
class LocalSes:
    endpoint: LocalAwsEndpoint
    pipeline: LocalPipeline
    sesv2: SESV2Client
    sqs: SQSClient

    def send(self, *to: str, configuration_set: str | None = None) -> str:
        request: dict[str, Any] = {
            "FromEmailAddress": SENDER,
            "Destination": {"ToAddresses": list(to)},
            "Content": {"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "Hi"}}}},
            "EmailTags": [
                {"Name": "herald-message-id", "Value": "m-1"},
                {"Name": "herald-tenant-id", "Value": "t-1"},
            ],
            "ConfigurationSetName": configuration_set or self.pipeline.configuration_set,
        }
        return self.sesv2.send_email(**request)["MessageId"]

    def feedback(self, expected: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The feedback queue's messages, once ``expected`` have arrived (or the timeout)."""
        bodies: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(bodies) < expected and time.monotonic() < deadline:
            for message in self.sqs.receive_message(
                QueueUrl=self.pipeline.feedback_queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
            ).get("Messages", []):
                bodies.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.pipeline.feedback_queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                )
        return bodies


def reset_moto(endpoint: LocalAwsEndpoint) -> None:
    """Forget every resource: moto's state is per process, and other modules use the names."""
    request = urllib.request.Request(endpoint.url + "/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass


@dataclass
class Routed:
    endpoint: LocalAwsEndpoint
    pipeline: LocalPipeline
    routing: SesEventRouting


@pytest.fixture(scope="module")
def routed() -> Iterator[Routed]:
    """The template's resources on a local endpoint whose SES publishes its events."""
    endpoint = LocalAwsEndpoint(0).start()
    reset_moto(endpoint)
    options = client_options(endpoint)
    sqs: SQSClient = boto3.client("sqs", **options)
    template = read_pipeline_template(REPO_ROOT / "template.yaml", {"SenderEmail": SENDER})
    pipeline = create_pipeline_resources(
        template,
        sender_email=SENDER,
        sqs=sqs,
        dynamodb=boto3.client("dynamodb", **options),
        sesv2=boto3.client("sesv2", **options),
    )
    routing = SesEventRouting(
        sqs=sqs, event_types=pipeline.ses_event_types, rules=pipeline.event_rules
    )
    endpoint.ses_simulator.publish_to(routing)
    yield Routed(endpoint, pipeline, routing)
    reset_moto(endpoint)
    endpoint.stop()


def local_ses_at(endpoint: LocalAwsEndpoint, routed: Routed) -> LocalSes:
    options = client_options(endpoint)
    ses = LocalSes(
        endpoint, routed.pipeline, boto3.client("sesv2", **options), boto3.client("sqs", **options)
    )
    # Every test waits for all the events it causes: what an earlier one left is read here.
    url = routed.pipeline.feedback_queue_url
    while messages := ses.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", []):
        for message in messages:
            ses.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return ses


@pytest.fixture
def local_ses(routed: Routed) -> LocalSes:
    """The module's local SES, its feedback queue empty."""
    return local_ses_at(routed.endpoint, routed)


@pytest.fixture
def rate_limited_ses(routed: Routed) -> Iterator[LocalSes]:
    """The same resources behind a second endpoint, whose SES takes one recipient per 10 s.

    So slow that the second send of a test is over the rate even on a loaded machine.
    """
    endpoint = LocalAwsEndpoint(0, ses_max_send_rate=0.1).start()
    endpoint.ses_simulator.publish_to(routed.routing)
    yield local_ses_at(endpoint, routed)
    endpoint.stop()


def test_a_send_over_the_maximum_send_rate_is_a_throttling_client_error(
    rate_limited_ses: LocalSes,
) -> None:
    # Given the local SES at one recipient per 10 s, and one email just sent
    rate_limited_ses.send("first@example.org")

    # When a second email is sent within those 10 s
    with pytest.raises(ClientError) as refused:
        rate_limited_ses.send("second@example.org")

    # Then botocore raises SES's throttling error, as SES answers it
    error = refused.value.response
    assert error["Error"]["Code"] == "Throttling"
    assert error["Error"]["Message"] == "Maximum sending rate exceeded."
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_the_configuration_set_and_event_routing_come_from_the_template(
    local_ses: LocalSes,
) -> None:
    # Given the template's resources, created locally
    pipeline = local_ses.pipeline

    # Then the task runner sends through the template's configuration set, which exists
    assert pipeline.configuration_set
    assert pipeline.function_environment["SES_CONFIGURATION_SET"] == pipeline.configuration_set
    found = local_ses.sesv2.get_configuration_set(ConfigurationSetName=pipeline.configuration_set)
    assert found["SuppressionOptions"]["SuppressedReasons"] == ["BOUNCE", "COMPLAINT"]
    # And its EventBridge destination's event types, and the rule to the feedback queue
    assert {"SEND", "DELIVERY", "BOUNCE", "COMPLAINT"} <= pipeline.ses_event_types[
        pipeline.configuration_set
    ]
    assert [rule.queue_urls for rule in pipeline.event_rules] == [(pipeline.feedback_queue_url,)]
    assert pipeline.warnings == ()


def test_a_bounce_reaches_the_feedback_queue_in_eventbridge_envelope_after_the_send(
    local_ses: LocalSes,
) -> None:
    # Given the local SES publishing through the template's rule
    # When an email to the simulator's bounce address is accepted
    message_id = local_ses.send("bounce@simulator.amazonses.com")

    # Then the feedback queue gets its Send and Bounce, as EventBridge delivers them
    events = local_ses.feedback(expected=2)
    assert sorted(event["detail-type"] for event in events) == ["Email Bounced", "Email Sent"]
    bounce = next(event for event in events if event["detail-type"] == "Email Bounced")
    assert bounce["source"] == "aws.ses"
    assert bounce["detail"]["eventType"] == "Bounce"
    assert bounce["detail"]["mail"]["messageId"] == message_id
    assert bounce["detail"]["mail"]["tags"]["herald-message-id"] == ["m-1"]
    assert bounce["detail"]["bounce"]["bouncedRecipients"][0]["diagnosticCode"] == (
        "smtp; 550 5.1.1 user unknown"
    )


def test_a_throttled_send_publishes_nothing(rate_limited_ses: LocalSes) -> None:
    # Given the local SES at one recipient per 10 s, that recipient just used
    rate_limited_ses.send("reader@example.org")

    # When a second send is throttled
    with pytest.raises(ClientError, match="Maximum sending rate exceeded"):
        rate_limited_ses.send("success@simulator.amazonses.com")

    # Then only the first email's Send and Delivery are published
    events = rate_limited_ses.feedback(expected=3, timeout=3)
    assert [event["detail"]["mail"]["destination"] for event in events] == [
        ["reader@example.org"],
        ["reader@example.org"],
    ]


def test_a_send_naming_an_unknown_configuration_set_is_refused_as_ses_refuses_it(
    local_ses: LocalSes,
) -> None:
    # Given the local SES
    # When an email names a configuration set that does not exist
    with pytest.raises(ClientError) as refused:
        local_ses.send("reader@example.org", configuration_set="no-such-set")

    # Then SES's NotFoundException, and nothing is published
    assert refused.value.response["Error"]["Code"] == "NotFoundException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert local_ses.feedback(expected=1, timeout=2) == []


def test_what_was_published_is_listed_for_the_mailbox(local_ses: LocalSes) -> None:
    # Given an email to the complaint address, and its events published
    message_id = local_ses.send("complaint@simulator.amazonses.com")
    local_ses.feedback(expected=3)

    # When the mailbox asks the local endpoint what was published
    with urllib.request.urlopen(local_ses.endpoint.url + EVENTS_PATH, timeout=5) as answer:
        published = json.load(answer)

    # Then it lists the email's events, oldest first, with the complaint's type and the
    # send's own tags
    events = published[message_id]
    assert [event["type"] for event in events] == ["Send", "Delivery", "Complaint"]
    assert events[2]["detail"] == {"complaintFeedbackType": "abuse"}
    assert events[0]["tags"] == {"herald-message-id": "m-1", "herald-tenant-id": "t-1"}
