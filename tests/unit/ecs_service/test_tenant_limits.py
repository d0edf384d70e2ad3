"""The rate limiter's own logic, on an in-memory bucket store and a hand-driven clock: the
policy's numbers, the RateLimit headers, and how leases spare PostgreSQL round trips."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from ecs_service.tenant_limits import (
    DailyQuotaExceededError,
    Lease,
    RateDecision,
    RateLimitPolicy,
    RequestRateLimiter,
)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class InMemoryBuckets:
    """The shared store as PostgreSQL keeps it: refill by elapsed time, take whole tokens."""

    clock: Clock
    levels: dict[str, tuple[float, float]] = field(default_factory=dict)
    round_trips: int = 0
    known: bool = True

    def lease(self, key_id: str, want: int, policy: RateLimitPolicy) -> Lease | None:
        self.round_trips += 1
        if not self.known:
            return None
        level, at = self.levels.get(key_id, (float(policy.burst), self.clock.now))
        level = min(policy.burst, level + policy.rate_per_second * (self.clock.now - at))
        granted = min(want, math.floor(level))
        self.levels[key_id] = (level - granted, self.clock.now)
        return Lease(granted, level - granted)

    def close(self) -> None:
        pass


def limiter(
    policy: RateLimitPolicy, clock: Clock, buckets: InMemoryBuckets | None = None
) -> tuple[RequestRateLimiter, InMemoryBuckets]:
    store = buckets or InMemoryBuckets(clock)
    return RequestRateLimiter(None, policy, buckets=store, clock=clock), store


def test_default_policy_is_fifty_a_second_with_a_burst_of_a_hundred() -> None:
    # Given / When
    policy = RateLimitPolicy()

    # Then
    assert (policy.rate_per_second, policy.burst) == (50, 100)
    assert policy.max_lease == 5  # 0.1 s of the rate, at most a tenth of the burst


@pytest.mark.parametrize(
    ("rate", "burst", "message"),
    [
        (0, 100, "positive number of requests per second"),
        (math.inf, 100, "positive number of requests per second"),
        (50, 0, "burst must be at least 1"),
    ],
)
def test_a_policy_without_a_positive_rate_and_burst_is_refused(
    rate: float, burst: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimitPolicy(rate_per_second=rate, burst=burst)


def test_allowed_request_headers_follow_the_ratelimit_headers_draft() -> None:
    # Given a decision that leaves 42 tokens
    decision = RateDecision(allowed=True, remaining=42, reset_seconds=2, retry_after_seconds=0)

    # When
    headers = decision.headers(RateLimitPolicy())

    # Then the policy says 100 requests per 2 s (the burst, refilled at 50/s), no Retry-After
    assert headers == {
        "RateLimit-Policy": '"api-key";q=100;w=2',
        "RateLimit": '"api-key";r=42;t=2',
    }


def test_refused_request_headers_add_retry_after_no_earlier_than_the_window() -> None:
    # Given
    decision = RateDecision(allowed=False, remaining=0, reset_seconds=3, retry_after_seconds=3)

    # When
    headers = decision.headers(RateLimitPolicy(rate_per_second=10, burst=5))

    # Then a sub-second refill still advertises a whole-second window
    assert headers == {
        "RateLimit-Policy": '"api-key";q=10;w=1',
        "RateLimit": '"api-key";r=0;t=3',
        "Retry-After": "3",
    }


def test_burst_is_allowed_then_refused_with_retry_after() -> None:
    # Given a bucket of 10 refilled at 5/s, and a clock that stands still
    clock = Clock()
    rate_limiter, _ = limiter(RateLimitPolicy(rate_per_second=5, burst=10), clock)

    # When 11 requests arrive at once
    decisions = [rate_limiter.take("key") for _ in range(11)]

    # Then the burst goes through and the next is told to come back when a token is due
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert decisions[9].remaining == 0
    assert decisions[10] == RateDecision(False, 0, 1, 1)


def test_refused_key_is_refused_locally_until_its_next_token_is_due() -> None:
    # Given a drained bucket (1 token every 2 s)
    clock = Clock()
    rate_limiter, buckets = limiter(RateLimitPolicy(rate_per_second=0.5, burst=1), clock)
    rate_limiter.take("key")
    refused = rate_limiter.take("key")
    asked = buckets.round_trips

    # When a flood follows within the 2 s
    flood = [rate_limiter.take("key") for _ in range(1000)]

    # Then it is refused without asking the shared store, then allowed once the token is due
    assert refused.retry_after_seconds == 2
    assert not any(d.allowed for d in flood)
    assert buckets.round_trips == asked
    clock.now += 2
    assert rate_limiter.take("key").allowed


def test_busy_key_pays_one_round_trip_per_lease_not_per_request() -> None:
    # Given a generous policy and a key sending 1,000 requests/s to this process
    clock = Clock()
    rate_limiter, buckets = limiter(RateLimitPolicy(rate_per_second=10_000, burst=20_000), clock)

    # When 2,000 requests arrive over 2 s
    for _ in range(2000):
        assert rate_limiter.take("key").allowed
        clock.now += 0.001

    # Then leases grow to 0.1 s of that traffic (100 tokens): about 20 round trips, not 2,000
    assert buckets.round_trips <= 40


def test_quiet_key_holds_back_no_more_than_one_token() -> None:
    # Given a key sending one request a second
    clock = Clock()
    rate_limiter, buckets = limiter(RateLimitPolicy(), clock)

    # When ten arrive
    for _ in range(10):
        rate_limiter.take("key")
        clock.now += 1

    # Then each leased one token: nothing sits unspent in this process
    assert buckets.round_trips == 10
    assert buckets.levels["key"][0] >= RateLimitPolicy().burst - 1


def test_two_processes_share_one_bucket_within_the_documented_bound() -> None:
    # Given two processes (two limiters) on one store, each hammering the same key
    clock = Clock()
    policy = RateLimitPolicy(rate_per_second=100, burst=50)
    first, buckets = limiter(policy, clock)
    second, _ = limiter(policy, clock, buckets)

    # When they take for 2 s, interleaved, 10,000 attempts each
    allowed = 0
    for _ in range(10_000):
        allowed += first.take("key").allowed + second.take("key").allowed
        clock.now += 0.0002

    # Then together they got at most burst + rate x time + 2 processes x max_lease
    assert policy.burst + 100 * 2 - 2 * policy.max_lease <= allowed
    assert allowed <= policy.burst + 100 * 2 + 2 * policy.max_lease


def test_a_key_the_store_does_not_know_is_left_to_authentication() -> None:
    # Given a store without the key (revoked and deleted since authentication)
    clock = Clock()
    rate_limiter, buckets = limiter(RateLimitPolicy(), clock)
    buckets.known = False

    # When / Then
    assert rate_limiter.take("gone").allowed


def test_quota_error_says_the_limit_usage_and_when_it_renews() -> None:
    # Given / When
    error = DailyQuotaExceededError(limit=500, used=500, retry_after_seconds=3600)

    # Then
    assert (error.limit, error.used, error.retry_after_seconds) == (500, 500, 3600)
    assert str(error) == (
        "the daily quota of 500 emails is used up (500 scheduled today); "
        "it renews at 00:00 UTC, in 3600 s"
    )


def test_quota_error_of_a_batch_says_how_many_did_not_fit() -> None:
    # Given / When a batch of 3 is refused with 498 of 500 used
    error = DailyQuotaExceededError(500, 498, 60, requested=3)

    # Then
    assert error.requested == 3
    assert str(error).startswith(
        "the daily quota of 500 emails has no room for 3 more emails (498 scheduled today)"
    )


def test_refusal_answers_without_a_round_trip_only_while_the_key_is_known_to_be_over() -> None:
    # Given a key that spent its whole burst in this process
    clock = Clock()
    rate_limiter, store = limiter(RateLimitPolicy(rate_per_second=1, burst=2), clock)
    assert rate_limiter.refusal("k1") is None  # never seen: only take() can tell
    while rate_limiter.take("k1").allowed:
        pass
    trips = store.round_trips

    # When the event loop asks before admitting the next request
    refused = rate_limiter.refusal("k1")

    # Then it is refused with when to retry, spending nothing and asking nobody
    assert refused is not None
    assert (refused.allowed, refused.retry_after_seconds) == (False, 1)
    assert store.round_trips == trips
    # And once a token is due again, only take() decides
    clock.now += 1.5
    assert rate_limiter.refusal("k1") is None
    assert rate_limiter.take("k1").allowed


def test_take_locally_spends_the_tokens_this_process_holds_without_a_round_trip() -> None:
    # Given a busy key whose last lease left this process holding tokens
    clock = Clock()
    rate_limiter, store = limiter(RateLimitPolicy(rate_per_second=50, burst=100), clock)
    rate_limiter.take("k1")
    clock.now += 0.01
    rate_limiter.take("k1")  # leases 5 (the largest lease), spends one
    trips = store.round_trips

    # When the event loop takes for the next four requests
    decisions = [rate_limiter.take_locally("k1") for _ in range(4)]

    # Then each is allowed from the tokens held, and nobody was asked
    assert [d is not None and d.allowed for d in decisions] == [True] * 4
    assert store.round_trips == trips
    # And once they are spent, a lease is due: only take() can decide
    assert rate_limiter.take_locally("k1") is None


def test_take_locally_leaves_a_key_this_process_never_leased_for_to_take() -> None:
    clock = Clock()
    rate_limiter, store = limiter(RateLimitPolicy(rate_per_second=1, burst=2), clock)

    assert rate_limiter.take_locally("k1") is None
    assert store.round_trips == 0


def test_take_locally_refuses_a_key_over_its_rate_until_its_next_token_is_due() -> None:
    # Given a key that spent its whole burst
    clock = Clock()
    rate_limiter, store = limiter(RateLimitPolicy(rate_per_second=1, burst=2), clock)
    while rate_limiter.take("k1").allowed:
        pass
    trips = store.round_trips

    # When the event loop takes for its next request
    refused = rate_limiter.take_locally("k1")

    # Then it is refused with when to retry, asking nobody
    assert refused is not None
    assert (refused.allowed, refused.retry_after_seconds) == (False, 1)
    assert store.round_trips == trips
    # And once a token is due again, a lease is due
    clock.now += 1.5
    assert rate_limiter.take_locally("k1") is None
