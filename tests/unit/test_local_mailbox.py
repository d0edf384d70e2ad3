"""The local mailbox shows each email's SES events, in the terminal and on the page."""

from __future__ import annotations

from dataclasses import replace

from herald_local.mailbox import MailboxEvent, SentEmail, format_mailbox
from herald_local.mailbox_page import mailbox_html

BOUNCE = MailboxEvent(
    type="Bounce",
    recipients=("bounce@simulator.amazonses.com",),
    occurred_at="2026-12-03T10:00:00.600Z",
    detail={
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
    },
)
SEND = MailboxEvent(
    type="Send",
    recipients=("bounce@simulator.amazonses.com",),
    occurred_at="2026-12-03T10:00:00.000Z",
)


def bounced_email() -> SentEmail:
    return SentEmail(
        message_id="ses-1",
        sender="herald@example.com",
        to=("bounce@simulator.amazonses.com",),
        cc=(),
        bcc=(),
        subject="Will bounce",
        body="Hello",
        events=(SEND, BOUNCE),
    )


def test_the_mailbox_command_lists_each_event_with_the_bounce_diagnostic() -> None:
    # Given an email SES sent and then bounced
    # When the mailbox is formatted for the terminal
    text = format_mailbox([bounced_email()])

    # Then each event is a line, oldest first, the bounce with its type and diagnostic
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("ses:")]
    assert lines == [
        "ses:  2026-12-03T10:00:00.000Z  Send bounce@simulator.amazonses.com",
        "ses:  2026-12-03T10:00:00.600Z  Bounce bounce@simulator.amazonses.com: Permanent; "
        "General; smtp; 550 5.1.1 user unknown",
    ]


def test_the_page_shows_the_events_under_the_email() -> None:
    # Given an email SES sent and then bounced
    # When the page is made
    page = mailbox_html([bounced_email()])

    # Then the email's article lists its events with the diagnostic
    article = page[page.index("<article") : page.index("</article>")]
    assert '<h3 id="events-1">SES events</h3>' in article
    assert "Bounce</span>" in article
    assert "smtp; 550 5.1.1 user unknown" in article


def test_the_page_changes_version_when_an_event_arrives() -> None:
    # Given the page before and after the bounce was published
    before = mailbox_html([replace(bounced_email(), events=(SEND,))])
    after = mailbox_html([bounced_email()])

    # Then the version the page's script compares differs, so it swaps the list in
    def version(page: str) -> str:
        return page.split('data-version="', 1)[1].split('"', 1)[0]

    assert version(before) != version(after)


def test_an_email_without_events_has_no_events_heading() -> None:
    # Given an email sent without a configuration set (no events)
    email = replace(bounced_email(), events=())

    # When the page is made; Then there is no events list for it
    assert "SES events" not in mailbox_html([email])
