"""The scheduler starts a draining job per kind of due timer, and never piles them up."""

from __future__ import annotations

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
from scheduler.dispatch import DRAIN_JOB, Dispatcher


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
