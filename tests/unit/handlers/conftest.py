"""A harness that runs the real Lambda handler on moto's SQS, SES and DynamoDB."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from moto.sqs.models import sqs_backends
from mypy_boto3_sqs import SQSClient

from shared.contracts import TaskResult
from shared.observability import logger
from tests.support.lambdas import LambdaContext, LogCapture
from tests.support.pipeline import template_pipeline
from tests.support.queues import drain

EVENTS = Path(__file__).resolve().parents[3] / "events"
SENDER = "herald@example.com"
PREFIX = "herald"  # the resources are <PREFIX>-<the template's logical ID>
TASK_QUEUE_NAME = f"{PREFIX}-TaskQueue"


@dataclass
class TaskRunnerHarness:
    """The handler module loaded against moto, with its queues and a way to inject faults."""

    module: ModuleType
    sqs: SQSClient
    task_queue_url: str
    task_dlq_url: str
    result_queue_url: str
    logs: LogCapture
    throttled_recipients: set[str] = field(default_factory=set)
    # recipient -> (SES error code, message) SES answers 400 with for it
    refused_recipients: dict[str, tuple[str, str]] = field(default_factory=dict)

    def invoke(self, event_file: str) -> dict[str, Any]:
        event = json.loads((EVENTS / event_file).read_text())
        response: dict[str, Any] = self.module.lambda_handler(event, LambdaContext())
        return response

    def results(self) -> list[TaskResult]:
        return [
            TaskResult.model_validate_json(m["Body"])
            for m in drain(self.sqs, self.result_queue_url)
        ]

    def dead_letters(self) -> list[dict[str, Any]]:
        return drain(self.sqs, self.task_dlq_url)

    def deferred_tasks(self) -> list[Any]:
        """The messages on the task queue, delayed ones included (moto's own view)."""
        queue = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].queues[TASK_QUEUE_NAME]
        return list(queue._messages)  # noqa: SLF001 - a delayed message cannot be received yet

    def redelivery_of(self, message: Any) -> dict[str, Any]:
        """An SQS event holding ``message`` as Lambda would deliver it, once its delay passed."""
        return {
            "Records": [
                {
                    "messageId": message.id,
                    "receiptHandle": "AQEBdeferred",
                    "body": message.body,
                    "attributes": {
                        "ApproximateReceiveCount": "1",
                        "SentTimestamp": "1795510800000",
                        "SenderId": "AROAEXAMPLEID:herald-task-runner",
                        "ApproximateFirstReceiveTimestamp": "1795510800050",
                    },
                    "messageAttributes": {
                        name: {"stringValue": value["StringValue"], "dataType": value["DataType"]}
                        for name, value in message.message_attributes.items()
                    },
                    "md5OfBody": "0" * 32,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{TASK_QUEUE_NAME}",
                    "awsRegion": "us-east-1",
                }
            ]
        }

    def invoke_event(self, event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.module.lambda_handler(event, LambdaContext())
        return response

    @staticmethod
    def sent_emails() -> list[Any]:
        return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)

    def ses_faults(
        self, params: dict[str, Any], **_: Any
    ) -> tuple[AWSResponse, dict[str, Any]] | None:
        """A botocore ``before-call`` hook: SES answers 429 for the throttled recipients,
        and 400 with the chosen error for the refused ones."""
        body = params.get("body", b"")
        body = body.decode() if isinstance(body, bytes) else str(body)
        if any(recipient in body for recipient in self.throttled_recipients):
            status = 429
            error = {
                "Code": "TooManyRequestsException",
                "Message": "Maximum sending rate exceeded.",
            }
        else:
            refusals = [r for address, r in self.refused_recipients.items() if address in body]
            if not refusals:
                return None
            status = 400
            error = {"Code": refusals[0][0], "Message": refusals[0][1]}
        response = AWSResponse("https://email.us-east-1.amazonaws.com", status, HTTPHeaders(), None)
        return response, {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}


@pytest.fixture
def task_runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[TaskRunnerHarness]:
    """The real handler, its composition root run inside ``mock_aws`` with fresh resources:
    the template's queues and table (tests/support/pipeline.py)."""
    with mock_aws(), template_pipeline(PREFIX) as pipeline:
        sqs = boto3.client("sqs")
        task_queue_url = pipeline.task_queue_url
        task_dlq_url = pipeline.task_dead_letter_queue_url
        result_queue_url = pipeline.result_queue_url
        for name, value in {
            "RESULT_QUEUE_URL": result_queue_url,
            "TASK_DLQ_URL": task_dlq_url,
            "TASK_QUEUE_URL": task_queue_url,
            "SES_CONFIGURATION_SET": "",
            "IDEMPOTENCY_TABLE": pipeline.table_names["IdempotencyTable"],
            "SENDER_EMAIL": SENDER,
        }.items():
            monkeypatch.setenv(name, value)

        logs = LogCapture()
        harness = TaskRunnerHarness(
            module=ModuleType("unloaded"),
            sqs=sqs,
            task_queue_url=task_queue_url,
            task_dlq_url=task_dlq_url,
            result_queue_url=result_queue_url,
            logs=logs,
        )
        import handlers.task_runner

        harness.module = importlib.reload(handlers.task_runner)
        # Faults hook into the handler's own SES client: a before-call handler may answer
        # in SES's place.
        harness.module.sesv2.meta.events.register("before-call.sesv2.SendEmail", harness.ses_faults)
        logger._logger.addHandler(logs)  # noqa: SLF001 - Powertools exposes no other hook
        try:
            yield harness
        finally:
            logger._logger.removeHandler(logs)  # noqa: SLF001
