"""End-to-end fixtures: the local system as ``make run`` starts it, and a real Chromium.

Chromium is the machine's own (``make install`` installs the Debian package): Playwright
drives it through ``executable_path``, so ``playwright install`` is never needed. Every
page may reach 127.0.0.1 only; anything else is aborted and fails the test. A test that
fails leaves a screenshot of its page in a temporary folder, named in its report.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, Route, expect, sync_playwright

from herald_local.harness import (
    RunningSystem,
    alive,
    children_of,
    descendants_of,
    running_local_system,
    stop_and_check_nothing_is_left,
)
from tests.conftest import REPO_ROOT

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Headless, and quiet: without the background-networking switches Chromium tries to reach
# Google's services, which a closed network refuses (and which a test has no business with).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Bounds for every step: an action or an expectation that takes longer fails the test.
ACTION_TIMEOUT_MS = 10_000
LAUNCH_TIMEOUT_MS = 30_000
# The pages run in a zone with a half-hour offset (and summer time), so a date and time
# typed in the form only lands on the right instant if the app converts it properly. (Not
# Asia/Kolkata: Chromium's ICU reports that one by its old name, Asia/Calcutta.)
TIME_ZONE = "America/St_Johns"
LOCAL_ONLY = re.compile(r"^http://127\.0\.0\.1:\d+/")
PAGE_KEY = pytest.StashKey[Page]()

expect.set_options(timeout=ACTION_TIMEOUT_MS)


def missing(message: str) -> None:
    """As ``require_tool``: fail under CI, skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def chromium_path() -> str:
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    missing(f"no Chromium on PATH ({', '.join(BROWSERS)}): run `make install`")
    raise AssertionError("unreachable")


@pytest.fixture(scope="package")
def local_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """``herald-local run`` with the built web app; stopped with Ctrl-C, nothing left.

    One for the package: the web app's and the mailbox's tests share it.
    """
    if not (REPO_ROOT / "frontend" / "dist" / "index.html").is_file():
        missing("the web app is not built (no frontend/dist/index.html): run `make frontend`")
    with running_local_system(tmp_path_factory.mktemp("herald-local")) as system:
        assert system.frontend_url, f"the banner names no front-end URL:\n{system.text()}"
        yield system
        stop_and_check_nothing_is_left(system)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the package; afterwards none of its processes is left."""
    executable = chromium_path()
    before = set(children_of(os.getpid()))
    playwright: Playwright = sync_playwright().start()
    # Playwright's driver is the child that just appeared; Chromium runs below it.
    drivers = set(children_of(os.getpid())) - before
    try:
        launched = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=LAUNCH_TIMEOUT_MS
        )
        yield launched
        processes = drivers.union(*(descendants_of(pid) for pid in drivers))
        launched.close()
    finally:
        playwright.stop()
    deadline = time.monotonic() + 10
    while (left := [pid for pid in processes if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"browser processes left running: {left}"


# A phone held upright (the width of an iPhone 12 to 15): a mobile viewport, so a page
# without a viewport meta is laid out 980 px wide and shrunk, as on a real phone.
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def open_tab(
    browser: Browser,
    local_system: RunningSystem,
    request: pytest.FixtureRequest,
    **options: Any,
) -> Iterator[Page]:
    """A fresh tab (its own session storage) on the web app, reaching 127.0.0.1 only."""
    context = browser.new_context(
        base_url=local_system.frontend_url, timezone_id=TIME_ZONE, locale="en-US", **options
    )
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    refused: list[str] = []

    def refuse(route: Route) -> None:
        refused.append(route.request.url)
        route.abort()

    context.route(lambda url: not LOCAL_ONLY.match(url), refuse)
    opened = context.new_page()
    request.node.stash[PAGE_KEY] = opened
    try:
        yield opened
    finally:
        context.close()
    assert refused == [], f"the page tried to reach beyond 127.0.0.1: {refused}"


@pytest.fixture
def page(
    browser: Browser, local_system: RunningSystem, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A desktop tab (1280 × 720) on the web app."""
    yield from open_tab(browser, local_system, request)


@pytest.fixture
def phone(
    browser: Browser, local_system: RunningSystem, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A phone's tab (390 × 844, mobile) on the web app."""
    yield from open_tab(browser, local_system, request, **PHONE)


_screenshots: list[Path] = []


def screenshot_folder() -> Path:
    if not _screenshots:
        _screenshots.append(Path(tempfile.mkdtemp(prefix="herald-e2e-screenshots-")))
    return _screenshots[0]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, a screenshot of the test's page, its path in the report."""
    report = yield
    opened = item.stash.get(PAGE_KEY, None)
    if report.failed and report.when in ("setup", "call") and opened and not opened.is_closed():
        name = re.sub(r"[^\w.-]", "_", item.name)
        path = screenshot_folder() / f"{name}.png"
        try:
            opened.screenshot(path=path, full_page=True, timeout=ACTION_TIMEOUT_MS)
        except Exception as error:  # the page may be what broke: say so, keep the report
            report.sections.append(("screenshot", f"none: {error}"))
        else:
            report.sections.append(("screenshot", str(path)))
            print(f"\nscreenshot of {item.nodeid}: {path}")
    return report
