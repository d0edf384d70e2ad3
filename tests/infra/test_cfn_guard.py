"""AWS Control Tower's proactive controls pass on every template, each waiver with its reason.

`make lint` runs tools/cfn-guard/check.py (cfn-guard with AWS's Control Tower rules over
every template, SAM-transformed, Datadog and the site's domain rendered both ways); these
tests hold the same line and keep the waiver file honest.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.infra.conftest import ROOT_TEMPLATE, describe, load_root, load_stack, run_tool

CHECK = REPO_ROOT / "tools" / "cfn-guard" / "check.py"
WAIVERS = REPO_ROOT / "tools" / "cfn-guard" / "waivers.yaml"
GUARD_HOME = REPO_ROOT / ".venv" / "cfn-guard"

if TYPE_CHECKING:
    from pathlib import Path


def require_cfn_guard() -> None:
    if not (GUARD_HOME / "bin" / "cfn-guard").is_file():
        message = "cfn-guard is not installed: run `make lint` (it extracts it into .venv)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """check.py's findings over every template, as JSON."""
    require_cfn_guard()
    result = run_tool([sys.executable, str(CHECK), "check", str(GUARD_HOME), "--json"])
    assert result.returncode in (0, 1), describe(result)
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def waiver_file() -> dict[str, dict[str, dict[str, Any]]]:
    loaded: dict[str, dict[str, dict[str, Any]]] = yaml.safe_load(
        WAIVERS.read_text(encoding="utf-8")
    )
    return loaded


def test_every_finding_is_waived(report: dict[str, Any]) -> None:
    # Given Control Tower's rules over every rendered template
    # Then every failing control/resource pair is in the waiver file
    assert report["unwaived"] == []


def test_every_waiver_still_matches_a_finding(report: dict[str, Any]) -> None:
    # Given the waiver file
    # Then it waives nothing that passes (a fixed resource loses its waiver)
    assert report["stale_waivers"] == []


def test_the_rules_actually_ran(report: dict[str, Any]) -> None:
    # Given the findings (rules that never ran would pass both tests above)
    # Then cfn-guard reported the waived ones, over every template
    assert {template for template, _, _ in report["findings"]} == set(waiver_file())


@pytest.mark.parametrize(
    ("template", "control"),
    [(template, control) for template, controls in waiver_file().items() for control in controls],
)
def test_each_waiver_names_real_resources_and_says_why(template: str, control: str) -> None:
    # Given one control waived in one template (a stack with the templates it nests inlined,
    # as check.py reads it: stacks/backend.yaml's ApiTaskDefinition is its api's, and the
    # root's SiteDistribution is stacks/site.yaml's Distribution)
    waiver = waiver_file()[template][control]
    path = REPO_ROOT / template
    resources = (load_root() if path == ROOT_TEMPLATE else load_stack(path))["Resources"]

    # Then it names a Control Tower control, resources of that template, and its reason
    assert control.startswith("CT.") and ".PR." in control, control
    assert waiver["resources"], control
    assert set(waiver["resources"]) <= set(resources), waiver["resources"]
    assert len(str(waiver.get("reason", "")).split()) >= 15, waiver


def test_a_finding_nobody_waived_fails_the_check(tmp_path: Path) -> None:
    # Given the waiver file without the network stack's waivers
    require_cfn_guard()
    trimmed = {k: v for k, v in waiver_file().items() if k != "stacks/network.yaml"}
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text(yaml.safe_dump(trimmed), encoding="utf-8")

    # When the network stack is checked against it
    result = run_tool(
        [sys.executable, str(CHECK), "check", str(GUARD_HOME)]
        + ["--waivers", str(waivers), "--template", "stacks/network.yaml"]
    )

    # Then the check fails and names the finding
    assert result.returncode == 1, describe(result)
    assert "stacks/network.yaml: CT.CLOUDWATCH.PR.2 fails on FlowLogGroup" in result.stdout


def test_a_nested_template_is_checked_in_each_instance_its_stack_nests(
    report: dict[str, Any],
) -> None:
    # Given the findings (stacks/backend.yaml nests stacks/service.yaml per process)
    findings = {tuple(finding) for finding in report["findings"]}

    # Then the rules judged each process's task definition with the values it gets, under
    # the instance's name, and never the nested template on its own, whose Fn::Ifs on a
    # process's settings they cannot see through
    for task_definition in ("ApiTaskDefinition", "WorkerTaskDefinition", "MigrationTaskDefinition"):
        assert ("stacks/backend.yaml", "CT.ECS.PR.7", task_definition) in findings
    assert not [finding for finding in findings if finding[0] == "stacks/service.yaml"]


def test_the_roots_split_out_parts_are_checked_as_part_of_the_root(
    report: dict[str, Any],
) -> None:
    # Given the findings (template.yaml nests stacks/site.yaml only to be shorter)
    findings = {tuple(finding) for finding in report["findings"]}

    # Then the site's resources are judged in the root, under the names they had there,
    # and stacks/site.yaml is never checked on its own as well
    assert ("template.yaml", "CT.CLOUDFRONT.PR.4", "SiteDistribution") in findings
    assert not [f for f in findings if f[0] in ("stacks/site.yaml", "stacks/dashboard.yaml")]
