"""The web app in a real Chromium, against the whole system as ``make run`` starts it.

One ``herald-local run`` (with the built ``frontend/dist``) and one browser for the
module; each test gets a fresh tab. The browser finds everything by what a person sees
and a screen reader reads: headings, labels, roles and link names.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, Route, expect

from herald_local.harness import RunningSystem
from tests.conftest import REPO_ROOT
from tests.e2e.accessibility import assert_accessible
from tests.e2e.conftest import TIME_ZONE, open_tab

READER = "reader@example.org"
# The local SES bounces this address as SES's mailbox simulator does, with this diagnostic.
BOUNCE = "bounce@simulator.amazonses.com"
BOUNCE_DIAGNOSTIC = "smtp; 550 5.1.1 user unknown"
# Sent, then SES's report a moment later; the polling backs off from 2 s (2, 4, 8, 16, 30 s
# between looks) while nothing changes, so the page may look 30 s after the report.
REPORTED_TIMEOUT_MS = 60_000
# The app's --danger colour: an invalid field's border.
DANGER = "rgb(180, 35, 24)"


def connect(page: Page, key: str) -> None:
    page.goto("/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("heading", name="Messages", level=1)).to_be_visible()


def open_compose(page: Page) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Compose").click()
    expect(page.get_by_role("heading", name="Compose an email")).to_be_visible()


def fill_email(page: Page, to: str, subject: str) -> None:
    page.get_by_label("To", exact=True).fill(to)
    page.get_by_label("Subject", exact=True).fill(subject)
    page.get_by_label("Text", exact=True).fill(f"Body of {subject}")


def message_link(page: Page, subject: str, status: str) -> Locator:
    # A row's link reads "<subject> <status> To … · …".
    return page.get_by_role("link", name=re.compile(rf"^{re.escape(subject)} {status}\b"))


def unsuppress(local_system: RunningSystem, address: str) -> None:
    """Takes ``address`` off the demo tenant's suppression list, if a test's bounce put it
    there: each test that bounces starts from a list without it, in any order."""
    answer = httpx.delete(
        f"{local_system.api_url}/v1/suppressions/{address}", headers=local_system.headers
    )
    assert answer.status_code in (204, 404), answer.text


def wait_for_status(local_system: RunningSystem, message_id: str, status: str) -> None:
    """Waits until the API says the message is ``status`` (SES's report included)."""
    deadline = time.monotonic() + REPORTED_TIMEOUT_MS / 1000
    while (now := local_system.status(message_id)) != status:
        assert time.monotonic() < deadline, f"{message_id} is {now}, not {status}, in time"
        time.sleep(0.5)


def utc_offset(moment: datetime) -> str:
    """The offset as the app shows it: "-03:30"."""
    offset = moment.utcoffset()
    assert offset is not None
    minutes = int(offset.total_seconds()) // 60
    return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def test_connecting_with_the_printed_key_opens_the_messages(
    page: Page, local_system: RunningSystem
) -> None:
    # Given the web app of the running system, and the key its banner printed
    page.goto("/")
    expect(page.get_by_role("heading", name="Connect to Herald")).to_be_visible()

    # When the key is entered
    page.get_by_label("API key").fill(local_system.key)
    page.get_by_role("button", name="Connect").click()

    # Then the messages are shown, and the key is kept in the tab, never in the address
    expect(page.get_by_role("heading", name="Messages", level=1)).to_be_visible()
    expect(page.get_by_label("Status")).to_be_visible()
    assert local_system.key not in page.url
    assert page.evaluate("() => sessionStorage.getItem('herald.apiKey')") == local_system.key


def test_a_wrong_key_is_refused_with_a_message(page: Page, local_system: RunningSystem) -> None:
    # Given the connect screen, and a key that differs from the printed one by its last letter
    page.goto("/")
    wrong = local_system.key[:-1] + ("A" if local_system.key[-1] != "A" else "B")

    # When it is entered
    page.get_by_label("API key").fill(wrong)
    page.get_by_role("button", name="Connect").click()

    # Then the field says it was refused, and the app stays on the connect screen
    field = page.get_by_label("API key")
    expect(field).to_have_accessible_description(re.compile(r"This key was refused"))
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("heading", name="Connect to Herald")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_an_email_sent_now_is_delivered_and_reaches_the_mailbox(
    page: Page, local_system: RunningSystem
) -> None:
    # Given a connected tab on the compose screen
    connect(page, local_system.key)
    open_compose(page)
    subject = f"Now {uuid4().hex[:8]}"

    # When an email to one address is sent now
    fill_email(page, READER, subject)
    expect(page.get_by_label("Now", exact=True)).to_be_checked()
    page.get_by_role("button", name="Send").click()

    # Then the list shows it, and its status follows it live until SES reports it delivered
    expect(page.get_by_role("heading", name="Messages", level=1)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text=subject)).to_contain_text("on its way")
    expect(message_link(page, subject, "Delivered")).to_be_visible(timeout=REPORTED_TIMEOUT_MS)
    # And the local SES delivered it, once, to that address
    delivered = [email for email in local_system.mailbox() if email["subject"] == subject]
    assert len(delivered) == 1
    assert delivered[0]["to"] == [READER]


