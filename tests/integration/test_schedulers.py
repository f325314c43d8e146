"""Every scheduler dispatches due timers, so none's death pauses them; one leads upkeep, and a
change of leader is logged at WARNING and exported in /metrics."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from core import keys
from devstack.processes import Process
from tests.integration.conftest import Api
from tests.integration.platform import Platform
from tests.integration.test_upkeep import assert_every_call_completed_once


@pytest.fixture
async def redis_of() -> AsyncIterator:
    clients: list[Redis] = []

    def connect(platform: Platform) -> Redis:
        clients.append(Redis.from_url(platform.redis_url))
        return clients[-1]

    yield connect
    for client in clients:
        await client.aclose()


async def leader_name(redis: Redis, timeout_s: float = 5) -> str:
    """The name of the scheduler that leads (once one does)."""
    async with asyncio.timeout(timeout_s):
        while True:
            token = await redis.get(keys.SCHEDULER_LOCK)
            record = await redis.hgetall(keys.SCHEDULER_LEAD)
            if token is not None and record.get(b"token") == token:
                return record[b"holder"].decode()
            await asyncio.sleep(0.02)


def process_named(platform: Platform, name: str) -> Process:
    """The process a scheduler's name (`host:pid:random`) is of."""
    pid = int(name.split(":")[1])
    return next(p for p in platform.processes.values() if p.pid == pid)


def warnings_of(process: Process, starting: str) -> list[dict]:
    lines = [orjson.loads(line) for line in process.log_path.read_text().splitlines() if line]
    return [
        line for line in lines if line["level"] == "warning" and line["msg"].startswith(starting)
    ]


async def logged(process: Process, starting: str, timeout_s: float = 5) -> list[dict]:
    """The process's WARNING lines starting so, once there is one (lines leave through a
    writer thread, a few dozen milliseconds after they are logged)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if found := warnings_of(process, starting):
                return found
            await asyncio.sleep(0.05)


async def next_leader(redis: Redis, after: str, timeout_s: float = 5) -> str:
    async with asyncio.timeout(timeout_s):
        while True:
            if (name := await leader_name(redis)) != after:
                return name
            await asyncio.sleep(0.02)


async def test_timers_keep_firing_while_the_dead_leaders_lock_has_not_lapsed(
    platform_factory, make_api, redis_of
) -> None:
    # A lock that outlives the test: no standby can take the lead meanwhile, so whatever moves
    # the calls does not need it.
    own = await platform_factory({"SCHEDULER_LOCK_TTL_MS": "60000"})
    own.add("scheduler2", "scheduler")
    api = await make_api(max_concurrent=100, max_cps=100, on=own)
    redis = redis_of(own)
    leader = await leader_name(redis)
    token = await redis.get(keys.SCHEDULER_LOCK)

    process_named(own, leader).kill()
    started = time.monotonic()
    ids = [(await api.create_call())[1]["call_id"] for _ in range(10)]
    await assert_every_call_completed_once(own, api, ids)

    # A call lives 0.3-0.55 s here: done within seconds, the dead leader's lock (a minute) still
    # in place.
    assert time.monotonic() - started < 10
    assert await redis.get(keys.SCHEDULER_LOCK) == token


async def test_a_standby_scheduler_killed_changes_nothing(
    platform_factory, make_api, redis_of
) -> None:
    own = await platform_factory()
    own.add("scheduler2", "scheduler")
    api = await make_api(max_concurrent=100, max_cps=100, on=own)
    redis = redis_of(own)
    leader = await leader_name(redis)
    standby = next(
        p
        for name, p in own.processes.items()
        if name.startswith("scheduler") and p is not process_named(own, leader)
    )

    standby.kill()
    ids = [(await api.create_call())[1]["call_id"] for _ in range(10)]

    await assert_every_call_completed_once(own, api, ids)
    assert await leader_name(redis) == leader


async def test_a_failover_is_logged_at_warning_and_exported(
    platform_factory, http, redis_of
) -> None:
    # SCHEDULER_LOCK_TTL_MS is 1.5 s in the tests' settings.
    own = await platform_factory()
    own.add("scheduler2", "scheduler")
    api = Api(http, own, await own.new_key())
    redis = redis_of(own)
    first = await leader_name(redis)
    dead = process_named(own, first)

    dead.kill()
    killed_at = time.time()
    second = await next_leader(redis, first)

    standby = process_named(own, second)
    took = await logged(standby, "took the lead")
    assert len(took) == 1, took
    assert took[0]["scheduler"] == second and took[0]["previous"] == first
    # The lock lapsed 1.5 s after the last renewal; the standby tries every 0.5 s (and a busy
    # machine may run it late).
    assert 0 <= took[0]["vacant_ms"] <= 1000
    assert took[0]["since_renewal_ms"] >= 1500
    assert f"after {first}; vacant" in took[0]["msg"]

    async with http.get(api.url("/metrics?format=prometheus"), headers=api.auth) as response:
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(await response.text())
            for sample in family.samples
        }
    assert samples["mockcomms_scheduler_leader", (("scheduler", second),)] == 1
    assert ("mockcomms_scheduler_leader", (("scheduler", first),)) not in samples
    assert samples["mockcomms_scheduler_leader_changes_total", ()] == 2
    changed = samples["mockcomms_scheduler_leader_changed_timestamp_seconds", ()]
    assert killed_at < changed < time.time()
    assert samples["mockcomms_scheduler_lead_vacant_seconds", ()] == took[0]["vacant_ms"] / 1000

    # A leader that stalls past its lock's lifetime finds the lead taken, and says by whom.
    third = own.add("scheduler3", "scheduler")
    standby.signal(signal.SIGSTOP)
    try:
        current = await next_leader(redis, second)
    finally:
        standby.signal(signal.SIGCONT)
    assert process_named(own, current) is third
    lost = await logged(standby, "lost the lead")
    assert lost[0]["msg"] == f"lost the lead to {current}; standing by"
    assert lost[0]["scheduler"] == second
