"""The SES send rate, and the token bucket in PostgreSQL that paces every relay to it.

**The rate.** SES accepts at most the account's maximum send rate (recipients per second,
To + Cc + Bcc) and throttles the rest. ``SES_MAX_SEND_RATE`` sets it (``ConfiguredSendRate``);
0, the default, reads it from SES (``SesAccountSendRate``: sesv2 ``GetAccount``'s
``SendQuota.MaxSendRate``, read again every 5 minutes, the last known value kept while SES
cannot be read, 1 per second if it never could).

**The bucket.** One row of ``send_rate_buckets``, shared by every relay of every worker:
a relay takes tokens (recipients) from it before it claims due rows, releases only the
rows whose recipients those tokens cover, and gives back what it did not use. The row is
refilled for the time since its last take by the same one-statement upsert as the api's
request-rate buckets (``ecs_service.tenant_limits``), in autocommit, so no relay holds its
lock for longer than that statement.

Shaped to SES's measure, recipients in any one second. A bucket of ``burst`` tokens
refilled at ``refill`` per second lets at most ``burst + refill`` be taken in any second,
so ``SendPace`` sizes them to stay within the rate: a burst of a tenth of a second (at
least 2 recipients from 10/s up, else 1) and a refill of ``floor(rate) + 1 - burst``
(takes are whole recipients, so fewer than ``floor(rate) + 1`` is at most
``floor(rate)``). At 14 recipients/s the relays release 13/s on average and never more
than 14 in a second; under 1/s, one recipient every ``1/rate`` seconds. A relay waits for
a chunk of half the burst before it claims, so a backlog is claimed some twenty times a
second rather than a row per claim, and a relay that wakes late loses no refill to the
cap; a relay takes at most the burst per pass, so one whose passes take longer than the
burst lasts releases less than the rate (more workers make up for it). An email
with more recipients than a relay holds tokens for is sent once the bucket has earned
them (the relay takes them ahead, into debt, which every relay waits out), so it too
stays within the rate; SES accepts up to 50 recipients per email whatever the rate.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools import Logger
    from mypy_boto3_sesv2 import SESV2Client
    from sqlalchemy import Row, TextClause
    from sqlalchemy.engine import Connection, Engine

# What SES's GetAccount answer is trusted for, and how soon a failed read is tried again.
ACCOUNT_CACHE_SECONDS: Final = 300.0
ACCOUNT_RETRY_SECONDS: Final = 30.0
# The rate while SES has never been read (a new SES account's sandbox rate).
FALLBACK_SEND_RATE: Final = 1.0
# The bucket's burst: this much of a second's rate, and at least 2 recipients from
# TWO_PER_PASS_FROM recipients/s up (else 1), so a relay whose passes are slower than a
# tenth of a second still keeps up at SES's usual first rate, 14/s.
BURST_SECONDS: Final = 0.1
TWO_PER_PASS_FROM: Final = 10.0
BUCKET_NAME: Final = "ses"
# The relay's thread asks GetAccount: a slow SES must not hold it for long.
SES_ACCOUNT_CONFIG: Final = Config(
    connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
)


class SendRate(Protocol):
    """The most recipients per second Herald may ask SES to send."""

    def per_second(self) -> float: ...


@dataclass(frozen=True)
class ConfiguredSendRate:
    """A rate set by configuration (``SES_MAX_SEND_RATE``)."""

    rate: float

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("the send rate must be a positive number of recipients per second")

    def per_second(self) -> float:
        return self.rate


class SesAccountSendRate:
    """The account's ``MaxSendRate`` as SES's ``GetAccount`` (API v2) says it, cached.

    Read on first use and again every ``cache_seconds``. When SES cannot be read (no
    ``ses:GetAccount`` permission, an outage, an answer without a send quota) the last
    known rate stays in use, or ``fallback`` if there is none, and the read is tried again
    after ``retry_seconds``. Logs where the rate came from once, then only changes and the
    first failure of a run of them. Not thread-safe: one relay thread asks it.
    """

    def __init__(
        self,
        client: SESV2Client,
        *,
        logger: Logger,
        cache_seconds: float = ACCOUNT_CACHE_SECONDS,
        retry_seconds: float = ACCOUNT_RETRY_SECONDS,
        fallback: float = FALLBACK_SEND_RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._logger = logger
        self._cache_seconds = cache_seconds
        self._retry_seconds = retry_seconds
        self._fallback = fallback
        self._clock = clock
        self._known: float | None = None
        self._next_read = -math.inf
        self._failing = False

    def per_second(self) -> float:
        now = self._clock()
        if now >= self._next_read:
            self._refresh(now)
        return self._known if self._known is not None else self._fallback

    def _refresh(self, now: float) -> None:
        try:
            rate = float(self._client.get_account()["SendQuota"]["MaxSendRate"])
            if not (rate > 0 and math.isfinite(rate)):
                raise ValueError(f"MaxSendRate {rate} is not a positive rate")
        except (ClientError, BotoCoreError, KeyError, ValueError) as error:
            self._next_read = now + self._retry_seconds
            if not self._failing:
                self._failing = True
                using = "the last known rate" if self._known is not None else "the fallback"
                self._logger.warning(
                    f"cannot read the SES send rate (GetAccount); pacing at {using} until it can",
                    extra={
                        "error": _first_line(error),
                        "send_rate": self._known or self._fallback,
                        "retry_in_s": self._retry_seconds,
                    },
                )
            return
        self._next_read = now + self._cache_seconds
        self._failing = False
        if rate != self._known:
            message = "SES send rate" if self._known is None else "SES send rate changed"
            self._logger.info(
                message,
                extra={
                    "send_rate": rate,
                    "previous_send_rate": self._known,
                    "source": "SES GetAccount SendQuota.MaxSendRate",
                    "read_every_s": self._cache_seconds,
                },
            )
            self._known = rate


def send_rate_from_settings(
    configured: float, ses_client: Callable[[], SESV2Client], *, logger: Logger
) -> SendRate:
    """``SES_MAX_SEND_RATE`` as a ``SendRate``: that rate, or SES's (``configured`` 0).

    ``ses_client`` is called only when SES is asked, so a configured rate needs no SES
    permission and no client.
    """
    if configured > 0:
        logger.info("SES send rate", extra={"send_rate": configured, "source": "SES_MAX_SEND_RATE"})
        return ConfiguredSendRate(configured)
    return SesAccountSendRate(ses_client(), logger=logger)


@dataclass(frozen=True)
class SendPace:
    """How the bucket is shaped for a rate (see the module doc)."""

    rate: float

    @property
    def burst(self) -> float:
        """Tokens the bucket holds at most: a tenth of a second's rate, at least 2 (1 under
        10/s)."""
        least = 2.0 if self.rate >= TWO_PER_PASS_FROM else 1.0
        return max(least, self.rate * BURST_SECONDS)

    @property
    def refill_per_second(self) -> float:
        """The bucket's refill: with the burst, never more than the rate in any second."""
        if self.rate < 1:
            return self.rate  # one recipient (the burst) every 1/rate seconds
        return math.floor(self.rate) + 1 - self.burst

    @property
    def chunk(self) -> int:
        """Tokens a relay waits for before it claims: half the burst (at least 1), so the
        bucket still fills while a relay wakes and takes, and a late take loses nothing."""
        return max(1, math.floor(self.burst / 2))

    def seconds_until(self, tokens: float, level: float) -> float:
        """How long until the bucket, now at ``level``, holds ``tokens``."""
        return max(0.0, (tokens - level) / self.refill_per_second)


