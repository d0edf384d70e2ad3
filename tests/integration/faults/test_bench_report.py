"""``bench.faults`` turns the fault tests' own outcomes into the report's figures."""

from __future__ import annotations

import json
from pathlib import Path

from bench.faults import SCENARIOS, build_result, read_junit, read_observations

DUPLICATES = "test_a_task_delivered_twice_is_sent_once"
RESTART = "test_the_api_answers_503_while_postgres_restarts_then_recovers_by_itself"


def test_a_scenario_is_met_only_when_its_test_passed(tmp_path: Path) -> None:
    # Given a JUnit report where one scenario passed, one failed and one was an xfail,
    # and what the passing one observed
    junit = tmp_path / "junit.xml"
    junit.write_text(
        f"""<testsuites><testsuite>
        <testcase name="{DUPLICATES}" time="4.5"/>
        <testcase name="{RESTART}" time="9.0">
          <failure message="AssertionError: assert {{UUID('1')}} == set()">trace</failure>
        </testcase>
        <testcase name="test_transient_ses_errors_are_retried_until_every_email_is_sent_once"
                  time="3.0"><skipped type="pytest.xfail" message="known"/></testcase>
        </testsuite></testsuites>""",
        encoding="utf-8",
    )
    observed = tmp_path / "observations.jsonl"
    observed.write_text(
        json.dumps({"scenario": DUPLICATES, "messages": 20, "seconds": 4.2, "deliveries": 60})
        + "\n",
        encoding="utf-8",
    )

    # When the bench builds its result
    result = build_result(20, read_junit(junit), read_observations(observed), 30.0)

    # Then every scenario has a figure; only the passing one is met, with its observations
    met = {figure.name.split(":")[0]: figure.met for figure in result.figures}
    assert len(result.figures) == len(SCENARIOS)
    assert met[SCENARIOS[DUPLICATES]] is True
    assert met[SCENARIOS[RESTART]] is False
    assert list(met.values()).count(True) == 1
    duplicates = next(f for f in result.figures if f.name.startswith(SCENARIOS[DUPLICATES]))
    assert (duplicates.value, duplicates.unit) == (4.2, "s")
    assert any("deliveries 60" in note for note in result.notes)
    assert any("assert {UUID('1')} == set()" in note for note in result.notes)
