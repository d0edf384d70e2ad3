"""The runner's own small web servers: the mailbox page and the built front-end.

Both listen on 127.0.0.1 only and run in threads of the runner's process.

- The mailbox (``/``) lists the emails the local SES accepted, newest first, refreshing
  itself; ``/emails.json`` is the same as JSON. An HTML body is shown in a sandboxed
  frame (no scripts, no forms, no navigation).
- The front-end serves ``frontend/dist`` as CloudFront serves the bucket: files as they
  are, any other path gets ``index.html`` (the SPA's own routes), and ``/config.json``
  is generated so the app calls the local api.
"""

from __future__ import annotations

import html
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from herald_local.mailbox import MailboxUnavailableError, read_mailbox

if TYPE_CHECKING:
    from collections.abc import Callable

    from herald_local.mailbox import SentEmail

REFRESH_SECONDS = 3


class BackgroundHttpServer:
    """A ``ThreadingHTTPServer`` on ``127.0.0.1:port``, serving from a daemon thread."""

    def __init__(self, name: str, port: int, handler: Callable[..., Any]) -> None:
        self.name = name
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> BackgroundHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class QuietHandler(SimpleHTTPRequestHandler):
    """No access log: the page refreshes itself every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return


class MailboxPageHandler(QuietHandler):
    """``/``: the mailbox page; ``/emails.json``: the emails as JSON."""

    endpoint_url: ClassVar[str] = ""

    def do_GET(self) -> None:
        try:
            emails = read_mailbox(self.endpoint_url, timeout=3)
        except MailboxUnavailableError as error:
            self._send(503, "text/plain; charset=utf-8", str(error).encode())
            return
        if self.path.split("?")[0] == "/emails.json":
            body = json.dumps([email.as_json() for email in emails], indent=2).encode()
            self._send(200, "application/json", body)
        elif self.path.split("?")[0] == "/":
            self._send(200, "text/html; charset=utf-8", mailbox_html(emails).encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def mailbox_html(emails: list[SentEmail]) -> str:
    """The mailbox page: every email, newest first."""
    items = []
    for number, email in reversed(list(enumerate(emails, start=1))):
        recipients = ", ".join(email.to + email.cc + email.bcc)
        # moto keeps the HTML part when there is one, else the text: show text as text.
        body = email.body
        if "<" not in body:
            body = f'<pre style="white-space: pre-wrap">{html.escape(body)}</pre>'

        frame = html.escape(body, quote=True)
        items.append(
            f"<article><h2>#{number} {html.escape(email.subject)}</h2>"
            f"<p class=meta>from {html.escape(email.sender)} to {html.escape(recipients)}"
            f" &middot; SES id {html.escape(email.message_id)}</p>"
            f'<iframe sandbox srcdoc="{frame}" title="body of #{number}"></iframe></article>'
        )
    content = "\n".join(items) or "<p>No email yet. Schedule one through the API.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>Herald local mailbox ({len(emails)})</title>
<style>
body {{ font: 15px system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; }}
article {{ border: 1px solid #ccc; border-radius: 6px; margin: 1rem 0; padding: .5rem 1rem; }}
h2 {{ font-size: 1.1rem; margin: .3rem 0; }} .meta {{ color: #555; margin: .2rem 0 .5rem; }}
iframe {{ border: 1px solid #eee; width: 100%; height: 8rem; background: #fff; }}
</style></head><body>
<h1>Herald local mailbox</h1>
<p>{len(emails)} email(s) sent through the local SES. This page refreshes every
{REFRESH_SECONDS} s; <a href="/emails.json">as JSON</a>.</p>
{content}
</body></html>
"""


def mailbox_server(port: int, endpoint_url: str) -> BackgroundHttpServer:
    handler = type("BoundMailboxPageHandler", (MailboxPageHandler,), {"endpoint_url": endpoint_url})
    return BackgroundHttpServer("mailbox", port, handler)


def frontend_config(api_url: str) -> dict[str, str]:
    """The ``config.json`` the front-end reads at start-up, pointing at the local api."""
    return {"apiBaseUrl": api_url}


class FrontendHandler(QuietHandler):
    """The built SPA, with a generated ``/config.json`` and ``index.html`` as fallback."""

    config: ClassVar[bytes] = b"{}"

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/config.json":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.config)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(self.config)
            return
        if not Path(self.translate_path(path)).exists():
            self.path = "/index.html"  # a route of the SPA, as CloudFront's fallback does
        super().do_GET()


def frontend_server(port: int, dist: Path, api_url: str) -> BackgroundHttpServer:
    config = json.dumps(frontend_config(api_url)).encode()
    handler = type("BoundFrontendHandler", (FrontendHandler,), {"config": config})
    return BackgroundHttpServer("frontend", port, partial(handler, directory=str(dist)))
