"""The local AWS endpoint: a moto server in this process, on 127.0.0.1 only.

It is moto's own server application (what ``moto_server`` and ``ThreadedMotoServer``
run), with SES's mailbox simulator (``ses_simulator``) and the local SES faults
(``ses_faults``) in front and without a log line per
request: the task runner and the worker long-poll it all the time.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from herald_local.aws_isolation import REGION
from herald_local.ses_faults import SendRateWindow, SesSendRateLimit, SesThrottle
from herald_local.ses_simulator import SesMailboxSimulator

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from werkzeug.serving import BaseWSGIServer


class QuietRequestHandler(MotoRequestHandler):
    """moto's request handler, logging only server errors."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).startswith("5"):
            super().log_request(code, size)


class LocalAwsEndpoint:
    """moto on ``127.0.0.1:port``; ``url`` is what ``AWS_ENDPOINT_URL`` is set to.

    Parameters
    ----------
    port
        0 picks a free port.
    ses_throttle
        Recipient -> how many SendEmail requests naming it answer 429 (``ses_faults``).
    ses_max_send_rate
        Recipients per second the local SES accepts, refusing more with SES's
        ``Throttling`` error (``ses_faults.SesSendRateLimit``); None: no limit.
    log
        Where the mailbox simulator says an event could not be published.

    ``ses_simulator`` publishes SES's events once told where (``publish_to``).
    """

    def __init__(
        self,
        port: int,
        *,
        ses_throttle: Mapping[str, int] | None = None,
        ses_max_send_rate: float | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self._port = port
        self._log = log
        self._ses_throttle = dict(ses_throttle or {})
        self._ses_max_send_rate = ses_max_send_rate
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._ses_simulator: SesMailboxSimulator | None = None

    @property
    def ses_simulator(self) -> SesMailboxSimulator:
        """The mailbox simulator in front of moto's SES (``publish_to`` starts its events)."""
        if self._ses_simulator is None:
            raise RuntimeError("the local AWS endpoint is not started")
        return self._ses_simulator

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local AWS endpoint is not started")
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> LocalAwsEndpoint:
        application = DomainDispatcherApplication(create_backend_app)
        # Inside the faults: only an email SES accepted has events.
        self._ses_simulator = SesMailboxSimulator(application, region=REGION, log=self._log)
        application = self._ses_simulator  # type: ignore[assignment]
        if self._ses_max_send_rate is not None:
            window = SendRateWindow(self._ses_max_send_rate)
            application = SesSendRateLimit(application, window)  # type: ignore[assignment]
        # The per-recipient fault comes first: what it refuses never reaches SES's count.
        if self._ses_throttle:
            application = SesThrottle(application, self._ses_throttle)  # type: ignore[assignment]
        self._server = make_server(
            "127.0.0.1",
            self._port,
            application,
            threaded=True,
            request_handler=QuietRequestHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-aws", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._ses_simulator is not None:
            self._ses_simulator.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
