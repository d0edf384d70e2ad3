"""axe-core in the page under test: every violation it finds fails the test, named.

axe-core comes from the front-end's locked npm dev dependencies (``make install`` puts it
in ``frontend/node_modules``); its script is injected into the page as it is, so nothing
is fetched and the page's own scripts are untouched.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

from tests.conftest import REPO_ROOT
from tests.e2e.conftest import missing

AXE_SCRIPT = REPO_ROOT / "frontend" / "node_modules" / "axe-core" / "axe.min.js"
# axe's default rule set: WCAG 2.x A and AA and its best practices (one main landmark,
# all content in landmarks, no meta refresh, …).
AXE_OPTIONS = {"resultTypes": ["violations"]}


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """What axe-core finds wrong with the page as it is now (frames included)."""
    if not AXE_SCRIPT.is_file():
        missing(f"axe-core is not installed ({AXE_SCRIPT} is missing): run `make install`")
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(path=AXE_SCRIPT)
    results: dict[str, Any] = page.evaluate(
        "options => window.axe.run(document, options)", AXE_OPTIONS
    )
    violations: list[dict[str, Any]] = results["violations"]
    return violations


def describe(violations: list[dict[str, Any]]) -> str:
    """One line per violation, with the elements it names: what a person fixes."""
    lines = []
    for violation in violations:
        targets = [" ".join(map(str, node["target"])) for node in violation["nodes"]]
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']} -> {targets}")
    return "\n".join(lines)


def assert_accessible(page: Page, view: str) -> None:
    """Fails, listing each violation, unless axe-core finds none in ``view``."""
    violations = axe_violations(page)
    assert violations == [], f"axe-core on {view} ({page.url}):\n{describe(violations)}"
