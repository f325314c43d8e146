"""Nothing is lost when a process dies or Redis forgets: the scheduler resumes from PostgreSQL."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
from redis.asyncio import Redis

from core import keys
from tests.integration.conftest import Api
from tests.integration.platform import Platform


async def assert_every_call_completed_once(
    platform: Platform, api: Api, call_ids: list[str]
) -> None:
    for call_id in call_ids:
        await api.wait_recorded(call_id, timeout=30)
    conn = await asyncpg.connect(platform.dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT call_id::text, array_agg(to_status ORDER BY seq) AS path, array_agg(seq ORDER BY seq) AS seqs
              FROM call_events WHERE call_id = ANY($1::uuid[]) GROUP BY call_id
            """,
            call_ids,
        )
    finally:
        await conn.close()
    assert len(rows) == len(call_ids)
    for row in rows:
        assert row["path"] in (
            ["QUEUED", "RINGING", "ANSWERED", "COMPLETED"],
            ["QUEUED", "RINGING", "UNANSWERED", "COMPLETED"],
        ), row
        assert row["seqs"] == [1, 2, 3, 4]


async def test_calls_survive_a_worker_killed_mid_run(platform_factory, make_api) -> None:
    own = await platform_factory({"TIME_SCALE": "0.2"})
    api = await make_api(max_concurrent=1000, max_cps=1000, on=own)
    ids = [
        body["call_id"]
        for _, body, _ in await asyncio.gather(*(api.create_call() for _ in range(60)))
    ]
    await asyncio.sleep(0.5)  # some calls have moved, the rest are mid-life

    own.processes["worker1"].kill()
    await asyncio.sleep(1.0)  # timers fall due with no worker; a job may have died mid-batch
    own.add("worker2", "worker")

    await assert_every_call_completed_once(own, api, ids)


async def test_calls_survive_redis_flushed_mid_run_and_limits_recover(
    platform_factory, make_api
) -> None:
    own = await platform_factory({"TIME_SCALE": "0.2"})
    api = await make_api(max_concurrent=40, max_cps=1000, on=own)
    ids = [
        body["call_id"]
        for _, body, _ in await asyncio.gather(*(api.create_call() for _ in range(40)))
    ]
    redis = Redis.from_url(own.redis_url)
    try:
        await asyncio.sleep(0.5)
        await redis.flushall()

        await assert_every_call_completed_once(own, api, ids)

        # Leases were rebuilt from PostgreSQL and released as the calls ended: the key has
        # its whole allowance again.
        async def leases_left() -> int:
            return sum(
                [
                    await redis.zcount(k, "-inf", "(+inf")  # SLOTS_KNOWN left out
                    async for k in redis.scan_iter(match=keys.lease_keys_pattern())
                ]
            )

        for _ in range(100):
            if await leases_left() == 0:
                break
            await asyncio.sleep(0.05)
        assert await leases_left() == 0
        results = await asyncio.gather(*(api.create_call() for _ in range(40)))
        assert {status for status, _, _ in results} == {201}
    finally:
        await redis.aclose()


async def test_a_standby_scheduler_takes_over_when_the_leader_dies(
    platform_factory, make_api
) -> None:
    own = await platform_factory()
    standby = own.add("scheduler2", "scheduler")
    api = await make_api(max_concurrent=100, max_cps=100, on=own)
    redis = Redis.from_url(own.redis_url)
    try:
        await asyncio.sleep(0.5)
        leader = await redis.get(keys.SCHEDULER_LOCK)
        assert leader is not None

        own.processes["scheduler"].signal(signal.SIGKILL)
        ids = [(await api.create_call())[1]["call_id"] for _ in range(5)]

        # The standby dispatches meanwhile; the lock lapses after SCHEDULER_LOCK_TTL_MS (1.5 s
        # here) and the standby takes the lead for upkeep.
        await assert_every_call_completed_once(own, api, ids)
        assert standby.alive
        async with asyncio.timeout(3):
            while True:
                if await redis.get(keys.SCHEDULER_LOCK) not in (None, leader):
                    break
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


async def test_only_one_scheduler_leads(platform_factory) -> None:
    own = await platform_factory()
    own.add("scheduler2", "scheduler")
    redis = Redis.from_url(own.redis_url)
    try:
        tokens = set()
        for _ in range(20):
            tokens.add(await redis.get(keys.SCHEDULER_LOCK))
            await asyncio.sleep(0.1)
        assert len(tokens) == 1 and None not in tokens
    finally:
        await redis.aclose()
