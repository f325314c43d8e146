"""Due timers in one sorted set, taken atomically by the scheduler."""

from __future__ import annotations

from fakeredis.aioredis import FakeRedis

from calls.timers import DueTimer, Timers
from core import keys

NOW_MS = 1_795_000_000_000


async def schedule(redis: FakeRedis, timers: dict[str, int]) -> None:
    for member, due_ms in timers.items():
        await Timers.schedule(redis, member, due_ms)


async def test_pop_due_returns_only_due_timers_with_their_due_times(redis: FakeRedis) -> None:
    await schedule(
        redis,
        {
            "adv:call-1:QUEUED": NOW_MS - 50,
            "upl:call-2": NOW_MS,
            "adv:call-3:RINGING": NOW_MS + 1,
            "adv:call-4:ANSWERED": NOW_MS + 400,
        },
    )

    due, _ = await Timers(redis).pop_due(NOW_MS, limit=10)

    assert due == [
        DueTimer("adv:call-1:QUEUED", NOW_MS - 50),
        DueTimer("upl:call-2", NOW_MS),
    ]


async def test_pop_due_removes_what_it_returns(redis: FakeRedis) -> None:
    await schedule(redis, {"adv:call-1:QUEUED": NOW_MS - 50, "adv:call-3:RINGING": NOW_MS + 1})
    timers = Timers(redis)

    await timers.pop_due(NOW_MS, limit=10)
    again, _ = await timers.pop_due(NOW_MS, limit=10)

    assert again == []
    assert await redis.zrange(keys.TIMERS, 0, -1) == [b"adv:call-3:RINGING"]


async def test_pop_due_returns_the_next_due_time(redis: FakeRedis) -> None:
    await schedule(
        redis,
        {"adv:call-1:QUEUED": NOW_MS - 50, "adv:call-4:ANSWERED": NOW_MS + 400},
    )

    _, next_due_ms = await Timers(redis).pop_due(NOW_MS, limit=10)

    assert next_due_ms == NOW_MS + 400


async def test_pop_due_returns_no_next_due_time_when_nothing_waits(redis: FakeRedis) -> None:
    await schedule(redis, {"adv:call-1:QUEUED": NOW_MS - 50})

    due, next_due_ms = await Timers(redis).pop_due(NOW_MS, limit=10)

    assert [t.member for t in due] == ["adv:call-1:QUEUED"]
    assert next_due_ms is None


async def test_pop_due_on_an_empty_set_returns_nothing(redis: FakeRedis) -> None:
    assert await Timers(redis).pop_due(NOW_MS, limit=10) == ([], None)


async def test_pop_due_takes_at_most_limit_earliest_first(redis: FakeRedis) -> None:
    await schedule(
        redis,
        {
            "adv:call-3:QUEUED": NOW_MS - 10,
            "adv:call-1:QUEUED": NOW_MS - 30,
            "adv:call-2:QUEUED": NOW_MS - 20,
        },
    )

    due, next_due_ms = await Timers(redis).pop_due(NOW_MS, limit=2)

    assert [t.member for t in due] == ["adv:call-1:QUEUED", "adv:call-2:QUEUED"]
    # The one left behind is already due: the scheduler should come straight back.
    assert next_due_ms == NOW_MS - 10
    assert await redis.zrange(keys.TIMERS, 0, -1) == [b"adv:call-3:QUEUED"]


async def test_scheduling_an_existing_timer_moves_it(redis: FakeRedis) -> None:
    await schedule(redis, {"upl:call-2": NOW_MS - 100})
    await schedule(redis, {"upl:call-2": NOW_MS + 900})

    due, next_due_ms = await Timers(redis).pop_due(NOW_MS, limit=10)

    assert due == []
    assert next_due_ms == NOW_MS + 900


async def test_due_timer_kind_is_the_member_prefix() -> None:
    assert DueTimer(keys.advance_timer("call-1", 1, "QUEUED"), NOW_MS).kind == keys.ADVANCE
    assert DueTimer(keys.upload_timer("call-1"), NOW_MS).kind == keys.UPLOAD


async def test_pending_says_which_members_have_a_timer(redis: FakeRedis) -> None:
    await schedule(redis, {"adv:call-1:QUEUED": NOW_MS, "upl:call-2": NOW_MS + 5})

    pending = await Timers(redis).pending(["upl:call-2", "adv:call-9:QUEUED", "adv:call-1:QUEUED"])

    assert pending == [True, False, True]


async def test_pending_of_no_members_is_empty(redis: FakeRedis) -> None:
    assert await Timers(redis).pending([]) == []


async def test_popped_timer_is_no_longer_pending(redis: FakeRedis) -> None:
    await schedule(redis, {"adv:call-1:QUEUED": NOW_MS})
    timers = Timers(redis)

    await timers.pop_due(NOW_MS, limit=10)

    assert await timers.pending(["adv:call-1:QUEUED"]) == [False]
