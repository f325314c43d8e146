"""A key's streams are capped across API processes: each process's count lives in Redis, renewed
while it runs, dropped once it lapses (the process died), restored if Redis lost it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fakeredis.aioredis import FakeRedis

from api.realtime.stream_counts import StreamCounts
from core import keys
from core.errors import RateLimited

KEY = "key-1"
CAP = 3
LIFETIME_MS = 300


@pytest.fixture
async def redis() -> AsyncIterator[FakeRedis]:
    client = FakeRedis()
    try:
        yield client
    finally:
        await client.aclose()


def api_process(redis: FakeRedis, name: str) -> StreamCounts:
    return StreamCounts(redis, name, CAP, LIFETIME_MS)


async def counted(redis: FakeRedis) -> dict[str, int]:
    raw = await redis.hgetall(keys.stream_counts(KEY))
    return {k.decode(): int(v) for k, v in raw.items()}


async def test_the_cap_counts_the_keys_streams_on_every_api_process(redis: FakeRedis) -> None:
    one, two = api_process(redis, "api-1"), api_process(redis, "api-2")
    await one.take(KEY)
    await one.take(KEY)
    await two.take(KEY)

    with pytest.raises(RateLimited, match=r"Too many open streams for this key \(3\)"):
        await two.take(KEY)
    with pytest.raises(RateLimited):
        await one.take(KEY)
    assert await counted(redis) == {"api-1": 2, "api-2": 1}


async def test_a_closed_stream_frees_its_place_at_once(redis: FakeRedis) -> None:
    one, two = api_process(redis, "api-1"), api_process(redis, "api-2")
    for _ in range(CAP):
        await one.take(KEY)

    one.give_back(KEY)
    await asyncio.sleep(0.05)  # the give-back runs in the background, right after

    await two.take(KEY)
    assert await counted(redis) == {"api-1": 2, "api-2": 1}


async def test_a_dead_processs_streams_are_given_back_once_its_count_lapses(
    redis: FakeRedis,
) -> None:
    dead, alive = api_process(redis, "api-dead"), api_process(redis, "api-alive")
    await alive.start()
    try:
        for _ in range(CAP):
            await dead.take(KEY)  # never renewed: the process was killed
        with pytest.raises(RateLimited):
            await alive.take(KEY)

        await asyncio.sleep(LIFETIME_MS / 1000 + 0.1)

        await alive.take(KEY)
        await asyncio.sleep(LIFETIME_MS / 1000)  # renewed meanwhile: still counted
        assert await counted(redis) == {"api-alive": 1}
    finally:
        await alive.aclose()


async def test_a_count_redis_lost_is_set_again_at_the_next_renewal(redis: FakeRedis) -> None:
    one = api_process(redis, "api-1")
    await one.start()
    try:
        await one.take(KEY)
        await one.take(KEY)
        await redis.flushall()

        await asyncio.sleep(LIFETIME_MS / 3000 + 0.1)

        assert await counted(redis) == {"api-1": 2}
    finally:
        await one.aclose()


async def test_a_stopping_process_drops_its_counts(redis: FakeRedis) -> None:
    one = api_process(redis, "api-1")
    await one.start()
    await one.take(KEY)

    await one.aclose()

    assert await counted(redis) == {}
    assert await redis.zcard(keys.stream_holders(KEY)) == 0


async def test_a_take_whose_client_left_while_it_ran_gives_the_stream_back(
    redis: FakeRedis,
) -> None:
    one = api_process(redis, "api-1")
    taking = asyncio.create_task(one.take(KEY))
    await asyncio.sleep(0)  # the script is on its way
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking

    await asyncio.sleep(0.05)

    assert await counted(redis) == {}


async def test_every_stream_closing_at_once_is_taken_off_exactly(redis: FakeRedis) -> None:
    one = StreamCounts(redis, "api-1", 1000, LIFETIME_MS)
    for _ in range(500):
        await one.take(KEY)

    for _ in range(499):
        one.give_back(KEY)
    await asyncio.sleep(0.1)

    assert await counted(redis) == {"api-1": 1}
