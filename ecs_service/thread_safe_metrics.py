"""Powertools Metrics for the ECS processes, whose threads add and flush concurrently.

Powertools keeps one metric set per process (class attributes shared by every
``Metrics``) and neither ``add_metric`` nor ``flush_metrics`` locks it: a flush
serialising the set while another thread adds to it can raise ("dictionary changed size
during iteration") or drop the value added between serialising and clearing. The
worker's relay and results threads, and the api's request threads, therefore add and
flush through one lock.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit


class MetricRecorder(Protocol):
    """What a component needs to count something: Powertools ``Metrics`` or the locked one."""

    def add_metric(self, name: str, unit: MetricUnit | str, value: float) -> None: ...


class ThreadSafeMetrics:
    """Adds to and flushes a Powertools ``Metrics`` under one lock.

    Parameters
    ----------
    metrics
        The process's Powertools Metrics (namespace and default dimensions set).
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()

    def add_metric(self, name: str, unit: MetricUnit | str, value: float) -> None:
        """Add one value to the metric set; it is published by the next ``flush``."""
        with self._lock:
            self._metrics.add_metric(name=name, unit=unit, value=value)

    def flush(self) -> None:
        """Print the values added so far as one EMF line and empty the set; no-op if empty."""
        with self._lock:
            if self._metrics.metric_set:
                self._metrics.flush_metrics()