def test_an_email_scheduled_ahead_can_be_canceled(page: Page, local_system: RunningSystem) -> None:
    # Given a connected tab on the compose screen, in the America/St_Johns time zone
    connect(page, local_system.key)
    open_compose(page)
    subject = f"Later {uuid4().hex[:8]}"
    zone = ZoneInfo(TIME_ZONE)
    send_at = (datetime.now(zone) + timedelta(minutes=3)).replace(second=0, microsecond=0)

    # When an email is scheduled at a local date and time two to three minutes ahead
    fill_email(page, READER, subject)
    page.get_by_label("At a date and time", exact=True).check()
    page.get_by_label("Date and time", exact=True).fill(send_at.strftime("%Y-%m-%dT%H:%M"))
    expect(page.get_by_text(f"Time zone: {TIME_ZONE} (UTC{utc_offset(send_at)})")).to_be_visible()
    page.get_by_role("button", name="Send").click()

    # Then it is listed as scheduled, for that instant
    link = message_link(page, subject, "Scheduled")
    expect(link).to_be_visible()
    message_id = link.get_attribute("data-id")
    assert message_id
    scheduled = local_system.message(message_id)
    assert datetime.fromisoformat(scheduled["send_at"]) == send_at

    # When it is opened and canceled, accepting the browser's confirmation
    link.click()
    expect(page.get_by_role("heading", name=subject, level=1)).to_be_visible()
    expect(page.locator("#message-status")).to_have_text("Scheduled")
    questions: list[str] = []

    def accept(dialog: Dialog) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Cancel this email").click()

    # Then it shows canceled, the button is gone, and the API agrees
    expect(page.locator("#message-status")).to_have_text("Canceled")
    expect(page.get_by_role("button", name="Cancel this email")).to_be_hidden()
    assert questions == [f"Cancel “{subject}”? It will not be sent."]
    assert local_system.status(message_id) == "canceled"
    # And the list filtered on canceled messages shows it
    page.get_by_role("link", name="← All messages").click()
    page.get_by_label("Status").select_option(label="Canceled")
    expect(message_link(page, subject, "Canceled")).to_be_visible()


def test_an_address_the_api_refuses_is_explained_next_to_the_to_field(
    page: Page, local_system: RunningSystem
) -> None:
    # Given a connected tab on the compose screen, and an address that looks fine to the
    # app but that the API refuses (.invalid is a reserved domain)
    connect(page, local_system.key)
    open_compose(page)
    subject = f"Refused {uuid4().hex[:8]}"

    # When an email to it is sent
    fill_email(page, "bad@example.invalid", subject)
    page.get_by_role("button", name="Send").click()

    # Then the To field carries the API's explanation, naming the address
    to = page.get_by_label("To", exact=True)
    expect(to).to_have_attribute("aria-invalid", "true")
    expect(to).to_have_accessible_description(
        re.compile(r"bad@example\.invalid: .*not a valid email address")
    )
    expect(page.locator("#to-error")).to_be_visible()
    expect(page.get_by_role("heading", name="Compose an email")).to_be_visible()
    # And nothing was scheduled
    assert subject not in {message["subject"] for message in local_system.messages()}


