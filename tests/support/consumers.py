"""The worker's consumers as tests drive them: one queue each, metrics and log lines at hand."""

from __future__ import annotations

import io
import json
from typing import Any
from uuid import uuid4

from aws_lambda_powertools import Logger
from mypy_boto3_sqs import SQSClient
from sqlalchemy.engine import Engine

from ecs_service.worker.feedback import FeedbackConsumer, SqsFeedbackReceiver
from ecs_service.worker.results import ResultsConsumer
from shared.adapters.sqs_receiver import SqsResultReceiver
from tests.support.fakes import RecordedMetrics


class _Driven:
    """A consumer's metrics and log lines, kept for the test to read."""

    def __init__(self, kind: str) -> None:
        self.metrics = RecordedMetrics()
        self._log = io.StringIO()
        self.logger = Logger(service=f"{kind}-test-{uuid4().hex[:8]}", stream=self._log)

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._log.getvalue().splitlines()]


class Results(_Driven):
    """A consumer of one result queue, with its metrics and log lines at hand."""

    def __init__(self, engine: Engine, sqs: SQSClient, queue_url: str) -> None:
        super().__init__("results")
        self.consumer = ResultsConsumer(
            engine,
            SqsResultReceiver(sqs, queue_url, wait_seconds=0),
            logger=self.logger,
            metrics=self.metrics,
        )

    def consume_once(self) -> int:
        return self.consumer.consume_once()


class Feedback(_Driven):
    """A consumer of one feedback queue, with its metrics and log lines at hand."""

    def __init__(self, engine: Engine, sqs: SQSClient, queue_url: str) -> None:
        super().__init__("feedback")
        self.sqs, self.queue_url = sqs, queue_url
        self.consumer = FeedbackConsumer(
            engine,
            SqsFeedbackReceiver(sqs, queue_url, wait_seconds=0),
            logger=self.logger,
            metrics=self.metrics,
        )

    def publish(self, *bodies: str) -> None:
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def consume(self, *bodies: str) -> int:
        """Publish ``bodies`` and consume them in one batch."""
        self.publish(*bodies)
        return self.consumer.consume_once()

    def count(self, name: str) -> float:
        return sum(self.metrics.values.get(name, []))
