"""The lead: taken when vacant, kept by its holder, refused to others while held; its record
says who leads, how often the lead changed hands and how long it was vacant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fakeredis.aioredis import FakeRedis

from core import keys
from scheduler.leader import LeaderLock, read_lead

TTL_MS = 200


@pytest.fixture
async def redis() -> AsyncIterator[FakeRedis]:
    client = FakeRedis()
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_first_scheduler_takes_the_vacant_lead_with_no_earlier_leader_recorded(
    redis: FakeRedis,
) -> None:
    first = LeaderLock(redis, TTL_MS, "host-a:1:aaaaaa")

    taken = await first.hold()
    kept = await first.hold()

    assert (taken.leading, taken.took, taken.holder, taken.vacant_ms) == (True, True, None, None)
    assert (kept.leading, kept.took) == (True, False)
    lead = await read_lead(redis)
    assert (lead.holder, lead.changes) == ("host-a:1:aaaaaa", 1)


async def test_a_standby_is_told_who_leads_and_takes_the_lead_once_its_lock_lapses(
    redis: FakeRedis,
) -> None:
    leader = LeaderLock(redis, TTL_MS, "host-a:1:aaaaaa")
    standby = LeaderLock(redis, TTL_MS, "host-b:1:bbbbbb")
    await leader.hold()

    refused = await standby.hold()
    await asyncio.sleep(TTL_MS / 1000 + 0.1)  # the leader died: no renewal
    taken = await standby.hold()

    assert (refused.leading, refused.holder) == (False, "host-a:1:aaaaaa")
    assert (taken.leading, taken.took, taken.holder) == (True, True, "host-a:1:aaaaaa")
    # Vacant from the lapse to the take; the last renewal a lifetime before that.
    assert taken.vacant_ms is not None and 50 <= taken.vacant_ms < 1000
    assert taken.since_renewal_ms is not None
    assert taken.since_renewal_ms >= taken.vacant_ms + TTL_MS - 5
    lead = await read_lead(redis)
    assert (lead.holder, lead.changes, lead.vacant_ms) == ("host-b:1:bbbbbb", 2, taken.vacant_ms)
    # The old leader, had it only stalled, learns it lost the lead, and to whom.
    lost = await leader.hold()
    assert (lost.leading, lost.holder) == (False, "host-b:1:bbbbbb")


async def test_a_leader_that_steps_down_leaves_the_lead_vacant_from_that_moment(
    redis: FakeRedis,
) -> None:
    leader = LeaderLock(redis, 60_000, "host-a:1:aaaaaa")
    standby = LeaderLock(redis, 60_000, "host-b:1:bbbbbb")
    await leader.hold()

    await leader.release()
    assert (await read_lead(redis)).holder is None
    taken = await standby.hold()

    assert taken.took and taken.vacant_ms is not None and taken.vacant_ms < 1000


async def test_a_release_by_a_scheduler_that_lost_the_lead_leaves_the_new_leader_alone(
    redis: FakeRedis,
) -> None:
    old = LeaderLock(redis, TTL_MS, "host-a:1:aaaaaa")
    new = LeaderLock(redis, TTL_MS, "host-b:1:bbbbbb")
    await old.hold()
    await asyncio.sleep(TTL_MS / 1000 + 0.1)
    await new.hold()

    await old.release()

    assert (await read_lead(redis)).holder == "host-b:1:bbbbbb"
    assert await redis.get(keys.SCHEDULER_LOCK) == new.token.encode()


async def test_with_the_record_lost_the_next_leader_says_so(redis: FakeRedis) -> None:
    leader = LeaderLock(redis, 60_000, "host-a:1:aaaaaa")
    await leader.hold()
    await redis.flushall()  # Redis restarted empty

    taken = await leader.hold()

    assert (taken.took, taken.holder, taken.vacant_ms, taken.since_renewal_ms) == (
        True,
        None,
        None,
        None,
    )
