"""A relay that dies between its send to SQS and its commit, as a child process.

    python -m tests.integration.faults.crashing_relay DATABASE_URL TASK_QUEUE_URL CLAIM_SIZE

It is the real ``Relay`` with the real ``SqsTaskProducer`` (boto3 reaches the moto server
through ``AWS_ENDPOINT_URL``); once SQS has taken the claimed tasks, the process
SIGKILLs itself, so the claim's transaction never commits: what an out-of-memory kill or
a lost host does to a worker at the worst moment.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from sqlalchemy import create_engine

from ecs_service.worker.relay import Relay
from shared.adapters.sqs import SqsTaskProducer
from shared.contracts import TaskEnvelope


class SendThenDie:
    """The real producer; right after a successful send, SIGKILL this process."""

    def __init__(self, real: SqsTaskProducer) -> None:
        self._real = real

    def send(self, tasks: Sequence[TaskEnvelope[Any]], **options: Any) -> None:
        # Whatever else the port passes (trace context, say) goes through untouched.
        self._real.send(tasks, **options)
        print(f"sent {len(tasks)} task(s); dying before the commit", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    database_url, task_queue_url, claim_size = argv
    relay = Relay(
        create_engine(database_url),
        SendThenDie(SqsTaskProducer(boto3.client("sqs"), task_queue_url)),
        claim_size=int(claim_size),
        logger=Logger(service="crashing-relay"),
        metrics=Metrics(namespace="HeraldTests"),
    )
    relay.relay_due_messages()
    print("the relay committed: it was meant to die first", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
