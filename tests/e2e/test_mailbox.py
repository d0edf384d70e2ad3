"""The local mailbox page in a real Chromium: what it shows, how it keeps current, axe.

It shares the package's ``herald-local run`` with the web app's tests; emails are
scheduled through the API, as a client would, and found on the page by their subjects.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
from playwright.sync_api import Locator, Page, expect

from herald_local.harness import RunningSystem
from tests.e2e.accessibility import assert_accessible

READER = "reader@example.org"
COPY = "copy@example.org"
HIDDEN = "hidden@example.org"
SENT_TIMEOUT_S = 45


def mailbox_url(system: RunningSystem) -> str:
    return f"http://127.0.0.1:{system.ports['mailbox']}/"


def send(system: RunningSystem, subject: str, **recipients: Any) -> str:
    """Schedules an email for now and waits until Herald has sent it; its message id.

    Sent, or already past it: SES's delivery report can make it ``delivered`` between two
    looks.
    """
    body = {"to": [READER], "subject": subject, "text": f"Body of {subject}", **recipients}
    answer = httpx.post(f"{system.api_url}/v1/messages", headers=system.headers, json=body)
    assert answer.status_code == 201, answer.text
    message_id = str(answer.json()["id"])
    deadline = time.monotonic() + SENT_TIMEOUT_S
    while system.status(message_id) not in ("sent", "delivered"):
        assert time.monotonic() < deadline, f"{subject} was not sent in time"
        time.sleep(0.5)
    return message_id


def email(page: Page, subject: str) -> Locator:
    return page.get_by_role("article", name=re.compile(rf"#\d+ {re.escape(subject)}$"))


def field(article: Locator, label: str) -> Locator:
    """The value after ``label`` in the email's list of fields."""
    return article.locator(f"xpath=.//dt[normalize-space()='{label}']/following-sibling::dd[1]")


def test_an_email_shows_its_cc_send_time_and_herald_message_id(
    page: Page, local_system: RunningSystem
) -> None:
    # Given an email to one address, copied to another and blind-copied to a third, sent
    subject = f"Copied {uuid4().hex[:8]}"
    before = datetime.now(UTC).replace(microsecond=0)
    message_id = send(local_system, subject, cc=[COPY], bcc=[HIDDEN])

    # When the mailbox page is opened
    page.goto(mailbox_url(local_system))

    # Then each recipient is listed under its own header
    article = email(page, subject)
    expect(field(article, "To")).to_have_text(READER)
    expect(field(article, "Cc")).to_have_text(COPY)
    expect(field(article, "Bcc")).to_have_text(HIDDEN)
    # And it names Herald's message and when the task runner sent it, to the second, in UTC
    expect(field(article, "Herald message")).to_have_text(message_id)
    sent = field(article, "Sent").locator("time")
    expect(sent).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    sent_at = datetime.fromisoformat(str(sent.get_attribute("datetime")))
    assert before <= sent_at <= datetime.now(UTC)


def test_the_mailbox_shows_a_new_email_without_reloading_the_page(
    page: Page, local_system: RunningSystem
) -> None:
    # Given the mailbox page open, marked so that a reload would show
    page.goto(mailbox_url(local_system))
    expect(page.get_by_role("checkbox", name=re.compile("Refresh by itself"))).to_be_checked()
    page.evaluate("() => { window.notReloaded = true; }")
    subject = f"Arriving {uuid4().hex[:8]}"

    # When an email is sent meanwhile
    send(local_system, subject)

    # Then it appears on the same page, and the arrival is announced
    expect(email(page, subject)).to_be_visible()
    expect(page.get_by_role("status")).to_have_text(re.compile(r"^\d+ new emails?\.$"))
    assert page.evaluate("() => window.notReloaded") is True


def test_with_refreshing_paused_the_refresh_button_brings_new_emails_in(
    page: Page, local_system: RunningSystem
) -> None:
    # Given the mailbox page with its own refreshing turned off
    page.goto(mailbox_url(local_system))
    page.get_by_role("checkbox", name=re.compile("Refresh by itself")).uncheck()
    subject = f"Paused {uuid4().hex[:8]}"

    # When an email is sent, and the page is given time to refresh by itself
    send(local_system, subject)
    page.wait_for_timeout(4_000)

    # Then it is not shown until Refresh is pressed
    expect(email(page, subject)).to_have_count(0)
    page.get_by_role("button", name="Refresh").click()
    expect(email(page, subject)).to_be_visible()


def test_the_mailbox_page_has_no_accessibility_violations(
    page: Page, local_system: RunningSystem
) -> None:
    # Given a text email and an HTML email in the mailbox
    tag = uuid4().hex[:8]
    send(local_system, f"Axe text {tag}", cc=[COPY])
    send(local_system, f"Axe html {tag}", text=None, html="<p>Hello <b>there</b></p>")

    # When the page shows them
    page.goto(mailbox_url(local_system))
    expect(email(page, f"Axe html {tag}")).to_be_visible()

    # Then axe-core finds nothing wrong
    assert_accessible(page, "the mailbox")


def test_on_a_phone_the_mailbox_is_laid_out_at_the_phones_width(
    phone: Page, local_system: RunningSystem
) -> None:
    # Given a phone 390 px wide, and an email in the mailbox
    subject = f"Phone {uuid4().hex[:8]}"
    send(local_system, subject)

    # When the mailbox page is opened
    phone.goto(mailbox_url(local_system))
    expect(email(phone, subject)).to_be_visible()

    # Then it is laid out 390 px wide (not 980 px and shrunk), without sideways scrolling
    assert phone.evaluate("() => document.documentElement.clientWidth") == 390
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
    assert_accessible(phone, "the mailbox on a phone")
