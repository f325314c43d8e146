"""Every scheduler starts draining jobs for due timers, and none piles them up: a job waiting in
the queue, or another scheduler starting one, is enough."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator

import fakeredis
import pytest
from fakeredis import FakeServer
from fakeredis.aioredis import FakeRedis
from rq import Queue

from calls.timers import Timers
from core import keys
from core.clock import now_ms
from scheduler.dispatch import CLAIM_TTL_MS, DRAIN_JOB, Dispatcher


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
    return Dispatcher(redis, rq_connection, "scheduler-a")


def queued(rq_connection: fakeredis.FakeRedis) -> list[str]:
    return [job.func_name for job in Queue(keys.TIMERS_QUEUE, connection=rq_connection).jobs]


async def test_nothing_due_starts_nothing_and_says_when_to_look_again(
    dispatcher: Dispatcher, redis: FakeRedis, rq_connection: fakeredis.FakeRedis
) -> None:
    later = now_ms() + 60_000
    await Timers.schedule(redis, "adv:call-1:1:QUEUED", later + 5)
    await Timers.schedule(redis, "upl:call-2", later)

    started, next_due = await dispatcher.pass_once()

    assert (started, next_due) == (False, later)
    assert queued(rq_connection) == []


@pytest.mark.parametrize("member", ["adv:call-1:1:QUEUED", "upl:call-1"])
async def test_a_due_timer_of_either_kind_starts_a_job_which_takes_the_timers_itself(
    dispatcher: Dispatcher, redis: FakeRedis, rq_connection: fakeredis.FakeRedis, member: str
) -> None:
    await Timers.schedule(redis, member, now_ms() - 10)

    started, _ = await dispatcher.pass_once()

    assert started
    assert queued(rq_connection) == [DRAIN_JOB]
    # The timer stays set until the job takes it, so upkeep sees it waiting.
    assert await Timers(redis).pending([member]) == [True]


async def test_a_job_waiting_in_the_queue_is_not_joined_by_another(
    dispatcher: Dispatcher, redis: FakeRedis, rq_connection: fakeredis.FakeRedis
) -> None:
    await Timers.schedule(redis, "adv:call-1:1:QUEUED", now_ms() - 10)

    first, _ = await dispatcher.pass_once()
    await Timers.schedule(redis, "upl:call-2", now_ms() - 5)
    again, _ = await dispatcher.pass_once()

    assert (first, again) == (True, False)
    assert queued(rq_connection) == [DRAIN_JOB]


async def test_once_a_worker_took_the_job_another_is_started_for_what_is_still_due(
    dispatcher: Dispatcher, redis: FakeRedis, rq_connection: fakeredis.FakeRedis
) -> None:
    await Timers.schedule(redis, "adv:call-1:1:QUEUED", now_ms() - 10)
    await dispatcher.pass_once()
    queue = Queue(keys.TIMERS_QUEUE, connection=rq_connection)
    queue.pop_job_id()  # a worker took it

    started, _ = await dispatcher.pass_once()

    assert started
    assert queue.count == 1


def test_the_job_the_scheduler_starts_exists() -> None:
    module, _, name = DRAIN_JOB.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))


async def test_of_two_schedulers_passing_at_once_one_starts_the_job(
    dispatcher: Dispatcher, redis: FakeRedis, rq_connection: fakeredis.FakeRedis
) -> None:
    other = Dispatcher(redis, rq_connection, "scheduler-b")
    await Timers.schedule(redis, "adv:call-1:1:QUEUED", now_ms() - 10)

    started = await asyncio.gather(dispatcher.pass_once(), other.pass_once())

    assert sorted(start for start, _ in started) == [False, True]
    assert queued(rq_connection) == [DRAIN_JOB]


async def test_another_scheduler_starts_the_next_job_once_the_first_is_taken(
    dispatcher: Dispatcher, redis: FakeRedis, rq_connection: fakeredis.FakeRedis
) -> None:
    other = Dispatcher(redis, rq_connection, "scheduler-b")
    await Timers.schedule(redis, "adv:call-1:1:QUEUED", now_ms() - 10)
    await dispatcher.pass_once()
    Queue(keys.TIMERS_QUEUE, connection=rq_connection).pop_job_id()  # a worker took it

    # The claim went with the enqueue: nothing waits for it to lapse.
    started, _ = await other.pass_once()

    assert started
    assert await redis.get(keys.DISPATCH_CLAIM) is None


async def test_a_claim_left_by_a_scheduler_that_died_lapses_within_its_lifetime(
    dispatcher: Dispatcher, redis: FakeRedis, rq_connection: fakeredis.FakeRedis
) -> None:
    # Taken by a scheduler killed between its check and its enqueue.
    await redis.set(keys.DISPATCH_CLAIM, "scheduler-dead", px=CLAIM_TTL_MS)
    await Timers.schedule(redis, "adv:call-1:1:QUEUED", now_ms() - 10)

    held_off, _ = await dispatcher.pass_once()
    await asyncio.sleep(CLAIM_TTL_MS / 1000 + 0.05)
    started, _ = await dispatcher.pass_once()

    assert (held_off, started) == (False, True)
    assert queued(rq_connection) == [DRAIN_JOB]
