"""The README stays a front page and the docs stay true: links resolve, generated pages are
current, and the monitoring page has one entry per alarm the templates declare."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from herald_local.cli import DATA_DIR_VARIABLE, parser
from herald_local.system import DEMO_KEY_FILE, PORTS
from tests.conftest import REPO_ROOT
from tests.infra.conftest import WHOLE_TEMPLATES, load_template, read_whole, resources_of_type
from tools import parameters_page

README = REPO_ROOT / "README.md"
MONITORING = REPO_ROOT / "docs" / "monitoring.md"
README_MAX_BYTES = 12 * 1024
PAGES = [README, REPO_ROOT / "bench" / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# [text](target) and [text](target "title"); images too. Code spans are removed first.
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCED = re.compile(r"```.*?```", flags=re.DOTALL)
CODE = re.compile(FENCED.pattern + r"|`[^`\n]*`", flags=re.DOTALL)
# An entry of the monitoring page: `## AlarmName — what it means`.
ENTRY = re.compile(r"^## (\w+) — ", flags=re.MULTILINE)


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def relative_links(page: Path) -> list[str]:
    """The page's links that point into the repository (no scheme, not a bare #anchor)."""
    text = CODE.sub("", page.read_text(encoding="utf-8"))
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")
    ]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (code spans in a heading keep their text)."""
    text = FENCED.sub("", page.read_text(encoding="utf-8"))
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def alarm_names() -> list[str]:
    """Every CloudWatch alarm's logical ID, in every template (one per alarm; a nested
    template's, once per instance, under the name the template nesting it gives it)."""
    return [
        name
        for path in WHOLE_TEMPLATES
        for name in resources_of_type(read_whole(path), "AWS::CloudWatch::Alarm")
    ]


def test_readme_is_a_front_page_under_12_kb() -> None:
    # Given the README
    size = len(README.read_bytes())

    # Then it reads in a few minutes: detail lives in docs/
    assert size < README_MAX_BYTES, f"README.md is {size} bytes"


def test_quick_start_uses_the_key_file_and_ports_make_run_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given what `make run` uses when nothing overrides it
    for port in PORTS.values():
        monkeypatch.delenv(port.variable, raising=False)
    monkeypatch.delenv(DATA_DIR_VARIABLE, raising=False)
    run = parser().parse_args(["run"])
    readme = README.read_text(encoding="utf-8")

    # Then the README's curl reads the demo key where the run keeps it
    assert f"$(cat {run.data_dir}/{DEMO_KEY_FILE})" in readme
    # and its addresses are the run's ports
    for part in ("api", "frontend", "mailbox"):
        assert f"http://127.0.0.1:{getattr(run, f'{part}_port')}" in readme


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves_to_a_file_in_the_repository(page: Path) -> None:
    # Given a page's links into the repository
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve()
        # Then each names a file or folder inside the repository, and an anchor one of
        # the target page's headings
        inside = resolved.is_relative_to(REPO_ROOT) and resolved.exists()
        if not inside or (anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_anchor_link_names_a_heading_of_its_page(page: Path) -> None:
    # Given a page's links to its own headings
    text = CODE.sub("", page.read_text(encoding="utf-8"))
    own = [target[1:] for target in LINK.findall(text) if target.startswith("#")]

    # Then each heading exists
    assert [anchor for anchor in own if anchor not in anchors(page)] == []


def test_parameters_page_is_what_the_generator_writes_from_the_templates() -> None:
    # Given the committed page and what the generator renders from template.yaml now
    committed = parameters_page.PAGE.read_text(encoding="utf-8")

    # Then they are the same: run `python -m tools.parameters_page` after changing a parameter
    assert committed == parameters_page.render()


def test_parameters_page_documents_every_root_template_parameter() -> None:
    # Given the root template's parameters and the generated page
    page = parameters_page.PAGE.read_text(encoding="utf-8")
    parameters = load_template(parameters_page.ROOT_TEMPLATE)["Parameters"]

    # Then each has its own heading
    assert [name for name in parameters if f"### `{name}`" not in page] == []


def test_monitoring_page_has_exactly_one_entry_per_alarm() -> None:
    # Given the monitoring page's entries and every alarm of every template
    entries = Counter(ENTRY.findall(MONITORING.read_text(encoding="utf-8")))
    alarms = Counter(alarm_names())

    # Then each alarm has one entry, and no entry names an alarm that does not exist
    assert entries == alarms