@dataclass(frozen=True)
class Taken:
    """Tokens taken from the bucket, and its level after the take."""

    granted: int
    level: float


class PostgresSendRateBucket:
    """The shared bucket in ``send_rate_buckets``: ``take`` before a claim, ``give_back``
    after the send, each one short statement.

    On one autocommit connection of its own, taken from ``engine`` once and detached from
    its pool (no pre-ping round trip per statement: the relay asks up to twenty times a
    second while a backlog drains); after a database error it is dropped, and the next
    statement opens a new one. Thread-safe (one statement at a time).
    """

    def __init__(self, engine: Engine, name: str = BUCKET_NAME) -> None:
        self._engine = engine
        self._name = name
        self._lock = threading.Lock()
        self._connection: Connection | None = None

    def take(self, pace: SendPace, *, want: int, at_least: int) -> Taken:
        """Refill the bucket for the time since its last take, then take ``want`` whole
        tokens, or as many as it holds if that is ``at_least``; none if it holds fewer."""
        row = self._execute(
            TAKE_TOKENS,
            {
                "name": self._name,
                "want": want,
                "at_least": min(at_least, pace.chunk),
                "burst": pace.burst,
                "rate": pace.refill_per_second,
            },
        )
        assert row is not None  # an upsert always returns its row
        return Taken(int(row.granted), float(row.tokens))

    def give_back(self, pace: SendPace, tokens: float) -> float:
        """Return unused ``tokens`` (negative: take that many more, into debt); the level
        after. The bucket never holds more than its burst."""
        row = self._execute(
            GIVE_BACK_TOKENS,
            {
                "name": self._name,
                "tokens": tokens,
                "burst": pace.burst,
                "rate": pace.refill_per_second,
            },
        )
        # No row: PostgreSQL emptied the UNLOGGED table (a crash); the next take refills it.
        return pace.burst if row is None else float(row.tokens)

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def _execute(self, statement: TextClause, parameters: dict[str, object]) -> Row[Any] | None:
        with self._lock:
            for attempt in (1, 2):
                connection = self._connect()
                try:
                    row = connection.execute(statement, parameters).first()
                    connection.commit()  # autocommit: ends SQLAlchemy's autobegun block only
                    return row
                except DBAPIError as error:
                    self._drop_connection()
                    # A connection PostgreSQL dropped (a restart, a failover) is replaced once;
                    # otherwise the relay's pass fails and the worker backs off.
                    if not (error.connection_invalidated and attempt == 1):
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> Connection:
        if self._connection is None:
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            connection.detach()
            self._connection = connection
        return self._connection

    def _drop_connection(self) -> None:
        if self._connection is not None:
            self._connection.invalidate()
            self._connection.close()
            self._connection = None