def test_an_email_that_bounces_shows_the_diagnostic_in_the_recipients_table(
    page: Page, local_system: RunningSystem
) -> None:
    # Given a connected tab on the compose screen, and SES's bouncing address not suppressed
    unsuppress(local_system, BOUNCE)
    connect(page, local_system.key)
    open_compose(page)
    subject = f"Bounce {uuid4().hex[:8]}"

    # When an email to it is sent now, and opened from the list
    fill_email(page, BOUNCE, subject)
    page.get_by_role("button", name="Send").click()
    page.get_by_role("link", name=re.compile(rf"^{re.escape(subject)} ")).click()
    expect(page.get_by_role("heading", name=subject, level=1)).to_be_visible()

    # Then its status follows it live until SES's bounce makes it bounced
    expect(page.locator("#message-status")).to_have_text("Bounced", timeout=REPORTED_TIMEOUT_MS)
    # And the recipients table gives the address's state, bounce and diagnostic, and when
    row = page.get_by_role("table", name="Recipients").get_by_role(
        "row", name=re.compile(re.escape(BOUNCE))
    )
    expect(row.get_by_role("rowheader")).to_have_text(BOUNCE)
    expect(row.get_by_role("cell")).to_have_text(
        ["Bounced", "Permanent · General", BOUNCE_DIAGNOSTIC, re.compile(r"\d:\d\d:\d\d [AP]M$")]
    )
    # And the event history has SES's bounce, with the same diagnostic
    events = page.get_by_role("table", name="Events").get_by_role("row")
    expect(events.filter(has_text="Bounced")).to_contain_text(BOUNCE_DIAGNOSTIC)


def test_a_bounced_address_is_refused_next_time_until_it_is_removed_from_the_suppressions(
    page: Page, local_system: RunningSystem
) -> None:
    # Given an email to SES's bouncing address that bounced, which suppressed the address
    unsuppress(local_system, BOUNCE)
    bounced = local_system.schedule(BOUNCE, f"First bounce {uuid4().hex[:8]}")
    wait_for_status(local_system, bounced, "bounced")
    connect(page, local_system.key)
    open_compose(page)

    # When another email to it is sent
    subject = f"Second try {uuid4().hex[:8]}"
    fill_email(page, BOUNCE, subject)
    page.get_by_role("button", name="Send").click()

    # Then the To field says the address is suppressed, and nothing was scheduled
    to = page.get_by_label("To", exact=True)
    expect(to).to_have_attribute("aria-invalid", "true")
    expect(to).to_have_accessible_description(
        re.compile(rf"{re.escape(BOUNCE)}: on your suppression list")
    )
    assert subject not in {message["subject"] for message in local_system.messages()}

    # When the address is removed on the Suppressions screen, accepting the confirmation
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Suppressions").click()
    row = page.get_by_role("row", name=re.compile(re.escape(BOUNCE)))
    expect(row).to_contain_text("Bounced")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Remove {BOUNCE}").click()

    # Then its row is gone, and the API no longer lists it (so an email to it is accepted)
    expect(row).to_be_hidden()
    answer = httpx.get(
        f"{local_system.api_url}/v1/suppressions",
        headers=local_system.headers,
        params={"limit": 100},
    )
    assert BOUNCE not in {item["address"] for item in answer.json()["items"]}


