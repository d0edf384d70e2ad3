"""The local mailbox as a web page: every email the local SES accepted, newest first.

The page keeps itself current without reloading: a small script fetches the page again
every few seconds and swaps in the list when it changed (a full-page ``meta refresh``
moved the reader back to the top and lost their place). The script can be paused, a
Refresh button does the same on demand, and new emails are announced politely. Every
part of the page is in a landmark (``header``, ``main``), as axe wants.

An email's HTML body is shown in a sandboxed frame (no scripts, no forms, no navigation);
a text body is shown as text. Below it, the SES events the local SES published for the
email (Send, Delivery, Bounce with its diagnostic, Complaint), oldest first.
"""

from __future__ import annotations

import html
from datetime import UTC
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from herald_local.mailbox import SentEmail

REFRESH_SECONDS = 3

STYLE = """
:root { color: #1b1f24; background: #f6f7f9; font: 16px/1.5 system-ui, sans-serif; }
body { margin: 0; }
header, main { max-width: 60rem; margin: 0 auto; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin: 1rem 0 .5rem; }
h2 { font-size: 1.1rem; margin: 0 0 .25rem; overflow-wrap: anywhere; }
.controls { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; }
button { font: inherit; min-height: 2.75rem; padding: .25rem 1rem; border-radius: 6px;
  border: 1px solid #8c959f; background: #fff; color: inherit; cursor: pointer; }
label { display: inline-flex; gap: .5rem; align-items: center; min-height: 2.75rem; }
input[type=checkbox] { width: 1.25rem; height: 1.25rem; }
:focus-visible { outline: 3px solid #1d4ed8; outline-offset: 2px; }
a { color: #1d4ed8; }
ol { list-style: none; margin: 1rem 0; padding: 0; }
article { background: #fff; border: 1px solid #d0d7de; border-radius: 6px;
  margin: 0 0 1rem; padding: .75rem 1rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0 1rem; margin: 0 0 .5rem; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
iframe { border: 1px solid #d0d7de; width: 100%; height: 10rem; background: #fff; }
h3 { font-size: 1rem; margin: .75rem 0 .25rem; }
.events { list-style: none; margin: 0; padding: 0; }
.events li { padding: .125rem 0; overflow-wrap: anywhere; }
.event-type { font-weight: 600; }
.hint { color: #57606a; }
@media (max-width: 30rem) { dl { grid-template-columns: 1fr; } dd { margin-bottom: .25rem; } }
"""

# Fetches the page, and swaps in its list when the emails changed (never while paused).
SCRIPT = """
(() => {
  const refresh = document.getElementById("refresh");
  const auto = document.getElementById("auto");
  const news = document.getElementById("news");
  async function update() {
    let answer;
    try {
      answer = await fetch(location.pathname, { cache: "no-store" });
    } catch {
      news.textContent = "The mailbox could not be reached: is the local system running?";
      return;
    }
    if (!answer.ok) {
      news.textContent = "The mailbox could not be read: " + (await answer.text());
      return;
    }
    const next = new DOMParser().parseFromString(await answer.text(), "text/html");
    const list = document.getElementById("emails");
    const fresh = next.getElementById("emails");
    if (!fresh || fresh.dataset.version === list.dataset.version) return;
    const added = Number(fresh.dataset.count) - Number(list.dataset.count);
    list.replaceWith(fresh);
    document.getElementById("count").replaceWith(next.getElementById("count"));
    document.title = next.title;
    if (added > 0) news.textContent = added === 1 ? "1 new email." : added + " new emails.";
  }
  refresh.addEventListener("click", update);
  setInterval(() => { if (auto.checked && !document.hidden) update(); }, INTERVAL_MS);
})();
"""


def mailbox_html(emails: list[SentEmail]) -> str:
    """The mailbox page: every email, newest first."""
    count = len(emails)
    items = [_email_html(number, email) for number, email in enumerate(emails, start=1)]
    items.reverse()
    # What the script compares: the list changes when an email arrives, Herald records
    # one (its id and send time then appear) or SES publishes an event for one.
    recorded = sum(email.herald_message_id is not None for email in emails)
    version = f"{count}-{recorded}-{sum(len(email.events) for email in emails)}"
    empty = "<p>No email yet. Schedule one with the web app or the API.</p>"
    listing = (
        f'<section id="emails" data-count="{count}" data-version="{version}" '
        f'aria-labelledby="count">{f"<ol>{chr(10).join(items)}</ol>" if items else empty}'
        "</section>"
    )
    script = SCRIPT.replace("INTERVAL_MS", str(REFRESH_SECONDS * 1000))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Herald local mailbox ({count})</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>Herald local mailbox</h1></header>
<main>
<p id="count">{_count_text(count)}</p>
<div class="controls">
<button type="button" id="refresh">Refresh</button>
<label><input type="checkbox" id="auto" checked> Refresh by itself every {REFRESH_SECONDS} s</label>
<a href="/emails.json">The emails as JSON</a>
</div>
<p id="news" class="hint" role="status"></p>
{listing}
</main>
<script>{script}</script>
</body>
</html>
"""


def _count_text(count: int) -> str:
    noun = "email" if count == 1 else "emails"
    return f"{count} {noun} sent through the local SES, newest first."


def _email_html(number: int, email: SentEmail) -> str:
    def field(label: str, value: str) -> str:
        return f"<dt>{label}</dt><dd>{value}</dd>" if value else ""

    def addresses(values: tuple[str, ...]) -> str:
        return html.escape(", ".join(values))

    # moto keeps the HTML part when there is one, else the text: show text as text.
    body = email.body
    if "<" not in body:
        body = f'<pre style="white-space: pre-wrap; font: 14px monospace">{html.escape(body)}</pre>'
    fields = "".join(
        [
            field("From", html.escape(email.sender)),
            field("To", addresses(email.to)),
            field("Cc", addresses(email.cc)),
            field("Bcc", addresses(email.bcc)),
            field("Sent", _time_html(email.sent_at) if email.sent_at else "not recorded yet"),
            field("Herald message", html.escape(email.herald_message_id or "not recorded yet")),
            field("SES message", html.escape(email.message_id)),
        ]
    )
    title = f"email-{number}"
    return (
        f'<li><article aria-labelledby="{title}">'
        f'<h2 id="{title}">#{number} {html.escape(email.subject)}</h2>'
        f"<dl>{fields}</dl>"
        f'<iframe sandbox srcdoc="{html.escape(body, quote=True)}" '
        f'title="Body of email #{number}"></iframe>{_events_html(number, email)}</article></li>'
    )


def _events_html(number: int, email: SentEmail) -> str:
    """The SES events published for the email, oldest first; nothing when there are none."""
    if not email.events:
        return ""
    items = []
    for event in email.events:
        facts = "; ".join(str(value) for value in event.detail.values() if value)
        items.append(
            f'<li><span class="event-type">{html.escape(event.type)}</span> '
            f"{html.escape(', '.join(event.recipients))} "
            f'<time datetime="{html.escape(event.occurred_at)}">'
            f"{html.escape(event.occurred_at)}</time>"
            + (f' <span class="hint">{html.escape(facts)}</span>' if facts else "")
            + "</li>"
        )
    heading = f"events-{number}"
    return (
        f'<h3 id="{heading}">SES events</h3>'
        f'<ul class="events" aria-labelledby="{heading}">{"".join(items)}</ul>'
    )


def _time_html(moment: datetime) -> str:
    """``<time>`` in UTC, to the second: the page is about what just happened."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{utc.isoformat()}">{text}</time>'
