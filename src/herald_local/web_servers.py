"""The runner's own small web servers: the mailbox page and the built front-end.

Both listen on 127.0.0.1 only and run in threads of the runner's process.

- The mailbox (``/``) lists the emails the local SES accepted, newest first, keeping
  itself current (``herald_local.mailbox_page``); ``/emails.json`` is the same as JSON.
  Given the local database, each email names its Herald message and send time.
- The front-end serves ``frontend/dist`` as CloudFront serves the bucket: files as they
  are (``robots.txt`` too), any other path gets ``index.html`` (the SPA's own routes),
  and ``/config.json`` is generated so the app calls the local api. Until the web app is
  built it answers with a page that says how to build it, and serves the build as soon
  as it exists (no restart).
"""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from herald_local.mailbox import (
    HeraldMessages,
    MailboxUnavailableError,
    read_mailbox,
    with_herald_sends,
)
from herald_local.mailbox_page import mailbox_html

if TYPE_CHECKING:
    from collections.abc import Callable


class BackgroundHttpServer:
    """A ``ThreadingHTTPServer`` on ``127.0.0.1:port``, serving from a daemon thread."""

    def __init__(
        self,
        name: str,
        port: int,
        handler: Callable[..., Any],
        *,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._on_stop = on_stop
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
        if self._on_stop:
            self._on_stop()


class QuietHandler(SimpleHTTPRequestHandler):
    """No access log: the mailbox page asks again every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return


class MailboxPageHandler(QuietHandler):
    """``/``: the mailbox page; ``/emails.json``: the emails as JSON."""

    endpoint_url: ClassVar[str] = ""
    herald: ClassVar[HeraldMessages | None] = None

    def do_GET(self) -> None:
        try:
            emails = read_mailbox(self.endpoint_url, timeout=3)
        except MailboxUnavailableError as error:
            self._send(503, "text/plain; charset=utf-8", str(error).encode())
            return
        if self.herald is not None:
            emails = with_herald_sends(emails, self.herald)
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


def mailbox_server(
    port: int, endpoint_url: str, database_url: str | None = None
) -> BackgroundHttpServer:
    """The mailbox page; with ``database_url``, each email names its Herald message."""
    herald = HeraldMessages(database_url) if database_url else None
    handler = type(
        "BoundMailboxPageHandler",
        (MailboxPageHandler,),
        {"endpoint_url": endpoint_url, "herald": herald},
    )
    return BackgroundHttpServer("mailbox", port, handler, on_stop=herald.close if herald else None)


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
        if not Path(self.translate_path("/index.html")).is_file():
            self._not_built()
            return
        if not Path(self.translate_path(path)).exists():
            self.path = "/index.html"  # a route of the SPA, as CloudFront's fallback does
        super().do_GET()

    def _not_built(self) -> None:
        body = NOT_BUILT_PAGE.encode()
        self.send_response(503)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


NOT_BUILT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Herald: the web app is not built yet</title></head>
<body><main><h1>The web app is not built yet</h1>
<p>Run <code>make frontend</code>, then reload this page: it is served as soon as it is
built.</p></main></body></html>
"""


def frontend_server(port: int, dist: Path, api_url: str) -> BackgroundHttpServer:
    config = json.dumps(frontend_config(api_url)).encode()
    handler = type("BoundFrontendHandler", (FrontendHandler,), {"config": config})
    return BackgroundHttpServer("frontend", port, partial(handler, directory=str(dist)))