def test_every_view_of_the_web_app_has_no_accessibility_violations(
    page: Page, local_system: RunningSystem
) -> None:
    # Given a message that was delivered, one that bounced (which suppressed its address),
    # and one scheduled for tomorrow
    tag = uuid4().hex[:8]
    unsuppress(local_system, BOUNCE)
    delivered = local_system.schedule(READER, f"Axe delivered {tag}")
    bounced = local_system.schedule(BOUNCE, f"Axe bounced {tag}")
    later = datetime.now(ZoneInfo("UTC")) + timedelta(days=1)
    scheduled = local_system.schedule(READER, f"Axe later {tag}", send_at=later)
    wait_for_status(local_system, delivered, "delivered")
    wait_for_status(local_system, bounced, "bounced")

    # When each view is shown in turn, Then axe-core finds nothing wrong with any of them
    page.goto("/")
    expect(page.get_by_role("heading", name="Connect to Herald")).to_be_visible()
    assert_accessible(page, "the connect screen")
    page.get_by_label("API key").fill("hrld_not_a_key")
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    assert_accessible(page, "the connect screen with a refused key")

    connect(page, local_system.key)
    expect(message_link(page, f"Axe delivered {tag}", "Delivered")).to_be_visible()
    expect(message_link(page, f"Axe bounced {tag}", "Bounced")).to_be_visible()
    assert_accessible(page, "the message list")
    page.get_by_label("Status").select_option(label="Failed")
    expect(page.get_by_role("link", name=re.compile(f"Axe delivered {tag}"))).to_be_hidden()
    assert_accessible(page, "the message list filtered on a status")

    open_compose(page)
    assert_accessible(page, "the compose form")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_label("Subject", exact=True)).to_have_attribute("aria-invalid", "true")
    assert_accessible(page, "the compose form with its own errors")
    fill_email(page, "bad@example.invalid", f"Axe refused {tag}")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#to-error")).to_contain_text("bad@example.invalid")
    assert_accessible(page, "the compose form with the API's errors")

    page.goto(f"/messages/{scheduled}")
    expect(page.get_by_role("button", name="Cancel this email")).to_be_visible()
    assert_accessible(page, "a scheduled message")
    page.goto(f"/messages/{delivered}")
    expect(page.locator("#message-status")).to_have_text("Delivered")
    expect(page.get_by_role("table", name="Events")).to_be_visible()
    assert_accessible(page, "a delivered message, with its recipients and events")
    page.goto(f"/messages/{bounced}")
    expect(page.get_by_role("table", name="Recipients")).to_contain_text(BOUNCE_DIAGNOSTIC)
    assert_accessible(page, "a bounced message")
    page.goto("/suppressions")
    expect(page.get_by_role("button", name=f"Remove {BOUNCE}")).to_be_visible()
    assert_accessible(page, "the suppression list")
    page.goto(f"/messages/{uuid4()}")
    expect(page.get_by_role("button", name="Try again")).to_be_visible()
    assert_accessible(page, "a message that does not exist")
    page.goto("/nowhere")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    assert_accessible(page, "an unknown address")

    page.get_by_role("button", name="Disconnect").click()
    expect(page.get_by_text("Disconnected")).to_be_visible()
    assert_accessible(page, "the connect screen after disconnecting")


def test_a_message_page_shows_its_times_to_the_second(
    page: Page, local_system: RunningSystem
) -> None:
    # Given a scheduled message
    later = datetime.now(ZoneInfo("UTC")) + timedelta(days=1)
    message_id = local_system.schedule(READER, f"Seconds {uuid4().hex[:8]}", send_at=later)

    # When its page is opened
    connect(page, local_system.key)
    page.goto(f"/messages/{message_id}")

    # Then its creation time reads to the second, in the browser's zone
    created = page.locator("dt", has_text="Created").locator("xpath=following-sibling::dd[1]")
    expect(created).to_have_text(re.compile(rf"\d:\d\d:\d\d [AP]M \({re.escape(TIME_ZONE)}\)$"))


def test_on_a_phone_the_header_keeps_its_words_whole(
    phone: Page, local_system: RunningSystem
) -> None:
    # Given a phone 390 px wide
    # When the web app is connected
    connect(phone, local_system.key)

    # Then each word of the header sits on one line, and nothing scrolls sideways
    header = phone.get_by_role("banner")
    for item in [
        header.get_by_role("link", name="Herald"),
        header.get_by_role("link", name="Messages"),
        header.get_by_role("link", name="Compose"),
        header.get_by_role("link", name="Suppressions"),
        header.get_by_role("button", name="Disconnect"),
    ]:
        lines = item.evaluate(
            "e => { const r = document.createRange(); r.selectNodeContents(e);"
            " return r.getClientRects().length; }"
        )
        assert lines == 1, f"{item.inner_text()!r} is broken over {lines} lines"
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
    assert_accessible(phone, "the message list on a phone")


def test_an_invalid_field_is_outlined_in_red(page: Page, local_system: RunningSystem) -> None:
    # Given the compose screen
    connect(page, local_system.key)
    open_compose(page)

    # When it is sent empty
    page.get_by_role("button", name="Send").click()

    # Then the invalid text input and text area have the red border, a valid one does not
    for invalid in [page.get_by_label("Subject", exact=True), page.get_by_label("To", exact=True)]:
        expect(invalid).to_have_attribute("aria-invalid", "true")
        expect(invalid).to_have_css("border-top-color", DANGER)
        expect(invalid).to_have_css("border-top-width", "2px")
    expect(page.get_by_label("Cc", exact=True)).not_to_have_css("border-top-color", DANGER)


def test_robots_txt_is_served_as_a_text_file(local_system: RunningSystem) -> None:
    # Given the web app as the local system serves its build
    # When a crawler asks for /robots.txt
    answer = httpx.get(f"{local_system.frontend_url}/robots.txt")

    # Then it gets the file, not the app's index.html
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.text.startswith("User-agent: *\n")


