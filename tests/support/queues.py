"""Reading what a test left on an SQS queue (moto in-process or the moto server)."""

from __future__ import annotations

from typing import Any

from mypy_boto3_sqs import SQSClient


def drain(sqs: SQSClient, queue_url: str) -> list[dict[str, Any]]:
    """Receive and delete every visible message of the queue, attributes included.

    Without waiting, whatever the queue's long polling (the template's result and feedback
    queues wait 20 s for a message by default)."""
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
    ).get("Messages", []):
        messages.extend(dict(message) for message in batch)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    return messages
