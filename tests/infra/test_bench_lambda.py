"""The Lambda benchmarks run, with tiny sizes, and write sane results; the fakes are honest.

``bench.task_runner`` and ``bench.cold_start`` each run in their own process (the first
pins itself to one core) and write to a temporary results folder. The cold start run also
checks that ``src/lambda-init-modules.txt`` still lists every module the handler loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bench.lambda_support.fakes import IDEMPOTENCY_TABLE, FakeDynamoDB
from tests.conftest import REPO_ROOT
from tests.infra.conftest import python313

CONDITION = (
    "attribute_not_exists(#id) OR #expiry < :now OR "
    "(#status = :inprogress AND attribute_exists(#in_progress_expiry) "
    "AND #in_progress_expiry < :now_in_millis)"
)
NAMES = {
    "#id": "id",
    "#expiry": "expiration",
    "#status": "status",
    "#in_progress_expiry": "in_progress_expiration",
}


def run_bench(name: str, results: Path, *args: str) -> dict[str, Any]:
    subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--results-dir", str(results), *args],
        cwd=REPO_ROOT,
        check=True,
        timeout=180,
    )
    result: dict[str, Any] = json.loads((results / f"{name}.json").read_text())
    return result


def claim(
    table: FakeDynamoDB, key: str, *, now: int, expiry: int, status: str = "INPROGRESS"
) -> None:
    """A put as Powertools' idempotency layer makes it."""
    table.put_item(
        TableName=IDEMPOTENCY_TABLE,
        Item={
            "id": {"S": key},
            "expiration": {"N": str(expiry)},
            "status": {"S": status},
            "in_progress_expiration": {"N": str(now * 1000 + 60_000)},
        },
        ConditionExpression=CONDITION,
        ExpressionAttributeNames=NAMES,
        ExpressionAttributeValues={
            ":now": {"N": str(now)},
            ":now_in_millis": {"N": str(now * 1000)},
            ":inprogress": {"S": "INPROGRESS"},
        },
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )


def test_fake_dynamodb_refuses_a_second_claim_of_a_live_record_with_the_old_item() -> None:
    table = FakeDynamoDB()
    claim(table, "task-1", now=1_000, expiry=5_000)

    with pytest.raises(ClientError) as refused:
        claim(table, "task-1", now=1_001, expiry=5_001)

    assert refused.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert refused.value.response["Item"]["status"] == {"S": "INPROGRESS"}  # type: ignore[typeddict-item]


def test_fake_dynamodb_lets_an_expired_record_be_claimed_again() -> None:
    table = FakeDynamoDB()
    claim(table, "task-1", now=1_000, expiry=2_000, status="COMPLETED")

    claim(table, "task-1", now=3_000, expiry=9_000)

    assert table.items["task-1"]["expiration"] == {"N": "9000"}


def test_task_runner_benchmark_writes_a_sane_result(tmp_path: Path) -> None:
    result = run_bench("task_runner", tmp_path, "--records", "40", "--rounds", "1")

    [figure] = result["figures"]
    assert figure["unit"] == "records/s"
    assert figure["value"] > 0
    assert figure["baseline"] > 0
    assert figure["met"] == (figure["value"] >= 0.5 * figure["baseline"])
    assert "idempotency layer" in " ".join(result["notes"])


@pytest.mark.skipif(python313() is None, reason="the cold start needs a python3.13")
def test_cold_start_benchmark_writes_a_sane_result_and_the_module_list_is_current(
    tmp_path: Path,
) -> None:
    result = run_bench("cold_start", tmp_path, "--runs", "1", "--only-default")

    figures = {figure["name"]: figure for figure in result["figures"]}
    init = figures["handler init, median"]
    assert 0 < init["baseline"] < init["value"]  # the handler imports boto3 and more
    assert init["met"] == (init["value"] <= 1.5 * init["baseline"])
    size = figures["zipped artifact (arm64)"]
    assert size["met"] is True and 1 < size["value"] <= 5
    assert (tmp_path / "cold_start_runs.png").is_file()
    # and the committed module list is what the handler loads: regenerate it if this fails
    # (python -m bench.cold_start --write-manifest)
    assert result["extra"]["manifest_unlisted"] == []
    assert result["extra"]["manifest_stale"] == []
