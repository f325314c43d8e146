"""The scheduler starts a draining job per kind of due timer, and never piles them up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
from fakeredis import FakeServer
from fakeredis.aioredis import FakeRedis
from rq import Queue

from calls.timers import Timers
from core import keys
from core.clock import now_ms
from scheduler.dispatch import Dispatcher


@pytest.fixture
async def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def redis(server: FakeServer) -> AsyncIterator[FakeRedis]:
    client = FakeRedis(server=server)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def rq_connection(server: FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def dispatcher(redis: FakeRedis, rq_connection: fakeredis.FakeRedis) -> Dispatcher:
    return Dispatcher(redis, rq_connection)


def queued(rq_connection: fakeredis.FakeRedis, name: str) -> list[str]:
    return [job.func_name for job in Queue(name, connection=rq_connection).jobs]


async def test_nothing_due_starts_nothing_and_says_when_to_look_again(
    dispatcher: Dispatcher, redis: FakeRedis, rq_connection: fakeredis.FakeRedis
) -> None:
    later = now_ms() + 60_000
    await Timers.schedule(redis, "adv:call-1:1:QUEUED", later)
    await Timers.schedule(redis, "upl:call-2", later + 5)

    started, next_due = await dispatcher.pass_once()

    assert (started, next_due) == (0, later)
    assert queued(rq_connection, keys.TRANSITIONS_QUEUE) == []
    assert queued(rq_connection, keys.UPLOADS_QUEUE) == []


async def test_due_timers_start_one_job_of_their_kind_which_takes_them_itself(
    dispatcher: Dispatcher, redis: FakeRedis, rq_connection: fakeredis.FakeRedis
) -> None:
    for i in range(5):
        await Timers.schedule(redis, f"adv:call-{i}:1:QUEUED", now_ms() - 10)

    started, _ = await dispatcher.pass_once()

    assert started == 1
    assert queued(rq_connection, keys.TRANSITIONS_QUEUE) == ["worker.jobs.advance_calls"]
    assert queued(rq_connection, keys.UPLOADS_QUEUE) == []
    # The timers stay set until the job takes them, so upkeep sees them waiting.
    assert await redis.zcard(keys.timers(keys.ADVANCE)) == 5


async def test_a_job_waiting_in_its_queue_is_not_joined_by_another(
    dispatcher: Dispatcher, redis: FakeRedis, rq_connection: fakeredis.FakeRedis
) -> None:
    await Timers.schedule(redis, "adv:call-1:1:QUEUED", now_ms() - 10)
    await Timers.schedule(redis, "upl:call-1", now_ms() - 10)

    first, _ = await dispatcher.pass_once()
    await Timers.schedule(redis, "adv:call-2:1:QUEUED", now_ms() - 5)
    again, _ = await dispatcher.pass_once()

    assert (first, again) == (2, 0)
    assert queued(rq_connection, keys.TRANSITIONS_QUEUE) == ["worker.jobs.advance_calls"]
    assert queued(rq_connection, keys.UPLOADS_QUEUE) == ["worker.jobs.upload_recordings"]


async def test_once_a_worker_took_the_job_another_is_started_for_what_is_still_due(
    dispatcher: Dispatcher, redis: FakeRedis, rq_connection: fakeredis.FakeRedis
) -> None:
    await Timers.schedule(redis, "adv:call-1:1:QUEUED", now_ms() - 10)
    await dispatcher.pass_once()
    queue = Queue(keys.TRANSITIONS_QUEUE, connection=rq_connection)
    queue.pop_job_id()  # a worker took it

    started, _ = await dispatcher.pass_once()

    assert started == 1
    assert queue.count == 1
