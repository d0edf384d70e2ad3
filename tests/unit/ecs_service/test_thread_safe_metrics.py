"""ThreadSafeMetrics: threads adding while another flushes lose and repeat nothing."""

from __future__ import annotations

import threading

import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from ecs_service.thread_safe_metrics import ThreadSafeMetrics
from tests.support.emf import emitted_metrics

THREADS = 8
ADDS_PER_THREAD = 500


def test_concurrent_adds_and_flushes_publish_every_value_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given one process-wide metric set, emptied, shared by several threads
    powertools = Metrics(namespace="HeraldTests", service="test")
    powertools.clear_metrics()
    published = ThreadSafeMetrics(powertools)
    capsys.readouterr()
    adding_done = threading.Event()

    def add() -> None:
        for _ in range(ADDS_PER_THREAD):
            published.add_metric(name="MessagesCreated", unit=MetricUnit.Count, value=1)

    def flush_until_done() -> None:
        while not adding_done.is_set():
            published.flush()

    # When they add while another thread keeps flushing
    flusher = threading.Thread(target=flush_until_done)
    flusher.start()
    adders = [threading.Thread(target=add) for _ in range(THREADS)]
    for thread in adders:
        thread.start()
    for thread in adders:
        thread.join()
    adding_done.set()
    flusher.join()
    published.flush()

    # Then every value is published exactly once
    assert sum(emitted_metrics(capsys.readouterr().out)["MessagesCreated"]) == (
        THREADS * ADDS_PER_THREAD
    )


def test_flush_with_nothing_added_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # Given an empty metric set
    powertools = Metrics(namespace="HeraldTests", service="test")
    powertools.clear_metrics()
    capsys.readouterr()

    # When it is flushed
    ThreadSafeMetrics(powertools).flush()

    # Then no EMF line (and no "no metrics" warning) is printed
    assert emitted_metrics(capsys.readouterr().out) == {}