# The README's picture: the list as a customer sees it, with every status. Its data and
# clock are fixed (the API's list answers are replaced with these), so that the picture
# only changes when the app's looks do.
SCREENSHOT = REPO_ROOT / "docs" / "images" / "web-app.png"
SCREENSHOT_VIEWPORT = {"width": 1280, "height": 1040}
SCREENSHOT_NOW = datetime(2026, 12, 1, 14, 30, 12, tzinfo=ZoneInfo("UTC"))
SCREENSHOT_MESSAGES = [
    ("Team lunch on Friday", "scheduled", ["team@example.org"], timedelta(days=2, hours=1)),
    ("Your invoice for November", "queued", ["billing@example.net"], timedelta(seconds=-2)),
    ("Order confirmation", "sent", ["cy@example.com"], timedelta(seconds=-5)),
    (
        "Quarterly report is ready",
        "delivered",
        ["finance@example.org", "board@example.org", "audit@example.com"],
        timedelta(minutes=-12),
    ),
    ("Newsletter: December", "bounced", ["old-address@example.com"], timedelta(hours=-1)),
    ("Spring sale", "complained", ["dan@example.net"], timedelta(hours=-2)),
    ("Password reset", "failed", ["eve@example.com"], timedelta(hours=-3)),
    ("Webinar reminder", "canceled", ["guests@example.org"], timedelta(days=1)),
    ("Welcome to Herald", "delivered", ["ann@example.org"], timedelta(days=-1, hours=-2)),
]
# SES's report on a sent message comes a few seconds after the send.
REPORTED = ("delivered", "bounced", "complained")


def screenshot_page() -> dict[str, Any]:
    """A list page as the API answers it (MessageSummary items), at SCREENSHOT_NOW."""
    items = []
    for number, (subject, status, to, offset) in enumerate(SCREENSHOT_MESSAGES):
        send_at = SCREENSHOT_NOW + offset
        finished = (
            send_at + timedelta(seconds=1) if status in ("sent", "failed", *REPORTED) else None
        )
        reported = finished + timedelta(seconds=3) if finished and status in REPORTED else None
        items.append(
            {
                "id": f"00000000-0000-4000-8000-{number:012d}",
                "status": status,
                "sender": "herald@example.com",
                "to": to,
                "cc": [],
                "bcc": [],
                "reply_to": [],
                "subject": subject,
                "send_at": send_at.isoformat(),
                "created_at": (SCREENSHOT_NOW - timedelta(days=2)).isoformat(),
                "updated_at": (
                    reported or finished or SCREENSHOT_NOW - timedelta(hours=1)
                ).isoformat(),
                "queued_at": send_at.isoformat() if status != "scheduled" else None,
                "finished_at": finished.isoformat() if finished else None,
                "provider_message_id": None,
                "error": "SES rejected the message" if status == "failed" else None,
            }
        )
    return {"items": items, "next_cursor": None}


@pytest.fixture
def wide(
    browser: Browser, local_system: RunningSystem, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A 1280 × 800 tab: the README's screenshot."""
    yield from open_tab(browser, local_system, request, viewport=SCREENSHOT_VIEWPORT)


def test_the_readme_screenshot_shows_the_message_list(
    wide: Page, local_system: RunningSystem
) -> None:
    # Given the API's list answers fixed to nine messages, each status at least once, and
    # the clock
    page_body = json.dumps(screenshot_page())

    def answer_list(route: Route) -> None:
        origin = local_system.frontend_url
        route.fulfill(
            status=200,
            content_type="application/json",
            body=page_body,
            headers={"Access-Control-Allow-Origin": origin},
        )

    wide.route(re.compile(r"/v1/messages\?"), answer_list)
    wide.clock.set_fixed_time(SCREENSHOT_NOW)

    # When the web app lists them
    connect(wide, local_system.key)
    expect(message_link(wide, "Welcome to Herald", "Delivered")).to_be_visible()
    expect(wide.get_by_text(re.compile(r"^Live status, updated at"))).to_be_visible()

    # Then the picture is written (only when it changed), and stays small
    wide.mouse.move(0, SCREENSHOT_VIEWPORT["height"] - 1)  # no row underlined by a hover
    picture = wide.screenshot(animations="disabled", caret="hide")
    assert len(picture) < 150_000, f"the screenshot is {len(picture)} bytes"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    if not SCREENSHOT.is_file() or SCREENSHOT.read_bytes() != picture:
        SCREENSHOT.write_bytes(picture)
