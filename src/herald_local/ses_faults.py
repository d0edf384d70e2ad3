"""Local-only SES faults: throttling for chosen recipients, and SES's send-rate limit.

``--ses-throttle reader@example.org=5`` (or ``HERALD_LOCAL_SES_THROTTLE``) makes the
next 5 SESv2 ``SendEmail`` requests with that recipient fail with HTTP 429
``TooManyRequestsException``, as SES does when the account's send rate is exceeded;
later requests go through. It exists to watch (and test) a throttle: the task runner's
SES client makes one attempt a call, the runner retries in place with jitter, then
queues a delayed copy of the task (never the record back towards the DLQ).

``--ses-max-send-rate N`` (``SesSendRateLimit``) makes the local SES refuse what SES
refuses over an account's maximum send rate: a ``SendEmail`` that would take the
recipients accepted in the last second over N fails with HTTP 400, error code
``Throttling`` and message "Maximum sending rate exceeded.", the error SES documents for
its send rate (the task runner counts it as a throttle and retries it).

Both live in the local AWS endpoint (WSGI middleware in front of moto), so the real
handler, its client and its retries all run as they would against SES.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SEND_EMAIL_PATH = "/v2/email/outbound-emails"
THROTTLED_BODY = {
    "__type": "TooManyRequestsException",
    "message": "Maximum sending rate exceeded (herald-local --ses-throttle).",
}
# SES's documented answer over the account's maximum send rate ("Throttling", "Maximum
# sending rate exceeded."), in the SES API v2 error format: the code in the
# x-amzn-ErrorType header, the message in the JSON body, HTTP 400.
RATE_THROTTLING_CODE = "Throttling"
RATE_THROTTLING_MESSAGE = "Maximum sending rate exceeded."


def parse_throttle_rules(specs: Iterable[str]) -> dict[str, int]:
    """``["a@example.org=5", "b@example.org=1"]`` -> ``{"a@example.org": 5, ...}``."""
    rules: dict[str, int] = {}
    for spec in specs:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            address, separator, count = item.rpartition("=")
            if not separator or "@" not in address or not count.isdigit():
                raise ValueError(f"{item!r} is not RECIPIENT=COUNT, e.g. reader@example.org=5")
            rules[address.lower()] = int(count)
    return rules


class SesThrottle:
    """WSGI middleware: 429 for the next ``count`` SendEmail requests naming a recipient."""

    def __init__(self, app: WSGIApplication, rules: Mapping[str, int]) -> None:
        self._app = app
        self._remaining = dict(rules)
        self._lock = threading.Lock()

    @property
    def remaining(self) -> dict[str, int]:
        with self._lock:
            return dict(self._remaining)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not self._remaining or environ.get("PATH_INFO") != SEND_EMAIL_PATH:
            return self._app(environ, start_response)
        if self._take(recipients_of(read_body(environ))):
            payload = json.dumps(THROTTLED_BODY).encode()
            start_response(
                "429 Too Many Requests",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(payload))),
                    ("x-amzn-ErrorType", "TooManyRequestsException"),
                ],
            )
            return [payload]
        return self._app(environ, start_response)

    def _take(self, recipients: Iterable[str]) -> bool:
        with self._lock:
            for recipient in recipients:
                if self._remaining.get(recipient, 0) > 0:
                    self._remaining[recipient] -= 1
                    return True
        return False


class SendRateWindow:
    """At most ``max_per_second`` recipients accepted in any second, as SES's send rate.

    SES counts recipients, not requests, and does not document how it measures the
    rate; this counts strictly: the recipients of the sends accepted in the last second
    (or, under one per second, the last ``1/N`` seconds and one recipient), so pacing
    that is right passes and a burst over the rate is refused. A send with more
    recipients than the budget is accepted only when the window is empty (SES accepts up
    to 50 recipients per email whatever the rate).
    """

    def __init__(
        self, max_per_second: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_per_second <= 0:
            raise ValueError("the maximum send rate must be above 0 recipients per second")
        self.max_per_second = max_per_second
        self._window_seconds = max(1.0, 1.0 / max_per_second)
        self._budget = max_per_second * self._window_seconds
        self._clock = clock
        self._accepted: deque[tuple[float, int]] = deque()
        self._in_window = 0
        self._lock = threading.Lock()

    def admit(self, recipients: int) -> bool:
        """Count a send of ``recipients`` and say yes, or refuse it and count nothing."""
        with self._lock:
            now = self._clock()
            while self._accepted and self._accepted[0][0] <= now - self._window_seconds:
                self._in_window -= self._accepted.popleft()[1]
            if self._in_window and self._in_window + recipients > self._budget:
                return False
            self._accepted.append((now, recipients))
            self._in_window += recipients
            return True

    def give_back(self, recipients: int) -> None:
        """Uncount the newest send of ``recipients``: SES refused it for another reason."""
        with self._lock:
            for index in range(len(self._accepted) - 1, -1, -1):
                if self._accepted[index][1] == recipients:
                    del self._accepted[index]
                    self._in_window -= recipients
                    return


class SesSendRateLimit:
    """WSGI middleware: SES's ``Throttling`` for a SendEmail over the maximum send rate."""

    def __init__(self, app: WSGIApplication, window: SendRateWindow) -> None:
        self._app = app
        self.window = window

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != SEND_EMAIL_PATH or environ.get("REQUEST_METHOD") != "POST":
            return self._app(environ, start_response)
        count = len(recipients_of(read_body(environ))) or 1
        if not self.window.admit(count):
            return throttling_response(start_response)

        def counted_only_if_sent(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            # A send moto refuses (unknown sender, bad request) is not a send SES counts.
            if not status.startswith("2"):
                self.window.give_back(count)
            return start_response(status, headers, exc_info)

        return self._app(environ, counted_only_if_sent)


def throttling_response(start_response: StartResponse) -> list[bytes]:
    """SES API v2's answer over the maximum send rate."""
    payload = json.dumps({"message": RATE_THROTTLING_MESSAGE}).encode()
    start_response(
        "400 Bad Request",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("x-amzn-ErrorType", RATE_THROTTLING_CODE),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ],
    )
    return [payload]


def read_body(environ: WSGIEnvironment) -> bytes:
    """The request's body, leaving an unread copy for the application behind."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body: bytes = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def recipients_of(body: bytes) -> list[str]:
    """Every To, Cc and Bcc address of a SendEmail request body, lower-cased, in order."""
    try:
        request: dict[str, Any] = json.loads(body or b"{}")
    except ValueError:
        return []
    destination = request.get("Destination") or {}
    return [
        str(address).lower()
        for field in ("ToAddresses", "CcAddresses", "BccAddresses")
        for address in destination.get(field) or []
    ]
