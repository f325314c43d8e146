"""Per-key limits on an in-memory Redis: concurrency leases and the per-second window."""

from __future__ import annotations

import asyncio

import pytest
from fakeredis.aioredis import FakeRedis

from core import keys
from core.errors import RateLimited
from core.limiter import Grant, Limiter

KEY = "key-1"
MAX_ACTIVE, MAX_CPS = 3, 2  # the service defaults


async def redis_now_ms(redis: FakeRedis) -> int:
    seconds, micros = await redis.time()
    return seconds * 1000 + micros // 1000


async def held(redis: FakeRedis) -> tuple[list, list]:
    """Both sorted sets of KEY, members with scores."""
    return (
        await redis.zrange(keys.leases(KEY), 0, -1, withscores=True),
        await redis.zrange(keys.rate_window(KEY), 0, -1, withscores=True),
    )


async def hold_leases(redis: FakeRedis, count: int) -> None:
    """Active calls of KEY created long enough ago that the rate window is empty."""
    now = await redis_now_ms(redis)
    await redis.zadd(keys.leases(KEY), {f"held-{i}": now - 60_000 for i in range(count)})


async def fill_rate_window(redis: FakeRedis, count: int) -> None:
    now = await redis_now_ms(redis)
    await redis.zadd(keys.rate_window(KEY), {f"recent-{i}": now for i in range(count)})


async def test_two_of_four_parallel_creates_on_an_idle_key_are_granted(redis: FakeRedis) -> None:
    limiter = Limiter(redis)

    results = await asyncio.gather(
        *(limiter.acquire(KEY, f"call-{i}", MAX_ACTIVE, MAX_CPS) for i in range(4)),
        return_exceptions=True,
    )

    grants = [r for r in results if isinstance(r, Grant)]
    refusals = [r for r in results if isinstance(r, RateLimited)]
    assert len(grants) == 2
    assert len(refusals) == 2
    assert {r.message for r in refusals} == {"Calls per second limit exceeded (2)"}


async def test_third_and_fourth_parallel_creates_take_no_slot(redis: FakeRedis) -> None:
    limiter = Limiter(redis)

    await asyncio.gather(
        *(limiter.acquire(KEY, f"call-{i}", MAX_ACTIVE, MAX_CPS) for i in range(4)),
        return_exceptions=True,
    )

    leases, window = await held(redis)
    assert len(leases) == 2
    assert [m for m, _ in leases] == [m for m, _ in window]


async def test_fourth_concurrent_call_is_refused_by_the_concurrency_limit(
    redis: FakeRedis,
) -> None:
    await hold_leases(redis, 3)

    with pytest.raises(RateLimited) as refused:
        await Limiter(redis).acquire(KEY, "call-4", MAX_ACTIVE, MAX_CPS)

    assert refused.value.message == "Maximum concurrent calls reached (3)"


async def test_concurrency_is_checked_before_rate_when_both_are_full(redis: FakeRedis) -> None:
    await hold_leases(redis, 3)
    await fill_rate_window(redis, 2)

    with pytest.raises(RateLimited) as refused:
        await Limiter(redis).acquire(KEY, "call-4", MAX_ACTIVE, MAX_CPS)

    assert refused.value.message == "Maximum concurrent calls reached (3)"


async def test_concurrency_refusal_carries_its_limit_and_a_reset(redis: FakeRedis) -> None:
    await hold_leases(redis, 3)

    with pytest.raises(RateLimited) as refused:
        await Limiter(redis).acquire(KEY, "call-4", MAX_ACTIVE, MAX_CPS)

    assert refused.value.limit == 3
    assert refused.value.remaining == 0
    assert refused.value.reset_s >= 1


async def test_rate_refusal_carries_its_limit_and_a_reset(redis: FakeRedis) -> None:
    await fill_rate_window(redis, 2)

    with pytest.raises(RateLimited) as refused:
        await Limiter(redis).acquire(KEY, "call-3", MAX_ACTIVE, MAX_CPS)

    assert refused.value.message == "Calls per second limit exceeded (2)"
    assert refused.value.limit == 2
    assert refused.value.remaining == 0
    # The window is one second long, so the oldest slot frees within it.
    assert refused.value.reset_s == 1


