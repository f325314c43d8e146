"""Due timers in one sorted set per kind, taken atomically by the workers' jobs."""

from __future__ import annotations

from fakeredis.aioredis import FakeRedis

from calls.timers import DueTimer, Timers
from core import keys

NOW_MS = 1_795_000_000_000


async def schedule(redis: FakeRedis, timers: dict[str, int]) -> None:
    for member, due_ms in timers.items():
        await Timers.schedule(redis, member, due_ms)


async def members(redis: FakeRedis, kind: str) -> list[str]:
    return [m.decode() for m in await redis.zrange(keys.timers(kind), 0, -1)]


async def test_each_kind_has_its_own_set(redis: FakeRedis) -> None:
    await schedule(redis, {"adv:call-1:1:QUEUED": NOW_MS, "upl:call-2": NOW_MS})

    assert await members(redis, keys.ADVANCE) == ["adv:call-1:1:QUEUED"]
    assert await members(redis, keys.UPLOAD) == ["upl:call-2"]


async def test_pop_due_returns_the_due_timers_of_each_kind(redis: FakeRedis) -> None:
    await schedule(
        redis,
        {
            "adv:call-1:1:QUEUED": NOW_MS - 50,
            "upl:call-2": NOW_MS - 60,
            "adv:call-3:1:RINGING": NOW_MS,
            "adv:call-4:2:ANSWERED": NOW_MS + 1,
        },
    )

    due = await Timers(redis).pop_due(NOW_MS, limit=10)

    assert due == {
        keys.ADVANCE: [
            DueTimer("adv:call-1:1:QUEUED", NOW_MS - 50),
            DueTimer("adv:call-3:1:RINGING", NOW_MS),
        ],
        keys.UPLOAD: [DueTimer("upl:call-2", NOW_MS - 60)],
        keys.CALLBACK: [],
    }
    assert await members(redis, keys.ADVANCE) == ["adv:call-4:2:ANSWERED"]


async def test_pop_due_removes_what_it_returns(redis: FakeRedis) -> None:
    await schedule(redis, {"adv:call-1:1:QUEUED": NOW_MS - 50, "adv:call-3:1:RINGING": NOW_MS + 1})
    timers = Timers(redis)

    await timers.pop_due(NOW_MS, limit=10)
    again = (await timers.pop_due(NOW_MS, limit=10))[keys.ADVANCE]

    assert again == []
    assert await members(redis, keys.ADVANCE) == ["adv:call-3:1:RINGING"]


async def test_pop_due_on_an_empty_set_returns_nothing(redis: FakeRedis) -> None:
    assert (await Timers(redis).pop_due(NOW_MS, limit=10))[keys.UPLOAD] == []


async def test_pop_due_takes_at_most_limit_earliest_first(redis: FakeRedis) -> None:
    await schedule(
        redis,
        {
            "adv:call-3:1:QUEUED": NOW_MS - 10,
            "adv:call-1:1:QUEUED": NOW_MS - 30,
            "adv:call-2:1:QUEUED": NOW_MS - 20,
        },
    )

    due = (await Timers(redis).pop_due(NOW_MS, limit=2))[keys.ADVANCE]

    assert [t.member for t in due] == ["adv:call-1:1:QUEUED", "adv:call-2:1:QUEUED"]
    assert await members(redis, keys.ADVANCE) == ["adv:call-3:1:QUEUED"]


async def test_scheduling_an_existing_timer_moves_it(redis: FakeRedis) -> None:
    await schedule(redis, {"upl:call-2": NOW_MS - 100})
    await schedule(redis, {"upl:call-2": NOW_MS + 900})

    assert (await Timers(redis).pop_due(NOW_MS, limit=10))[keys.UPLOAD] == []


async def test_cancel_drops_the_timer_from_its_kinds_set(redis: FakeRedis) -> None:
    await schedule(redis, {"adv:call-1:1:QUEUED": NOW_MS, "adv:call-2:1:QUEUED": NOW_MS})

    await Timers.cancel(redis, "adv:call-1:1:QUEUED")

    assert await members(redis, keys.ADVANCE) == ["adv:call-2:1:QUEUED"]


async def test_a_timer_kind_is_its_member_prefix() -> None:
    assert keys.timer_kind(keys.advance_timer("call-1", 1, "QUEUED")) == keys.ADVANCE
    assert keys.timer_kind(keys.upload_timer("call-1")) == keys.UPLOAD
    assert keys.timer_kind(keys.callback_timer("call-1")) == keys.CALLBACK


async def test_a_timer_set_unless_set_keeps_the_one_there(redis: FakeRedis) -> None:
    await Timers.schedule(redis, "cbk:call-1", NOW_MS + 60_000)

    await Timers.schedule(redis, "cbk:call-1", NOW_MS, unless_set=True)
    await Timers.schedule(redis, "cbk:call-2", NOW_MS, unless_set=True)

    assert await redis.zscore(keys.timers(keys.CALLBACK), "cbk:call-1") == NOW_MS + 60_000
    assert await redis.zscore(keys.timers(keys.CALLBACK), "cbk:call-2") == NOW_MS


async def test_pending_says_which_members_have_a_timer_across_kinds(redis: FakeRedis) -> None:
    await schedule(redis, {"adv:call-1:1:QUEUED": NOW_MS, "upl:call-2": NOW_MS + 5})

    pending = await Timers(redis).pending(
        ["upl:call-2", "adv:call-9:1:QUEUED", "adv:call-1:1:QUEUED", "upl:call-1"]
    )

    assert pending == [True, False, True, False]


async def test_pending_of_no_members_is_empty(redis: FakeRedis) -> None:
    assert await Timers(redis).pending([]) == []


async def test_popped_timer_is_no_longer_pending(redis: FakeRedis) -> None:
    await schedule(redis, {"adv:call-1:1:QUEUED": NOW_MS})
    timers = Timers(redis)

    await timers.pop_due(NOW_MS, limit=10)

    assert await timers.pending(["adv:call-1:1:QUEUED"]) == [False]


def test_an_advance_member_is_parsed_back_into_what_made_it() -> None:
    member = keys.advance_timer("0b6f4c3e-2f4a-4d9e-9a57-3c1f1d2e8b01", 3, "ANSWERED")

    parsed = keys.parse_advance_timer(member)

    assert parsed == keys.AdvanceTimer("0b6f4c3e-2f4a-4d9e-9a57-3c1f1d2e8b01", 3, "ANSWERED")


def test_the_call_of_an_upload_or_callback_timer_is_read_from_its_member() -> None:
    assert keys.timer_call_id(keys.upload_timer("call-2")) == "call-2"
    assert keys.timer_call_id(keys.callback_timer("call-3")) == "call-3"
