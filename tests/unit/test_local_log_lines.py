"""The local system's terminal: log lines condensed for people, idle metrics left out."""

from __future__ import annotations

import io
import json

from herald_local.log_lines import Terminal


def emf_line(**values: float) -> str:
    metrics = [{"Name": name, "Unit": "Count"} for name in values]
    return json.dumps(
        {
            "_aws": {"CloudWatchMetrics": [{"Namespace": "Herald", "Metrics": metrics}]},
            **{name: [value] for name, value in values.items()},
        }
    )


def test_a_metrics_line_of_zeros_is_not_shown_and_one_that_counts_something_is() -> None:
    # Given the worker's idle backlog count, then a pass that relayed three emails
    out = io.StringIO()
    terminal = Terminal(out)

    # When both reach the terminal
    terminal.write("worker", emf_line(RelayBacklog=0.0))
    terminal.write("worker", emf_line(MessagesRelayed=3.0, RelayLag=0.0))

    # Then only the one that says something is shown
    assert out.getvalue().splitlines() == ["[worker]   metrics MessagesRelayed=3 RelayLag=0"]
