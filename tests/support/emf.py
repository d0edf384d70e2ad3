"""Reading the metrics Powertools printed as CloudWatch embedded metric format (EMF)."""

from __future__ import annotations

import json


def emitted_metrics(stdout: str) -> dict[str, list[float]]:
    """The values of every metric in the EMF lines of ``stdout``, in the order printed."""
    values: dict[str, list[float]] = {}
    for line in stdout.splitlines():
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for definition in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = blob[definition["Name"]]
            values.setdefault(definition["Name"], []).extend(
                value if isinstance(value, list) else [value]
            )
    return values
