"""Per-key limits, checked in one Redis script: exact under parallel requests, nothing leaked."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
from redis.asyncio import Redis

from core import keys
from tests.integration.conftest import Api
from tests.integration.platform import Platform

CPS_MESSAGE = "Calls per second limit exceeded (2)"
CONCURRENCY_MESSAGE = "Maximum concurrent calls reached (3)"


@pytest.fixture(scope="module")
async def slow_platform(tmp_path_factory: pytest.TempPathFactory):
    """Calls live 2.5 s or more (half speed), long enough to overlap at 2 calls per second."""
    running = Platform(tmp_path_factory.mktemp("slow"), settings={"TIME_SCALE": "0.5"})
    try:
        yield await running.start()
    finally:
        await running.stop()


async def key_id_of(api: Api, pg) -> str:
    return await pg.fetchval("SELECT id::text FROM api_keys WHERE name = $1", api.key)


async def wait_until(predicate, timeout: float = 10, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")


async def test_four_parallel_creates_give_two_201_and_two_cps_429(make_api) -> None:
    api = await make_api()  # the defaults: 3 concurrent, 2 per second

    results = await asyncio.gather(
        *(api.create_call(**{"from": f"+111{i}", "to": f"+222{i}"}) for i in range(1, 5))
    )

    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201, 201, 429, 429]
    for status, body, headers in results:
        if status == 429:
            assert body == {"error": "Rate limit exceeded", "message": CPS_MESSAGE}
            assert headers["Retry-After"] == "1"
            assert headers["RateLimit-Limit"] == "2"
            assert headers["RateLimit-Remaining"] == "0"
            assert headers["RateLimit-Reset"] == "1"
        else:
            assert headers["RateLimit-Limit"] == "2"


async def test_fourth_concurrent_call_is_refused_with_the_seed_message(make_api) -> None:
    api = await make_api(max_cps=100)  # concurrency at its default of 3

    assert [(await api.create_call())[0] for _ in range(3)] == [201, 201, 201]
    status, body, headers = await api.create_call()

    assert (status, body) == (429, {"error": "Rate limit exceeded", "message": CONCURRENCY_MESSAGE})
    assert headers["Retry-After"] == "1"
    assert headers["RateLimit-Limit"] == "3"


async def test_per_key_limits_override_the_defaults(make_api) -> None:
    api = await make_api(max_concurrent=5, max_cps=100)
    results = await asyncio.gather(*(api.create_call() for _ in range(7)))
    assert sorted(status for status, _, _ in results) == [201] * 5 + [429] * 2
    assert {body["message"] for status, body, _ in results if status == 429} == {
        "Maximum concurrent calls reached (5)"
    }


async def test_original_concurrency_scenario_at_default_limits(
    http, slow_platform: Platform
) -> None:
    """The original README's test, spacing compressed from 2 s to 0.6 s (it only has to clear
    the per-second window): three overlapping calls, then four at once are all refused."""
    api = Api(http, slow_platform, await slow_platform.new_key())
    redis = Redis.from_url(slow_platform.redis_url)
    try:
        for number in ("+1111", "+3333", "+5555"):
            status, _, _ = await api.create_call(**{"from": number, "to": "+2222"})
            assert status == 201
            await asyncio.sleep(0.6)

        burst = await asyncio.gather(
            *(api.create_call(**{"from": f"+777{i}", "to": f"+888{i}"}) for i in range(1, 5))
        )

        assert [status for status, _, _ in burst] == [429] * 4
        assert {body["message"] for _, body, _ in burst} == {CONCURRENCY_MESSAGE}
        # Refused requests took nothing: still exactly the three leases.
        lease_keys = [k async for k in redis.scan_iter(match=keys.lease_keys_pattern())]
        assert len(lease_keys) == 1
        assert await redis.zcount(lease_keys[0], "-inf", "(+inf") == 3
    finally:
        await redis.aclose()


async def test_a_slot_is_freed_when_its_call_completes(make_api, redis: Redis, pg) -> None:
    api = await make_api(max_concurrent=1, max_cps=100)
    _, first, _ = await api.create_call()
    assert (await api.create_call())[0] == 429

    await api.wait_for(first["call_id"], lambda c: c["status"] == "COMPLETED")

    status, _, _ = await api.create_call()
    assert status == 201
    key_id = await key_id_of(api, pg)
    assert first["call_id"].encode() not in await redis.zrange(keys.leases(key_id), 0, -1)


async def test_rejected_requests_take_no_rate_slot(make_api, redis: Redis, pg) -> None:
    api = await make_api(max_concurrent=1, max_cps=2)
    assert (await api.create_call())[0] == 201
    for _ in range(5):
        status, body, _ = await api.create_call()
        assert (status, body["message"]) == (429, "Maximum concurrent calls reached (1)")
    key_id = await key_id_of(api, pg)
    assert await redis.zcard(keys.rate_window(key_id)) == 1
    assert await redis.zcount(keys.leases(key_id), "-inf", "(+inf") == 1


async def test_leaked_leases_are_reclaimed(make_api, redis: Redis, pg) -> None:
    """A worker killed before releasing a lease leaves it behind; upkeep drops it once the
    call is over in PostgreSQL (or never existed)."""
    api = await make_api(max_concurrent=1, max_cps=100)
    _, call, _ = await api.create_call()
    await api.wait_recorded(call["call_id"])
    key_id = await key_id_of(api, pg)
    old = int(time.time() * 1000) - 60_000
    await redis.zadd(keys.leases(key_id), {call["call_id"]: old, str(uuid.uuid4()): old})
    assert (await api.create_call())[0] == 429

    await wait_until(lambda: _zcard_is(redis, keys.leases(key_id), 0))

    assert (await api.create_call())[0] == 201


async def test_leases_lost_with_redis_are_restored_from_postgresql(
    http, slow_platform: Platform
) -> None:
    api = Api(http, slow_platform, await slow_platform.new_key(max_cps=100))
    redis = Redis.from_url(slow_platform.redis_url)
    pg = await asyncpg.connect(slow_platform.dsn)
    try:
        assert [(await api.create_call())[0] for _ in range(3)] == [201] * 3
        # This key's own set: the module's earlier calls may still hold leases of other keys.
        lease_key = keys.leases(await key_id_of(api, pg))
        assert await redis.zcount(lease_key, "-inf", "(+inf") == 3
        await redis.delete(lease_key)

        await wait_until(lambda: _zcard_is(redis, lease_key, 3), timeout=2)

        status, body, _ = await api.create_call()
        assert (status, body["message"]) == (429, CONCURRENCY_MESSAGE)
    finally:
        await redis.aclose()
        await pg.close()


async def _zcard_is(redis: Redis, key, count: int) -> bool:
    return await redis.zcount(key, "-inf", "(+inf") == count


POLICY = '"concurrency";q={};qu="concurrent-requests", "cps";q={};w=1'


async def test_retry_after_at_the_concurrency_limit_is_when_the_calls_first_slot_frees(
    slow_platform: Platform, http
) -> None:
    """Retry-After is the time until the key's earliest call is due to end (its pending timer,
    plus the shortest delays after it), not a second; and a create that waits that long is
    taken."""
    api = Api(http, slow_platform, await slow_platform.new_key(max_concurrent=1, max_cps=10))
    status, first, headers = await api.create_call()
    assert status == 201
    assert headers["RateLimit-Policy"] == POLICY.format(1, 10)

    status, body, headers = await api.create_call()
    assert (status, body["message"]) == (429, "Maximum concurrent calls reached (1)")
    assert headers["RateLimit-Policy"] == POLICY.format(1, 10)
    assert (headers["RateLimit-Limit"], headers["RateLimit-Remaining"]) == ("1", "0")
    # At half speed the first call needs at least 0.5 + 1.5 + 0.5 s to end.
    assert 2 <= int(headers["Retry-After"]) <= 6, headers
    assert headers["RateLimit-Reset"] == headers["Retry-After"]

    # Once it is answered or not, the time left is its last timer's: exact to the second.
    call = await api.wait_for(first["call_id"], lambda c: c["status"] in ("ANSWERED", "UNANSWERED"))
    status, _, headers = await api.create_call()
    if status == 429:  # it may have ended meanwhile
        wait_s = int(headers["Retry-After"])
        assert 1 <= wait_s <= 2, headers
        await asyncio.sleep(wait_s + 0.2)
        assert (await api.create_call())[0] == 201, call


async def test_retry_after_at_the_rate_limit_is_within_the_second(make_api) -> None:
    api = await make_api(max_concurrent=10, max_cps=1)
    assert (await api.create_call())[0] == 201
    status, body, headers = await api.create_call()
    assert (status, body["message"]) == (429, "Calls per second limit exceeded (1)")
    assert headers["Retry-After"] == "1"
    assert (headers["RateLimit-Limit"], headers["RateLimit-Remaining"]) == ("1", "0")
    assert headers["RateLimit-Policy"] == POLICY.format(10, 1)
