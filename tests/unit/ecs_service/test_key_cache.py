"""The key cache: what it may serve, and what a revocation or a lost listener takes away."""

from __future__ import annotations

from uuid import uuid4

from ecs_service.api.key_cache import MISS, KeyCache
from ecs_service.api_keys import StoredKey, hash_key

KEY_ID = "AbCdEfGhJkMn"
KEY = f"hrld_{KEY_ID}_{'s' * 43}"


def stored() -> StoredKey:
    return StoredKey(KEY_ID, hash_key(KEY), uuid4())


def listening_cache(now: list[float]) -> KeyCache:
    cache = KeyCache(ttl_seconds=60, clock=lambda: now[0])
    cache.trust(True)
    return cache


def test_a_remembered_key_is_served_until_its_time_is_up() -> None:
    now = [0.0]
    cache = listening_cache(now)
    row = stored()
    cache.remember(KEY_ID, row, cache.generation())

    served = cache.lookup(KEY_ID)
    now[0] = 60.0

    assert (served, cache.lookup(KEY_ID)) == (row, MISS)


def test_a_row_read_before_a_revocation_is_not_remembered_after_it() -> None:
    # Given a request that read the key's row, then a revocation of that key
    cache = listening_cache([0.0])
    generation = cache.generation()
    cache.forget(KEY_ID)

    # When the request remembers what it read, Then the cache does not keep it
    cache.remember(KEY_ID, stored(), generation)
    assert cache.lookup(KEY_ID) is MISS


def test_a_revoked_key_is_forgotten() -> None:
    cache = listening_cache([0.0])
    cache.remember(KEY_ID, stored(), cache.generation())

    cache.forget(KEY_ID)

    assert cache.lookup(KEY_ID) is MISS


def test_nothing_is_served_while_the_listener_is_not_listening() -> None:
    # Given a cache with a key, whose listener then lost its connection
    cache = listening_cache([0.0])
    cache.remember(KEY_ID, stored(), cache.generation())
    cache.trust(False)

    # Then nothing is served, or remembered, until it listens again — and then it starts empty
    cache.remember(KEY_ID, stored(), cache.generation())
    missed_while_deaf = cache.lookup(KEY_ID)
    cache.trust(True)
    assert (missed_while_deaf, cache.lookup(KEY_ID)) == (MISS, MISS)


def test_the_cache_keeps_at_most_its_size_dropping_the_least_recently_used() -> None:
    cache = KeyCache(max_keys=2)
    cache.trust(True)
    for key_id in ("a", "b"):
        cache.remember(key_id, None, cache.generation())
    cache.lookup("a")

    cache.remember("c", None, cache.generation())

    assert [cache.lookup(key_id) is MISS for key_id in ("a", "b", "c")] == [False, True, False]
