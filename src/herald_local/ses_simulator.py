"""The local SES as SES's mailbox simulator: each email it accepts produces SES's events.

A WSGI middleware in front of moto (moto accepts ``ConfigurationSetName`` and
``EmailTags`` and ignores both). For a ``SendEmail`` naming a configuration set:

- a configuration set that does not exist is refused as SES refuses it (HTTP 404
  ``NotFoundException``), so a runner with a wrong ``SES_CONFIGURATION_SET`` fails
  locally as it would in AWS;
- once moto has accepted the email and returned its message id, the email's events
  (``ses_events.simulated_events``, of the types the configuration set's EventBridge
  destination matches) are published a moment later, each wrapped as EventBridge
  delivers it, to the SQS targets of every template rule whose pattern matches it (in
  the template: ``FeedbackRule`` -> ``FeedbackQueue``). A refused or throttled send
  publishes nothing.

What was published is kept (the latest ``KEPT_EMAILS`` emails) and served as JSON at
``EVENTS_PATH`` on the local endpoint, for the mailbox page and ``herald-local mailbox``.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from moto.ses.models import ses_backends

from herald_local.eventbridge_rules import EventRule, matches
from herald_local.ses_events import (
    ACCOUNT_ID,
    EVENTS_PATH,
    AcceptedEmail,
    eventbridge_event,
    simulated_events,
)
from herald_local.ses_faults import SEND_EMAIL_PATH, read_body

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from mypy_boto3_sqs import SQSClient

KEPT_EMAILS = 1_000
SQS_BATCH = 10


@dataclass(frozen=True)
class SesEventRouting:
    """Which events SES publishes for each configuration set, and where EventBridge puts them.

    ``event_types``: configuration set -> the ``MatchingEventTypes`` of its EventBridge
    destination (a set without one publishes nothing); ``rules``: the default bus's rules.
    """

    sqs: SQSClient
    event_types: Mapping[str, frozenset[str]]
    rules: tuple[EventRule, ...]


class SesMailboxSimulator:
    """WSGI middleware: SES's events for every email sent through a configuration set.

    Until ``publish_to`` says where events go, sends go through and publish nothing.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        region: str,
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app = app
        self._region = region
        self._log = log
        self._routing: SesEventRouting | None = None
        self._publisher = _DelayedPublisher(self._deliver, clock)
        self._published: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def publish_to(self, routing: SesEventRouting) -> None:
        """From now on, publish the events of every email accepted, as ``routing`` says."""
        self._routing = routing
        self._publisher.start()

    def stop(self) -> None:
        """Stop publishing; events not yet due are dropped."""
        self._publisher.stop()

    def published(self) -> dict[str, list[dict[str, Any]]]:
        """SES message id -> what was published for it so far, oldest first."""
        with self._lock:
            return {message_id: list(events) for message_id, events in self._published.items()}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == EVENTS_PATH and environ.get("REQUEST_METHOD") == "GET":
            return self._serve_published(start_response)
        if path != SEND_EMAIL_PATH or environ.get("REQUEST_METHOD") != "POST":
            return self._app(environ, start_response)
        request = _json(read_body(environ))
        configuration_set = str(request.get("ConfigurationSetName") or "")
        if not configuration_set:
            return self._app(environ, start_response)
        if not self._configuration_set_exists(configuration_set):
            return _not_found(
                start_response, f"Configuration set <{configuration_set}> does not exist."
            )

        captured: list[str] = []

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            captured.append(status)
            return start_response(status, headers, exc_info)

        answer = self._app(environ, capture)
        try:
            body = b"".join(answer)
        finally:
            if hasattr(answer, "close"):
                answer.close()
        # Only once SES has accepted the email and given its id: a refusal publishes nothing.
        message_id = _json(body).get("MessageId") if captured[-1:] == ["200 OK"] else None
        if message_id and self._routing is not None:
            self._accepted(request, str(message_id), configuration_set, self._routing)
        return [body]

    def _accepted(
        self,
        request: dict[str, Any],
        message_id: str,
        configuration_set: str,
        routing: SesEventRouting,
    ) -> None:
        matching = routing.event_types.get(configuration_set, frozenset())
        if not matching:
            return
        recipients = request.get("Destination") or {}
        simple = (request.get("Content") or {}).get("Simple") or {}
        source = str(request.get("FromEmailAddress", ""))
        email = AcceptedEmail(
            message_id=message_id,
            source=source,
            to=[str(address) for address in recipients.get("ToAddresses") or []],
            cc=[str(address) for address in recipients.get("CcAddresses") or []],
            bcc=[str(address) for address in recipients.get("BccAddresses") or []],
            subject=str((simple.get("Subject") or {}).get("Data", "")),
            configuration_set=configuration_set,
            email_tags={
                str(tag.get("Name")): str(tag.get("Value"))
                for tag in request.get("EmailTags") or []
            },
            sent_at=datetime.now(UTC),
            region=self._region,
            sending_identity=source.rpartition("@")[2].rstrip(">").lower(),
        )
        for event in simulated_events(email, matching=matching):
            self._publisher.schedule(event.delay_seconds, (routing, message_id, event.record))

    def _deliver(self, due: list[_Pending]) -> None:
        """EventBridge's part: each event, in its envelope, to every matching rule's queues."""
        by_queue: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        routing = due[0][0]
        for _, message_id, record in due:
            envelope = eventbridge_event(
                record,
                region=self._region,
                configuration_set=str(record["mail"]["tags"]["ses:configuration-set"][0]),
                now=datetime.now(UTC),
            )
            for rule in routing.rules:
                if matches(rule.pattern, envelope):
                    for queue_url in rule.queue_urls:
                        by_queue.setdefault(queue_url, []).append((message_id, envelope))
        for queue_url, batch in by_queue.items():
            entries = [
                {"Id": str(number), "MessageBody": json.dumps(envelope)}
                for number, (_, envelope) in enumerate(batch)
            ]
            try:
                answer = routing.sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
            except (BotoCoreError, ClientError) as error:  # the endpoint is stopping, say
                self._log(f"local SES: {len(entries)} event(s) not published: {error}")
                continue
            failed = {entry["Id"] for entry in answer.get("Failed", [])}
            if failed:
                self._log(f"local SES: {len(failed)} event(s) refused by {queue_url}")
            with self._lock:
                for number, (message_id, envelope) in enumerate(batch):
                    if str(number) not in failed:
                        summary = event_summary(envelope["detail"])
                        self._published.setdefault(message_id, []).append(summary)
                        self._published.move_to_end(message_id)
                while len(self._published) > KEPT_EMAILS:
                    self._published.popitem(last=False)

    def _configuration_set_exists(self, name: str) -> bool:
        return name in ses_backends[ACCOUNT_ID][self._region].config_sets

    def _serve_published(self, start_response: StartResponse) -> list[bytes]:
        payload = json.dumps(self.published()).encode()
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]


