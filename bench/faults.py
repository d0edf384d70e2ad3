"""Fault injection at scale: the fault tests of ``tests/integration/faults`` with 1,000 messages.

What it measures
    Each scenario of ``tests/integration/faults`` (SQS unreachable while the worker relays,
    the relay SIGKILLed between its send and its commit, SES throttling one message in
    five, every task delivered three times, PostgreSQL restarted under api load, the
    worker SIGTERMed mid-batch) moves ``HERALD_FAULT_N`` messages through the real relay,
    task runner, idempotency table and results consumer, then checks Herald's promise:
    every message ``sent``, ``failed`` with a reason or dead-lettered; exactly one SES send
    per ``sent`` message; and, for the restart, only 201 or 503 answers, none lost. The
    figure of a scenario is the time it took, from its setup to its last check; its target
    is that every check held, and ``met`` is the test's own outcome.

How
    pytest runs the package in a child process with ``HERALD_FAULT_N`` (1,000 by default)
    and ``HERALD_FAULT_RESULTS`` set: each scenario appends what it observed to that file,
    and the JUnit report says which passed. PostgreSQL, the moto server and the processes
    are the ones the tests start themselves (``tests/integration/conftest.py``).

Run
    .venv/bin/python -m bench.faults [--messages 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.result import BenchResult, Figure

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS = "tests/integration/faults"
TIMEOUT_SECONDS = 3600
TARGET = "every invariant holds"

# Test name -> what the scenario does, in the report's words.
SCENARIOS = {
    "test_the_worker_rides_out_an_sqs_outage_and_catches_up": (
        "SQS unreachable for a few seconds while the worker relays"
    ),
    "test_a_relay_killed_before_its_commit_leaves_rows_scheduled_and_each_email_goes_once": (
        "relay SIGKILLed between its SQS send and its commit"
    ),
    "test_transient_ses_errors_are_retried_until_every_email_is_sent_once": (
        "SES throttles the first send of one message in five"
    ),
    "test_a_task_delivered_twice_is_sent_once": (
        "every task delivered three times (two at once, one late redrive)"
    ),
    "test_the_api_answers_503_while_postgres_restarts_then_recovers_by_itself": (
        "PostgreSQL restarted under api load"
    ),
    "test_a_worker_stopped_mid_batch_finishes_it_and_the_next_worker_sends_the_rest": (
        "worker SIGTERMed mid-batch, then replaced"
    ),
}


@dataclass(frozen=True)
class TestOutcome:
    """One test case of the JUnit report."""

    name: str
    outcome: str  # passed | failed | xfailed | skipped
    seconds: float
    message: str


def read_junit(path: Path) -> dict[str, TestOutcome]:
    outcomes: dict[str, TestOutcome] = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message") or (child.text or "")
            elif child.tag == "skipped":
                kind = child.get("type", "")
                outcome = "xfailed" if "xfail" in kind else "skipped"
                message = child.get("message") or ""
        outcomes[name] = TestOutcome(name, outcome, float(case.get("time", 0)), message)
    return outcomes


def read_observations(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    return {(line := json.loads(text))["scenario"]: line for text in lines if text.strip()}


def run_tests(messages: int, folder: Path) -> tuple[dict[str, TestOutcome], dict[str, Any], float]:
    junit, observations = folder / "junit.xml", folder / "observations.jsonl"
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            TESTS,
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
        ],
        cwd=REPO_ROOT,
        env=os.environ
        | {"HERALD_FAULT_N": str(messages), "HERALD_FAULT_RESULTS": str(observations)},
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    elapsed = time.monotonic() - started
    if not junit.is_file():
        raise RuntimeError("pytest wrote no JUnit report: the fault tests did not run")
    return read_junit(junit), read_observations(observations), elapsed


def build_result(
    messages: int,
    outcomes: dict[str, TestOutcome],
    observations: dict[str, dict[str, Any]],
    elapsed: float,
) -> BenchResult:
    figures: list[Figure] = []
    notes: list[str] = []
    for test_name, title in SCENARIOS.items():
        outcome = outcomes.get(test_name)
        seen = observations.get(test_name, {})
        if outcome is None:
            notes.append(f"**{title}**: did not run (not collected).")
            figures.append(Figure(title, 0.0, "s", target=TARGET, met=False))
            continue
        moved = int(seen.get("messages", messages))
        figures.append(
            Figure(
                f"{title}: {moved:,} messages",
                float(seen.get("seconds", outcome.seconds)),
                "s",
                target=TARGET,
                met=outcome.outcome == "passed",
                higher_is_better=False,
            )
        )
        details = ", ".join(
            f"{key} {value}"
            for key, value in seen.items()
            if key not in ("scenario", "messages", "seconds")
        )
        line = f"**{title}** ({outcome.outcome}): {details or 'no observations recorded'}."
        if outcome.outcome != "passed" and outcome.message:
            line += f" {_first_line(outcome.message)}"
        notes.append(line)
    notes.append(
        f"The whole package ran in {elapsed:.0f} s with {messages:,} messages per scenario; "
        "a scenario's time includes starting its processes and waiting out its fault "
        "(outage and restart windows are fixed, a few seconds each)."
    )
    return BenchResult(
        name="faults",
        title="Fault injection",
        command=f"HERALD_FAULT_N={messages} .venv/bin/python -m bench.faults",
        method=(
            "The fault tests of `tests/integration/faults` (also run by `make test` with 20 "
            f"messages) with {messages:,} messages each, in a pytest child process. Each "
            "scenario drives the real relay, task runner (local SQS event source, "
            "idempotency on DynamoDB, SES, all on the moto server) and results consumer, "
            "injects its fault from outside (a TCP proxy cut or slowed, SIGKILL, SIGTERM, "
            "a throttling SES client, duplicated SQS messages, `pg_ctl stop`/`start`), then "
            "checks that every message is `sent`, `failed` with a reason or in the DLQ, "
            "that each `sent` message went through SES exactly once (moto's record of "
            "sent emails), and for the restart that the api answered only 201 or 503 and "
            "lost nothing it acknowledged. A figure's value is the scenario's duration; "
            "met means every check of the test held."
        ),
        figures=figures,
        notes=notes,
        extra={
            "messages_per_scenario": messages,
            "outcomes": {name: outcome.outcome for name, outcome in outcomes.items()},
            "observations": observations,
        },
    )


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages", type=int, default=int(os.environ.get("HERALD_FAULT_N", "1000"))
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="herald-bench-faults-") as folder:
        outcomes, observations, elapsed = run_tests(args.messages, Path(folder))
    result = build_result(args.messages, outcomes, observations, elapsed)
    path = result.write()
    for figure in result.figures:
        print(f"{figure.name}: {figure.value:.1f} {figure.unit}, met={figure.met}")
    print(f"wrote {path}")
    # A scenario that fails is a finding for the report (met = False), not a broken bench.
    return 0


if __name__ == "__main__":
    sys.exit(main())
