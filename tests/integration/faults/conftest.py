"""Fixtures of the fault scenarios: a fresh task pipeline, and the record a scenario leaves.

When ``HERALD_FAULT_RESULTS`` names a file (``bench.faults`` sets it), each scenario that
held its invariants appends one JSON line to it: its name, how many messages it moved,
how long that took, and what it observed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from tests.integration.faults.pipeline import TaskPipeline, task_pipeline

RecordScenario = Callable[..., None]


@pytest.fixture
def pipeline(engine: Engine, moto_endpoint: str) -> Iterator[TaskPipeline]:
    with task_pipeline(engine, moto_endpoint) as fresh:
        yield fresh


@pytest.fixture
def record_scenario(request: pytest.FixtureRequest) -> RecordScenario:
    """``record_scenario(messages=…, **observed)``: the scenario's line in the bench's results.

    The time is measured from the start of the test (fixtures set up), so it includes
    starting processes and waiting out the injected fault.
    """
    started = time.monotonic()

    def record(*, messages: int, **observed: Any) -> None:
        path = os.environ.get("HERALD_FAULT_RESULTS")
        if not path:
            return
        line = {
            "scenario": request.node.name,
            "messages": messages,
            "seconds": round(time.monotonic() - started, 3),
            **observed,
        }
        with Path(path).open("a", encoding="utf-8") as results:
            results.write(json.dumps(line, default=str) + "\n")

    return record
