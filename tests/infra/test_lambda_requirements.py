"""src/requirements-lambda.txt is exactly what uv.lock says the Lambda needs, hashes included."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tests.conftest import REPO_ROOT, require_tool
from tests.infra.conftest import describe, run_tool

if TYPE_CHECKING:
    from pathlib import Path

REQUIREMENTS = REPO_ROOT / "src" / "requirements-lambda.txt"
# The one command that writes the file (`make lock` runs it). --prune drops boto3, botocore
# and s3transfer, which the Lambda runtime provides, and the dependencies only they need
# (urllib3, python-dateutil, six): the runtime's boto3 brings its own.
EXPORT_ARGS = [
    "export",
    "--frozen",
    "--no-dev",
    "--no-emit-project",
    "--prune",
    "boto3",
    "--prune",
    "botocore",
    "--prune",
    "s3transfer",
    "--format",
    "requirements-txt",
]
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer", "urllib3", "python-dateutil", "six"}


def requirement_lines(text: str) -> list[str]:
    """The file without uv's header comment, which names the output path it was written to."""
    lines = text.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return lines


def pinned_names(text: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", text, flags=re.MULTILINE))


def test_lambda_requirements_match_a_fresh_export_of_the_lock(tmp_path: Path) -> None:
    # Given the committed requirements and uv.lock
    uv = require_tool("uv")
    committed = REQUIREMENTS.read_text(encoding="utf-8")

    # When the lock is exported again
    fresh_path = tmp_path / "requirements-lambda.txt"
    result = run_tool([uv, *EXPORT_ARGS, "--output-file", str(fresh_path)])
    assert result.returncode == 0, describe(result)

    # Then nothing drifted (else: run the command in the file's header, or `make lock`)
    assert requirement_lines(committed) == requirement_lines(fresh_path.read_text("utf-8"))


def test_lambda_requirements_header_names_the_command_that_wrote_them() -> None:
    header = REQUIREMENTS.read_text(encoding="utf-8").splitlines()[1]

    assert header.split() == ["#", "uv", *EXPORT_ARGS, "-o", "src/requirements-lambda.txt"]


def test_lambda_requirements_pin_every_package_with_a_hash() -> None:
    # Given the requirement entries (a name==version line and its continuation lines)
    entries = re.split(r"\n(?=[A-Za-z0-9])", "\n".join(requirement_lines(REQUIREMENTS.read_text())))

    # Then each pins one version and carries the hashes pip verifies
    assert len(entries) >= 5
    for entry in entries:
        assert re.match(r"^[A-Za-z0-9._-]+==[^\s\\]+ \\$", entry.splitlines()[0]), entry
        assert "--hash=sha256:" in entry, entry


def test_lambda_requirements_leave_out_what_the_lambda_runtime_provides() -> None:
    assert pinned_names(REQUIREMENTS.read_text(encoding="utf-8")) & RUNTIME_PROVIDED == set()
