"""The key cache: what it may serve, and what a revocation or a lost listener takes away."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from sqlalchemy import create_engine

from ecs_service.api.admission import UNAUTHENTICATED
from ecs_service.api.admission_middleware import lookup_party
from ecs_service.api.key_cache import MISS, Authenticator, KeyCache
from ecs_service.api_keys import Principal, StoredKey, hash_key

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


def test_a_cached_key_is_accepted_until_its_expiry_and_refused_from_it() -> None:
    # Given a key expiring at noon, cached at 11:59 (the row would be served until 12:00:59)
    noon = datetime(2026, 12, 3, 12, tzinfo=UTC)
    wall = [noon - timedelta(minutes=1)]
    row = StoredKey(KEY_ID, hash_key(KEY), uuid4(), expires_at=noon)
    cache = listening_cache([0.0])
    cache.remember(KEY_ID, row, cache.generation())
    # (create_engine does not connect: the cache alone answers)
    authenticator = Authenticator(
        cache, create_engine("postgresql+psycopg://"), wall_clock=lambda: wall[0]
    )

    # When the key is presented a microsecond before noon, and at noon
    wall[0] = noon - timedelta(microseconds=1)
    before = authenticator.from_cache(KEY)
    wall[0] = noon
    at = authenticator.from_cache(KEY)

    # Then it is accepted before, refused at its expiry: no database read, no cache age
    assert (before, at) == (Principal(row.tenant_id, KEY_ID), None)


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
    rows = {key_id: StoredKey(key_id, hash_key(KEY), uuid4()) for key_id in ("a", "b", "c")}
    for key_id in ("a", "b"):
        cache.remember(key_id, rows[key_id], cache.generation())
    cache.lookup("a")

    cache.remember("c", rows["c"], cache.generation())

    assert [cache.lookup(key_id) is MISS for key_id in ("a", "b", "c")] == [False, True, False]


def test_the_ids_of_no_active_key_are_kept_apart_at_most_their_own_size() -> None:
    cache = KeyCache(max_absent=2)
    cache.trust(True)
    for key_id in ("a", "b"):
        cache.remember(key_id, None, cache.generation())
    cache.lookup("a")

    cache.remember("c", None, cache.generation())

    assert [cache.lookup(key_id) for key_id in ("a", "b", "c")] == [None, MISS, None]


def test_made_up_key_ids_never_push_a_real_key_out() -> None:
    # Given a cache holding one real key
    cache = listening_cache([0.0])
    row = stored()
    cache.remember(KEY_ID, row, cache.generation())

    # When far more made-up key ids than it holds keys are read and found in no row
    for n in range(cache.max_keys + cache.max_absent):
        cache.remember(f"made{n:08d}", None, cache.generation())

    # Then the real key is still served
    assert cache.lookup(KEY_ID) == row


def test_the_tenant_of_a_key_read_active_is_known_after_its_row_expired() -> None:
    # Given a key read active, whose row then expired
    now = [0.0]
    cache = listening_cache(now)
    row = stored()
    cache.remember(KEY_ID, row, cache.generation())
    now[0] = 61.0
    assert cache.lookup(KEY_ID) is MISS

    # Then its tenant is still known
    assert cache.tenant_of(KEY_ID) == row.tenant_id


def test_the_tenant_of_a_key_read_active_is_known_across_a_reconnection() -> None:
    # Given a key read active
    cache = listening_cache([0.0])
    row = stored()
    cache.remember(KEY_ID, row, cache.generation())

    # When the listener loses its connection, then reconnects
    cache.trust(False)
    known_while_deaf = cache.tenant_of(KEY_ID)
    cache.trust(True)

    # Then the row is gone, the tenant is not
    assert (known_while_deaf, cache.tenant_of(KEY_ID)) == (row.tenant_id, row.tenant_id)
    assert cache.lookup(KEY_ID) is MISS


def test_a_key_read_active_while_the_listener_is_down_has_its_tenant_known() -> None:
    cache = KeyCache()  # not listening yet
    row = stored()

    cache.remember(KEY_ID, row, cache.generation())

    assert cache.tenant_of(KEY_ID) == row.tenant_id
    assert cache.lookup(KEY_ID) is MISS


def test_a_revoked_key_has_no_known_tenant() -> None:
    cache = listening_cache([0.0])
    cache.remember(KEY_ID, stored(), cache.generation())

    cache.forget(KEY_ID)

    assert cache.tenant_of(KEY_ID) is None


def test_a_key_id_read_in_no_active_row_has_no_known_tenant_any_more() -> None:
    # Given a key whose tenant is known, revoked while the listener was down
    cache = KeyCache()
    cache.remember(KEY_ID, stored(), cache.generation())

    # When its id is read again and no active key has it
    cache.remember(KEY_ID, None, cache.generation())

    # Then its tenant is not known any more
    assert cache.tenant_of(KEY_ID) is None


def test_the_known_tenants_are_bounded_dropping_the_least_recently_used() -> None:
    cache = KeyCache(max_tenants=2)
    rows = {key_id: StoredKey(key_id, hash_key(KEY), uuid4()) for key_id in ("a", "b", "c")}
    for key_id in ("a", "b"):
        cache.remember(key_id, rows[key_id], cache.generation())
    cache.tenant_of("a")

    cache.remember("c", rows["c"], cache.generation())

    assert [cache.tenant_of(key_id) is None for key_id in ("a", "b", "c")] == [False, True, False]


@pytest.mark.parametrize("listening", [True, False], ids=["listening", "not-listening"])
def test_a_missed_key_whose_id_is_known_is_looked_up_as_its_tenant(listening: bool) -> None:
    # Given a key read active, whose row the cache no longer serves
    cache = KeyCache()
    row = stored()
    cache.remember(KEY_ID, row, cache.generation())
    cache.trust(listening)

    # Then its lookup takes its tenant's share of the slots
    assert lookup_party(cache, KEY) == row.tenant_id


@pytest.mark.parametrize("listening", [True, False], ids=["listening", "not-listening"])
@pytest.mark.parametrize(
    "presented",
    [KEY, "hrld_ZyXwVuTsRqPn_" + "s" * 43, "not-a-key"],
    ids=["new", "made-up", "malformed"],
)
def test_any_other_missed_key_is_looked_up_as_unauthenticated(
    listening: bool, presented: str
) -> None:
    # Given a cache that never read these key ids active
    cache = KeyCache()
    cache.trust(listening)

    # Then their lookups share the unauthenticated part of the slots
    assert lookup_party(cache, presented) == UNAUTHENTICATED
