"""A local-only fault switch: the local SES answers "throttled" for chosen recipients.

``--ses-throttle reader@example.org=5`` (or ``HERALD_LOCAL_SES_THROTTLE``) makes the
next 5 SESv2 ``SendEmail`` requests with that recipient fail with HTTP 429
``TooManyRequestsException``, as SES does when the account's send rate is exceeded;
later requests go through. It exists to watch (and test) a transient failure: botocore
retries the request itself first (5 attempts in its default mode), then the task runner
reports the record in ``batchItemFailures`` and SQS redelivers it.

It lives in the local AWS endpoint (a WSGI middleware in front of moto), so the real
handler, its client and botocore's retries all run as they would against SES.
"""

from __future__ import annotations

import io
import json
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SEND_EMAIL_PATH = "/v2/email/outbound-emails"
THROTTLED_BODY = {
    "__type": "TooManyRequestsException",
    "message": "Maximum sending rate exceeded (herald-local --ses-throttle).",
}


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
        # Read the body to look at it, then hand moto an unread copy.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if self._take(_recipients(body)):
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

    def _take(self, recipients: set[str]) -> bool:
        with self._lock:
            for recipient in recipients:
                if self._remaining.get(recipient, 0) > 0:
                    self._remaining[recipient] -= 1
                    return True
        return False


def _recipients(body: bytes) -> set[str]:
    try:
        request: dict[str, Any] = json.loads(body or b"{}")
    except ValueError:
        return set()
    destination = request.get("Destination") or {}
    return {
        str(address).lower()
        for field in ("ToAddresses", "CcAddresses", "BccAddresses")
        for address in destination.get(field) or []
    }
