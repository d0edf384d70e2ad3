"""Every template passes cfn-lint, SAM's validation and checkov, and every suppression says why."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT, require_tool
from tests.infra.conftest import (
    ROOT_TEMPLATE,
    SAM_ENV,
    TEMPLATES,
    checkov_report,
    describe,
    load_template,
    run_tool,
    sam_validate_lint,
    template_id,
)

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("template_path", TEMPLATES, ids=template_id)
def test_cfn_lint_finds_nothing(template_path: Path) -> None:
    # Given a template
    cfn_lint = require_tool("cfn-lint")

    # When cfn-lint checks it
    result = run_tool([cfn_lint, str(template_path)])

    # Then it reports no error, warning or informational finding
    assert result.returncode == 0, describe(result)


def test_sam_validate_with_lint_passes() -> None:
    # Given the root template
    # When SAM validates it with its linter, as the README and CI do
    result = sam_validate_lint(ROOT_TEMPLATE)

    # Then it is valid
    assert result.returncode == 0, describe(result)


def test_sam_validate_transforms_the_template_offline(tmp_path: Path) -> None:
    # Given the root template, no reachable AWS account (the tests' credentials are fake),
    # and a config file without samconfig.toml's `lint = true`
    sam = require_tool("sam")
    no_lint = tmp_path / "samconfig.toml"
    no_lint.write_text("version = 0.1\n", encoding="utf-8")

    # When SAM validates it without its linter (the SAM transform only)
    result = run_tool(
        [sam, "validate", "--template-file", str(ROOT_TEMPLATE), "--config-file", str(no_lint)],
        env=SAM_ENV,
    )

    # Then the transform succeeds
    assert result.returncode == 0, describe(result)
    assert "is a valid SAM Template" in result.stdout
    assert "--lint" in result.stdout  # SAM's hint that linting was skipped


@pytest.mark.parametrize("template_path", TEMPLATES, ids=template_id)
def test_checkov_reports_no_failed_check(template_path: Path) -> None:
    # Given a template
    # When checkov scans it
    report = checkov_report(template_path)

    # Then no check fails (suppressions are in the template, each with its reason)
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report["results"]["failed_checks"]
    ]
    assert report["summary"]["parsing_errors"] == 0
    assert failed == []


@pytest.mark.parametrize("template_path", TEMPLATES, ids=template_id)
def test_every_checkov_suppression_gives_its_reason(template_path: Path) -> None:
    # Given a template's checkov suppressions
    template = load_template(template_path)
    suppressions = [
        (logical_id, skip)
        for logical_id, resource in template.get("Resources", {}).items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]

    # Then each names a check and says why it does not apply, beside the resource
    for logical_id, skip in suppressions:
        assert str(skip.get("id", "")).startswith("CKV"), f"{logical_id}: {skip}"
        assert len(str(skip.get("comment", "")).strip()) >= 20, f"{logical_id}: {skip}"


# default (dev) is what test_sam_validate_with_lint_passes runs: sam reads samconfig.toml's
# default environment whenever it runs in the repository.
@pytest.mark.parametrize("config_env", ["staging", "prod"])
def test_each_named_samconfig_environment_validates(config_env: str) -> None:
    # Given one of samconfig.toml's environments
    sam = require_tool("sam")

    # When SAM validates the template with that environment's settings
    result = run_tool([sam, "validate", "--config-env", config_env], cwd=REPO_ROOT)

    # Then it is valid
    assert result.returncode == 0, describe(result)
