"""buildspec.yml and the Jenkinsfile parse and call only Makefile targets that exist."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT, require_tool

BUILDSPEC = REPO_ROOT / "buildspec.yml"
JENKINSFILE = REPO_ROOT / "Jenkinsfile"
MAKE_CALL = re.compile(r"\bmake\s+((?:[A-Z_]+=\S+\s+)*)([a-z0-9][a-z0-9-]*)")


@pytest.fixture(scope="module")
def make_targets() -> set[str]:
    """The Makefile's targets, as make itself reads them (`make -qp`)."""
    result = subprocess.run(
        [require_tool("make"), "-qp", "-f", "Makefile", "--no-print-directory", "help"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    return {
        match.group(1)
        for match in re.finditer(r"^([a-z0-9][a-z0-9-]*):(?!=)", result.stdout, re.MULTILINE)
    }


def called_targets(text: str) -> set[str]:
    return {match.group(2) for match in MAKE_CALL.finditer(text)}


def buildspec_commands() -> str:
    spec = yaml.safe_load(BUILDSPEC.read_text())
    return "\n".join(
        command for phase in spec["phases"].values() for command in phase.get("commands", [])
    )


def test_the_makefile_has_the_deploy_targets(make_targets: set[str]) -> None:
    assert {"test", "push-image", "deploy-backend", "deploy-frontend", "deploy"} <= make_targets


def test_buildspec_is_a_v0_2_buildspec_with_runtimes_reports_and_caches() -> None:
    spec = yaml.safe_load(BUILDSPEC.read_text())

    assert str(spec["version"]) == "0.2"
    assert str(spec["phases"]["install"]["runtime-versions"]["python"]) == "3.13"
    assert str(spec["phases"]["install"]["runtime-versions"]["nodejs"]) in {"20", "22"}
    assert spec["reports"]["pytest"]["file-format"] == "JUNITXML"
    assert (
        spec["env"]["variables"]["HERALD_JUNIT_DIR"] == spec["reports"]["pytest"]["base-directory"]
    )
    assert {"/root/.cache/pip/**/*", "/root/.npm/**/*"} <= set(spec["cache"]["paths"])


def test_buildspec_tests_then_deploys_through_existing_targets(make_targets: set[str]) -> None:
    commands = buildspec_commands()

    assert called_targets(commands) == {"test", "push-image", "deploy", "smoke"}
    assert called_targets(commands) <= make_targets
    assert commands.index("make test") < commands.index("make push-image")


def test_jenkinsfile_stages_call_existing_targets_and_release_only_main(
    make_targets: set[str],
) -> None:
    # Given the declarative Jenkinsfile, cut into its stages
    text = JENKINSFILE.read_text()
    assert text.count("{") == text.count("}")
    assert re.search(r"^pipeline \{", text, re.MULTILINE)
    blocks = re.split(r"^\s*stage\('([^']+)'\)", text, flags=re.MULTILINE)
    stages = dict(zip(blocks[1::2], blocks[2::2], strict=True))

    # Then its stages mirror the CodePipeline's, each calling existing targets
    assert list(stages) == [
        "Test",
        "Build image",
        "Deploy staging",
        "Smoke staging",
        "Approve prod",
        "Deploy prod",
    ]
    assert called_targets(text) <= make_targets
    assert called_targets(stages["Test"]) == {"test"}
    assert "junit" in stages["Test"]
    for name in ("Build image", "Deploy staging", "Smoke staging", "Approve prod", "Deploy prod"):
        assert "when { branch 'main' }" in stages[name], name
    for name in ("Build image", "Deploy staging", "Smoke staging", "Deploy prod"):
        assert "withCredentials([aws(credentialsId:" in stages[name], name
    assert called_targets(stages["Smoke staging"]) == {"smoke"}
    assert "ENV=staging" in stages["Smoke staging"]
    assert "input message:" in stages["Approve prod"]
    assert called_targets(stages["Deploy prod"]) == {"deploy"}
    assert "ENV=prod" in stages["Deploy prod"]
