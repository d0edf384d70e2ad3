"""The task runner's idempotency store keys a task exactly as Powertools' layer did.

A task sent before a deploy must be found by the runner after it: the key of a task id
may never change, whichever persistence layer computes it.
"""

from __future__ import annotations

import uuid

import boto3
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
)

from shared.task_runner import IDEMPOTENCY_KEY_PREFIX, TaskIdempotencyStore


def configured(layer: DynamoDBPersistenceLayer) -> DynamoDBPersistenceLayer:
    layer.configure(IdempotencyConfig(), function_name="any", key_prefix=IDEMPOTENCY_KEY_PREFIX)
    return layer


def key_of(layer: DynamoDBPersistenceLayer, task_id: str) -> str | None:
    # Powertools types the data as a dict; the runner's data is the task id, a string.
    return layer._get_hashed_idempotency_key(task_id)  # type: ignore[arg-type]


def test_a_task_ids_key_is_the_one_powertools_layer_computes() -> None:
    # Given Powertools' own DynamoDB layer and the runner's store, configured alike
    client = boto3.client("dynamodb", region_name="us-east-1")
    powertools = configured(DynamoDBPersistenceLayer(table_name="t", boto3_client=client))
    store = configured(TaskIdempotencyStore("t", client))
    task_ids = [str(uuid.uuid4()) for _ in range(3)]

    # When each computes the key of the same task ids, the runner's twice per task
    keys = [key_of(store, task_id) for task_id in task_ids * 2]

    # Then every key is Powertools' key of that task id
    expected = [key_of(powertools, task_id) for task_id in task_ids * 2]
    assert keys == expected
    assert keys[0] is not None and keys[0].startswith(f"{IDEMPOTENCY_KEY_PREFIX}#")