# The level now: refilled at :rate for the time since the last take, never above :burst.
_LEVEL = """least(CAST(:burst AS double precision), b.tokens
    + CAST(:rate AS double precision) * greatest(0, extract(epoch FROM now() - b.refilled_at)))"""

# Take :want whole tokens of :level, or all the whole tokens there if that is :at_least.
_TAKE = "CASE WHEN floor(level) >= :at_least THEN least(:want, floor(level)) ELSE 0 END"

# Refill, then take. A new bucket starts full. One statement, one short row lock.
TAKE_TOKENS: Final = text(f"""
INSERT INTO send_rate_buckets AS b (name, tokens, granted, refilled_at)
SELECT :name, level - take, take, now()
FROM (SELECT CAST(:burst AS double precision) AS level) AS full_bucket,
     LATERAL (SELECT {_TAKE} AS take) AS decided
ON CONFLICT (name) DO UPDATE SET (tokens, granted, refilled_at) = (
    SELECT level - take, take, refilled_at
    FROM (
        SELECT level, refilled_at, {_TAKE} AS take
        FROM (SELECT {_LEVEL} AS level, greatest(b.refilled_at, now()) AS refilled_at) AS refill
    ) AS decided
)
RETURNING granted, tokens
""")

# Refill, then add :tokens (negative: take them, into debt), never above :burst.
GIVE_BACK_TOKENS: Final = text(f"""
UPDATE send_rate_buckets AS b
SET (tokens, refilled_at) = (
    SELECT least(CAST(:burst AS double precision), level + :tokens), refilled_at
    FROM (SELECT {_LEVEL} AS level, greatest(b.refilled_at, now()) AS refilled_at) AS refill
)
WHERE name = :name
RETURNING tokens
""")


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
