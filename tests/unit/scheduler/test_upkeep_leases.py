"""Upkeep rebuilds a key's slot sets only when Redis lost them, and only once the limits have
settled; it reclaims slots of calls that ended, through the index of slot holders."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from fakeredis import FakeServer
from fakeredis.aioredis import FakeRedis

from core import keys
from core.settings import Settings
from db import calls as db_calls
from scheduler import upkeep as upkeep_module
from scheduler.upkeep import Upkeep

KEY = "7d1c9a60-5b2e-4c0f-8f3a-2e6b9d4a1c77"
CREATED_MS = int(datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def active_in_postgres(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The key's calls PostgreSQL has as active; the test fills it."""
    active: list[str] = []

    async def keys_with_active(conn: Any) -> list[tuple[str, str]]:
        return [(KEY, "simulated")] if active else []

    async def active_slots(conn: Any, pairs: list[tuple[str, str]]) -> dict:
        assert pairs == [(KEY, "simulated")]
        return {(KEY, "simulated"): {c: CREATED_MS for c in active}}

    async def ended_among(conn: Any, call_ids: list[str]) -> set[str]:
        return set(call_ids) - set(active)

    monkeypatch.setattr(db_calls, "fetch_keys_with_active_calls", keys_with_active)
    monkeypatch.setattr(db_calls, "fetch_active_slots", active_slots)
    monkeypatch.setattr(db_calls, "fetch_ended_among", ended_among)
    return active


def upkeep(redis: FakeRedis, settle_ms: int = 0) -> Upkeep:
    settings = Settings(_env_file=None, limit_restore_settle_ms=settle_ms)
    stores = SimpleNamespace(settings=settings, redis=redis, mux=redis, pool=object())
    return Upkeep(stores)  # type: ignore[arg-type]


async def leases(redis: FakeRedis) -> set[str]:
    """The slots of KEY's simulated calls (SLOTS_KNOWN left out)."""
    members = {m.decode() for m in await redis.zrange(keys.leases(KEY), 0, -1)}
    return members - {keys.SLOTS_KNOWN}


async def known(redis: FakeRedis) -> bool:
    return await redis.zscore(keys.leases(KEY), keys.SLOTS_KNOWN) is not None


async def test_a_lost_lease_set_is_rebuilt_from_the_active_calls(
    redis: FakeRedis, active_in_postgres: list[str]
) -> None:
    active_in_postgres += ["call-a", "call-b"]

    reclaimed, restored = await upkeep(redis).mend_leases()

    assert (reclaimed, restored) == (0, 1)
    assert await leases(redis) == {"call-a", "call-b"}
    assert await known(redis)


async def test_a_lost_set_is_restored_only_once_the_limits_have_settled(
    redis: FakeRedis, active_in_postgres: list[str]
) -> None:
    """Just after Redis lost them, an insert whose slot went with Redis may not have committed
    yet: PostgreSQL's list would miss it."""
    active_in_postgres += ["call-a"]

    _, restored = await upkeep(redis, settle_ms=60_000).mend_leases()

    assert restored == 0
    assert not await known(redis)


async def test_a_known_slot_set_is_left_as_the_limiter_keeps_it(
    redis: FakeRedis, active_in_postgres: list[str]
) -> None:
    # call-b ended and gave its slot back after PostgreSQL was read as having it active:
    # putting its slot back would hold a phantom slot until the lease check reclaims it.
    await redis.zadd(keys.leases(KEY), {"call-a": 1, keys.SLOTS_KNOWN: "+inf"})
    active_in_postgres += ["call-a", "call-b"]

    _, restored = await upkeep(redis).mend_leases()

    assert restored == 0
    assert await leases(redis) == {"call-a"}


class NoScan(FakeRedis):
    """A Redis whose keyspace must not be walked."""

    def scan_iter(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("upkeep walked the keyspace")


@pytest.fixture
async def no_scan_redis():
    client = NoScan(server=FakeServer())
    try:
        yield client
    finally:
        await client.aclose()


async def test_leaked_leases_are_found_through_the_index_not_the_keyspace(
    no_scan_redis: FakeRedis, active_in_postgres: list[str]
) -> None:
    redis = no_scan_redis
    await redis.zadd(keys.lease_holders(), {keys.LEASE_HOLDERS_SEEDED: "+inf", KEY: 1})
    await redis.zadd(keys.leases(KEY), {"ended-call": 1, "call-a": 1})
    active_in_postgres.append("call-a")
    for i in range(50):  # the live state of other calls: the keyspace is mostly these
        await redis.hset(keys.call_state(f"call-{i}"), "status", "COMPLETED")

    reclaimed, _ = await upkeep(redis).mend_leases()

    assert reclaimed == 1
    assert await leases(redis) == {"call-a"}


async def test_a_missing_index_is_seeded_from_the_lease_sets_once(
    redis: FakeRedis, active_in_postgres: list[str]
) -> None:
    await redis.zadd(keys.leases(KEY), {"ended-call": 1})

    reclaimed, _ = await upkeep(redis).mend_leases()

    assert reclaimed == 1
    holders = dict(await redis.zrange(keys.lease_holders(), 0, -1, withscores=True))
    assert set(holders) == {KEY.encode(), keys.LEASE_HOLDERS_SEEDED.encode()}


async def test_every_key_with_an_active_call_is_indexed_whatever_the_api_did(
    redis: FakeRedis, active_in_postgres: list[str]
) -> None:
    # The index exists, but the API process never named KEY in it (Redis lost it meanwhile).
    await redis.zadd(keys.lease_holders(), {keys.LEASE_HOLDERS_SEEDED: "+inf"})
    await redis.zadd(keys.leases(KEY), {"call-a": 1})
    active_in_postgres.append("call-a")

    await upkeep(redis).mend_leases()

    assert await redis.zscore(keys.lease_holders(), KEY) is not None


async def test_only_idle_keys_with_no_lease_leave_the_index(
    redis: FakeRedis, active_in_postgres: list[str]
) -> None:
    now = upkeep_module.now_ms()
    long_ago = now - upkeep_module.HOLDER_IDLE_MS - 1
    idle_empty, idle_holding, recent = "key-idle-empty", "key-idle-holding", "key-recent"
    await redis.zadd(
        keys.lease_holders(),
        {
            keys.LEASE_HOLDERS_SEEDED: "+inf",
            idle_empty: long_ago,
            idle_holding: long_ago,
            recent: now,
        },
    )
    active_in_postgres.append("long-call")
    await redis.zadd(keys.leases(idle_holding), {"long-call": long_ago})
    await redis.zadd(keys.leases(idle_empty), {keys.SLOTS_KNOWN: "+inf"})

    await upkeep(redis).mend_leases()

    left = {m.decode() for m in await redis.zrange(keys.lease_holders(), 0, -1)}
    # (KEY is there too: PostgreSQL has an active call of it, whose lease set is restored.)
    assert left == {keys.LEASE_HOLDERS_SEEDED, idle_holding, recent, KEY}