async def test_concurrency_refusal_consumes_nothing(redis: FakeRedis) -> None:
    await hold_leases(redis, 3)
    await fill_rate_window(redis, 1)
    before = await held(redis)

    with pytest.raises(RateLimited):
        await Limiter(redis).acquire(KEY, "call-4", MAX_ACTIVE, MAX_CPS)

    assert await held(redis) == before


async def test_rate_refusal_consumes_nothing(redis: FakeRedis) -> None:
    await hold_leases(redis, 1)
    await fill_rate_window(redis, 2)
    before = await held(redis)

    with pytest.raises(RateLimited):
        await Limiter(redis).acquire(KEY, "call-3", MAX_ACTIVE, MAX_CPS)

    assert await held(redis) == before


async def test_grant_takes_a_lease_and_a_rate_slot(redis: FakeRedis) -> None:
    await Limiter(redis).acquire(KEY, "call-1", MAX_ACTIVE, MAX_CPS)

    leases, window = await held(redis)
    assert [m for m, _ in leases] == [b"call-1"]
    assert [m for m, _ in window] == [b"call-1"]


async def test_undo_gives_both_slots_back(redis: FakeRedis) -> None:
    limiter = Limiter(redis)
    await limiter.acquire(KEY, "call-1", MAX_ACTIVE, MAX_CPS)
    await limiter.acquire(KEY, "call-2", MAX_ACTIVE, MAX_CPS)

    await limiter.undo(KEY, "call-2")

    leases, window = await held(redis)
    assert [m for m, _ in leases] == [b"call-1"]
    assert [m for m, _ in window] == [b"call-1"]
    # The freed rate slot can be taken again within the same second.
    grant = await limiter.acquire(KEY, "call-3", MAX_ACTIVE, MAX_CPS)
    assert grant.remaining == 0


async def test_grant_remaining_counts_down_to_zero(redis: FakeRedis) -> None:
    limiter = Limiter(redis)

    grants = [await limiter.acquire(KEY, f"call-{i}", 10, 5) for i in range(5)]

    assert [g.remaining for g in grants] == [4, 3, 2, 1, 0]
    assert {g.limit for g in grants} == {5}
    assert {g.reset_s for g in grants} == {1}


async def test_slots_older_than_the_window_no_longer_count(redis: FakeRedis) -> None:
    now = await redis_now_ms(redis)
    await redis.zadd(keys.rate_window(KEY), {"old-1": now - 1_500, "old-2": now - 1_200})

    grant = await Limiter(redis).acquire(KEY, "call-3", MAX_ACTIVE, MAX_CPS)

    assert grant.remaining == 1
    _, window = await held(redis)
    assert [m for m, _ in window] == [b"call-3"]


async def test_limits_of_one_key_do_not_touch_another(redis: FakeRedis) -> None:
    await hold_leases(redis, 3)
    await fill_rate_window(redis, 2)

    grant = await Limiter(redis).acquire("key-2", "call-1", MAX_ACTIVE, MAX_CPS)

    assert grant.remaining == 1


async def test_a_key_that_takes_a_lease_is_named_in_the_lease_holders_index(
    redis: FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1_000_000]
    monkeypatch.setattr("core.limiter.now_ms", lambda: clock[0])
    limiter = Limiter(redis)

    await limiter.acquire(KEY, "call-1", MAX_ACTIVE, MAX_CPS)
    assert await redis.zscore(keys.lease_holders(), KEY) == 1_000_000

    # Named again at most once a second per process; the score is its latest acquire then.
    clock[0] += 500
    await limiter.acquire(KEY, "call-2", MAX_ACTIVE, 100)
    assert await redis.zscore(keys.lease_holders(), KEY) == 1_000_000
    clock[0] += 600
    await limiter.acquire(KEY, "call-3", MAX_ACTIVE, 100)
    assert await redis.zscore(keys.lease_holders(), KEY) == 1_001_100