def event_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the mailbox shows of an event: type, recipients, time, key facts, the send's tags."""
    event_type = str(record["eventType"])
    mail = record["mail"]
    summary: dict[str, Any] = {
        "type": event_type,
        "recipients": list(mail.get("destination", [])),
        "occurred_at": mail.get("timestamp"),
        "detail": {},
        # The send's own tags (Herald's), without the ses:* ones SES adds.
        "tags": {
            name: values[0]
            for name, values in mail.get("tags", {}).items()
            if not name.startswith("ses:") and values
        },
    }
    if (delivery := record.get("delivery")) is not None:
        summary |= {"recipients": delivery["recipients"], "occurred_at": delivery["timestamp"]}
        summary["detail"] = {"smtpResponse": delivery.get("smtpResponse")}
    elif (bounce := record.get("bounce")) is not None:
        bounced = bounce["bouncedRecipients"]
        summary |= {
            "recipients": [recipient["emailAddress"] for recipient in bounced],
            "occurred_at": bounce["timestamp"],
            "detail": {
                "bounceType": bounce["bounceType"],
                "bounceSubType": bounce["bounceSubType"],
                "diagnosticCode": bounced[0].get("diagnosticCode") if bounced else None,
            },
        }
    elif (complaint := record.get("complaint")) is not None:
        summary |= {
            "recipients": [
                recipient["emailAddress"] for recipient in complaint["complainedRecipients"]
            ],
            "occurred_at": complaint["timestamp"],
            "detail": {"complaintFeedbackType": complaint.get("complaintFeedbackType")},
        }
    return summary


# (how to route it, which email (SES's id), the SES event record)
_Pending = tuple[SesEventRouting, str, dict[str, Any]]


class _DelayedPublisher:
    """One thread that hands each event over when it is due, up to ten at a time."""

    def __init__(
        self, deliver: Callable[[list[_Pending]], None], clock: Callable[[], float]
    ) -> None:
        self._deliver = deliver
        self._clock = clock
        self._due: list[tuple[float, int, _Pending]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._wake:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="ses-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def schedule(self, delay: float, pending: _Pending) -> None:
        with self._wake:
            heapq.heappush(self._due, (self._clock() + delay, next(self._order), pending))
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._due or self._due[0][0] > self._clock()):
                    self._wake.wait(self._due[0][0] - self._clock() if self._due else None)
                if self._stopping:
                    return
                due: list[_Pending] = []
                while self._due and self._due[0][0] <= self._clock() and len(due) < SQS_BATCH:
                    due.append(heapq.heappop(self._due)[2])
            try:
                self._deliver(due)
            except Exception:  # noqa: BLE001 - one bad batch must not end publishing
                traceback.print_exc()


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _not_found(start_response: StartResponse, message: str) -> list[bytes]:
    """SES API v2's NotFoundException (HTTP 404)."""
    payload = json.dumps({"message": message}).encode()
    start_response(
        "404 Not Found",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("x-amzn-ErrorType", "NotFoundException"),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ],
    )
    return [payload]
