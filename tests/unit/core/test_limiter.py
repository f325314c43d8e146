"""Per-key limits on an in-memory Redis: slot sets of active calls (restored from PostgreSQL
when Redis lost them), the per-second window, and slots that always reach an owner."""

from __future__ import annotations

import asyncio

import pytest
from fakeredis.aioredis import FakeRedis

from core import keys
from core.errors import RateLimited
from core.limiter import CallKind, Grant, Limiter

KEY = "key-1"
MAX_ACTIVE, MAX_CPS = 3, 2  # the service defaults


async def nothing_active(key_id: str, kind: CallKind) -> dict[str, int]:
    return {}


def new_limiter(redis: FakeRedis, active_calls=nothing_active, settle_ms: int = 0) -> Limiter:
    return Limiter(redis, active_calls, settle_ms)


async def redis_now_ms(redis: FakeRedis) -> int:
    seconds, micros = await redis.time()
    return seconds * 1000 + micros // 1000


async def held(redis: FakeRedis) -> tuple[list, list]:
    """Both sorted sets of KEY, members with scores (the slot set's SLOTS_KNOWN left out)."""
    leases = await redis.zrange(keys.leases(KEY), 0, -1, withscores=True)
    return (
        [(member, score) for member, score in leases if member != keys.SLOTS_KNOWN.encode()],
        await redis.zrange(keys.rate_window(KEY), 0, -1, withscores=True),
    )


async def hold_leases(redis: FakeRedis, count: int) -> None:
    """Active calls of KEY created long enough ago that the rate window is empty, in a slot
    set known to be complete."""
    now = await redis_now_ms(redis)
    slots: dict[str, float] = {f"held-{i}": now - 60_000 for i in range(count)}
    await redis.zadd(keys.leases(KEY), slots | {keys.SLOTS_KNOWN: float("inf")})


async def fill_rate_window(redis: FakeRedis, count: int) -> None:
    now = await redis_now_ms(redis)
    await redis.zadd(keys.rate_window(KEY), {f"recent-{i}": now for i in range(count)})


async def test_two_of_four_parallel_creates_on_an_idle_key_are_granted(redis: FakeRedis) -> None:
    limiter = new_limiter(redis)

    results = await asyncio.gather(
        *(limiter.acquire(KEY, f"call-{i}", MAX_ACTIVE, MAX_CPS) for i in range(4)),
        return_exceptions=True,
    )

    grants = [r for r in results if isinstance(r, Grant)]
    refusals = [r for r in results if isinstance(r, RateLimited)]
    assert len(grants) == 2
    assert len(refusals) == 2
    assert {r.message for r in refusals} == {"Calls per second limit exceeded (2)"}


async def test_third_and_fourth_parallel_creates_take_no_slot(redis: FakeRedis) -> None:
    limiter = new_limiter(redis)

    await asyncio.gather(
        *(limiter.acquire(KEY, f"call-{i}", MAX_ACTIVE, MAX_CPS) for i in range(4)),
        return_exceptions=True,
    )

    leases, window = await held(redis)
    assert len(leases) == 2
    assert [m for m, _ in leases] == [m for m, _ in window]


async def test_fourth_concurrent_call_is_refused_by_the_concurrency_limit(
    redis: FakeRedis,
) -> None:
    await hold_leases(redis, 3)

    with pytest.raises(RateLimited) as refused:
        await new_limiter(redis).acquire(KEY, "call-4", MAX_ACTIVE, MAX_CPS)

    assert refused.value.message == "Maximum concurrent calls reached (3)"


async def test_concurrency_is_checked_before_rate_when_both_are_full(redis: FakeRedis) -> None:
    await hold_leases(redis, 3)
    await fill_rate_window(redis, 2)

    with pytest.raises(RateLimited) as refused:
        await new_limiter(redis).acquire(KEY, "call-4", MAX_ACTIVE, MAX_CPS)

    assert refused.value.message == "Maximum concurrent calls reached (3)"


async def test_concurrency_refusal_carries_its_limit_and_a_reset(redis: FakeRedis) -> None:
    await hold_leases(redis, 3)

    with pytest.raises(RateLimited) as refused:
        await new_limiter(redis).acquire(KEY, "call-4", MAX_ACTIVE, MAX_CPS)

    assert refused.value.limit == 3
    assert refused.value.remaining == 0
    assert refused.value.reset_s >= 1


async def test_rate_refusal_carries_its_limit_and_a_reset(redis: FakeRedis) -> None:
    await fill_rate_window(redis, 2)

    with pytest.raises(RateLimited) as refused:
        await new_limiter(redis).acquire(KEY, "call-3", MAX_ACTIVE, MAX_CPS)

    assert refused.value.message == "Calls per second limit exceeded (2)"
    assert refused.value.limit == 2
    assert refused.value.remaining == 0
    # The window is one second long, so the oldest slot frees within it.
    assert refused.value.reset_s == 1


async def test_concurrency_refusal_consumes_nothing(redis: FakeRedis) -> None:
    await hold_leases(redis, 3)
    await fill_rate_window(redis, 1)
    before = await held(redis)

    with pytest.raises(RateLimited):
        await new_limiter(redis).acquire(KEY, "call-4", MAX_ACTIVE, MAX_CPS)

    assert await held(redis) == before


async def test_rate_refusal_consumes_nothing(redis: FakeRedis) -> None:
    await hold_leases(redis, 1)
    await fill_rate_window(redis, 2)
    before = await held(redis)

    with pytest.raises(RateLimited):
        await new_limiter(redis).acquire(KEY, "call-3", MAX_ACTIVE, MAX_CPS)

    assert await held(redis) == before


async def test_grant_takes_a_lease_and_a_rate_slot(redis: FakeRedis) -> None:
    await new_limiter(redis).acquire(KEY, "call-1", MAX_ACTIVE, MAX_CPS)

    leases, window = await held(redis)
    assert [m for m, _ in leases] == [b"call-1"]
    assert [m for m, _ in window] == [b"call-1"]


async def test_undo_gives_both_slots_back(redis: FakeRedis) -> None:
    limiter = new_limiter(redis)
    await limiter.acquire(KEY, "call-1", MAX_ACTIVE, MAX_CPS)
    await limiter.acquire(KEY, "call-2", MAX_ACTIVE, MAX_CPS)

    await limiter.undo(KEY, "call-2")

    leases, window = await held(redis)
    assert [m for m, _ in leases] == [b"call-1"]
    assert [m for m, _ in window] == [b"call-1"]
    # The freed rate slot can be taken again within the same second.
    grant = await limiter.acquire(KEY, "call-3", MAX_ACTIVE, MAX_CPS)
    assert grant.remaining == 0


async def test_grant_remaining_counts_down_to_zero(redis: FakeRedis) -> None:
    limiter = new_limiter(redis)

    grants = [await limiter.acquire(KEY, f"call-{i}", 10, 5) for i in range(5)]

    assert [g.remaining for g in grants] == [4, 3, 2, 1, 0]
    assert {g.limit for g in grants} == {5}
    assert {g.reset_s for g in grants} == {1}


async def test_slots_older_than_the_window_no_longer_count(redis: FakeRedis) -> None:
    now = await redis_now_ms(redis)
    await redis.zadd(keys.rate_window(KEY), {"old-1": now - 1_500, "old-2": now - 1_200})

    grant = await new_limiter(redis).acquire(KEY, "call-3", MAX_ACTIVE, MAX_CPS)

    assert grant.remaining == 1
    _, window = await held(redis)
    assert [m for m, _ in window] == [b"call-3"]


async def test_limits_of_one_key_do_not_touch_another(redis: FakeRedis) -> None:
    await hold_leases(redis, 3)
    await fill_rate_window(redis, 2)

    grant = await new_limiter(redis).acquire("key-2", "call-1", MAX_ACTIVE, MAX_CPS)

    assert grant.remaining == 1


async def test_a_key_that_takes_a_lease_is_named_in_the_lease_holders_index(
    redis: FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1_000_000]
    monkeypatch.setattr("core.limiter.now_ms", lambda: clock[0])
    limiter = new_limiter(redis)

    await limiter.acquire(KEY, "call-1", MAX_ACTIVE, MAX_CPS)
    assert await redis.zscore(keys.lease_holders(), KEY) == 1_000_000

    # Named again at most once a second per process; the score is its latest acquire then.
    clock[0] += 500
    await limiter.acquire(KEY, "call-2", MAX_ACTIVE, 100)
    assert await redis.zscore(keys.lease_holders(), KEY) == 1_000_000
    clock[0] += 600
    await limiter.acquire(KEY, "call-3", MAX_ACTIVE, 100)
    assert await redis.zscore(keys.lease_holders(), KEY) == 1_001_100


# -- a slot set Redis lost is never taken for an empty one ----------------------------------------


class Postgres:
    """The active calls PostgreSQL holds, and how often the limiter asked for them."""

    def __init__(self, active: dict[str, int] | None = None) -> None:
        self.active = active or {}
        self.asked: list[tuple[str, CallKind]] = []

    async def __call__(self, key_id: str, kind: CallKind) -> dict[str, int]:
        self.asked.append((key_id, kind))
        await asyncio.sleep(0)
        return dict(self.active)


async def test_a_lost_slot_set_is_restored_from_postgresql_before_any_slot_is_given(
    redis: FakeRedis,
) -> None:
    """Redis lost the key's slots (FLUSHDB) while it was at its limit: the next create is
    refused, not granted against an empty set."""
    postgres = Postgres({"active-1": 1, "active-2": 2, "active-3": 3})

    with pytest.raises(RateLimited) as refused:
        await new_limiter(redis, postgres).acquire(KEY, "call-4", MAX_ACTIVE, MAX_CPS)

    assert refused.value.message == "Maximum concurrent calls reached (3)"
    leases, window = await held(redis)
    assert {member for member, _ in leases} == {b"active-1", b"active-2", b"active-3"}
    assert window == []
    assert postgres.asked == [(KEY, CallKind.SIMULATED)]


async def test_a_known_set_is_not_restored_again_even_when_it_holds_no_slot(
    redis: FakeRedis,
) -> None:
    postgres = Postgres()
    limiter = new_limiter(redis, postgres)

    for i in range(3):
        await limiter.acquire(KEY, f"call-{i}", 10, 10)
        await limiter.undo(KEY, f"call-{i}")

    assert postgres.asked == [(KEY, CallKind.SIMULATED)]


async def test_parallel_creates_on_a_lost_set_restore_it_once(redis: FakeRedis) -> None:
    postgres = Postgres({"active-1": 1})
    limiter = new_limiter(redis, postgres)

    results = await asyncio.gather(
        *(limiter.acquire(KEY, f"call-{i}", 3, 100) for i in range(5)), return_exceptions=True
    )

    assert len(postgres.asked) == 1
    assert sum(isinstance(r, Grant) for r in results) == 2  # 3 allowed, 1 held already


async def test_a_restore_waits_until_the_inserts_redis_lost_have_had_time_to_commit(
    redis: FakeRedis,
) -> None:
    """A new or flushed Redis starts the settle clock; PostgreSQL is read only after it, so a
    call whose insert was in flight when Redis lost its slot is counted."""
    postgres = Postgres()
    limiter = new_limiter(redis, postgres, settle_ms=300)
    loop = asyncio.get_running_loop()
    started = loop.time()

    await limiter.acquire(KEY, "call-1", MAX_ACTIVE, MAX_CPS)

    assert loop.time() - started >= 0.29
    # Settled: another key's set is restored at once.
    started = loop.time()
    await limiter.acquire("key-2", "call-2", MAX_ACTIVE, MAX_CPS)
    assert loop.time() - started < 0.2
    assert len(postgres.asked) == 2


async def test_a_restore_leaves_a_set_another_process_restored_first(redis: FakeRedis) -> None:
    await redis.zadd(keys.leases(KEY), {"kept": 1, keys.SLOTS_KNOWN: float("inf")})

    restored = await new_limiter(redis).restore({(CallKind.SIMULATED, KEY): {"phantom": 2}})

    assert restored == 0
    leases, _ = await held(redis)
    assert [member for member, _ in leases] == [b"kept"]


# -- a taken slot always reaches an owner ---------------------------------------------------------


async def test_a_cancelled_acquire_whose_script_ran_gives_its_slot_back(
    redis: FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client went away while the script was in flight: Redis ran it (the slot is taken),
    but the reply reached nobody. The slot is free right after."""
    limiter = new_limiter(redis)
    await limiter.acquire(KEY, "warm-up", MAX_ACTIVE, MAX_CPS)  # the set is known
    await limiter.undo(KEY, "warm-up")
    script_ran = asyncio.Event()
    evalsha = redis.evalsha

    async def slow_reply(*args):
        reply = await evalsha(*args)
        script_ran.set()
        await asyncio.sleep(0.2)  # the reply is still on its way
        return reply

    monkeypatch.setattr(redis, "evalsha", slow_reply)
    request = asyncio.create_task(limiter.acquire(KEY, "call-1", MAX_ACTIVE, MAX_CPS))
    await script_ran.wait()
    assert [m for m, _ in (await held(redis))[0]] == [b"call-1"]
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    # Free as soon as the reply is in.
    await asyncio.sleep(0.3)
    assert await held(redis) == ([], [])


async def test_an_acquire_sent_again_after_a_dropped_connection_takes_no_second_slot(
    redis: FakeRedis,
) -> None:
    """The connection dropped after Redis ran the script, and the command was sent again: the
    call holds its slot, so it is granted again and nothing more is taken, even at the limit."""
    limiter = new_limiter(redis)

    first = await limiter.acquire(KEY, "call-1", 1, 5)
    again = await limiter.acquire(KEY, "call-1", 1, 5)

    assert isinstance(first, Grant) and isinstance(again, Grant)
    leases, window = await held(redis)
    assert [m for m, _ in leases] == [b"call-1"]
    assert [m for m, _ in window] == [b"call-1"]


async def test_keep_if_created_gives_the_slot_back_when_no_call_was_made(
    redis: FakeRedis,
) -> None:
    limiter = new_limiter(redis)
    await limiter.acquire(KEY, "made", MAX_ACTIVE, MAX_CPS)
    await limiter.acquire(KEY, "taken", MAX_ACTIVE, MAX_CPS)
    loop = asyncio.get_running_loop()
    made, taken = loop.create_future(), loop.create_future()
    made.set_result({"call_id": "made"})
    taken.set_result(None)

    assert await limiter.keep_if_created(made, KEY, "made") == {"call_id": "made"}
    assert await limiter.keep_if_created(taken, KEY, "taken") is None

    leases, window = await held(redis)
    assert [m for m, _ in leases] == [b"made"]
    assert [m for m, _ in window] == [b"made"]


async def test_a_request_gone_before_its_insert_ended_keeps_the_slot_only_if_it_made_the_call(
    redis: FakeRedis,
) -> None:
    limiter = new_limiter(redis)
    loop = asyncio.get_running_loop()
    for call_id, row in (("made", {"call_id": "made"}), ("not-made", None)):
        await limiter.acquire(KEY, call_id, MAX_ACTIVE, 10)
        inserted = loop.create_future()
        request = asyncio.create_task(limiter.keep_if_created(inserted, KEY, call_id))
        await asyncio.sleep(0)
        request.cancel()
        inserted.set_result(row)
        with pytest.raises(asyncio.CancelledError):
            await request
    await asyncio.wait_for(limiter.aclose(), 2)

    leases, _ = await held(redis)
    assert [m for m, _ in leases] == [b"made"]


# -- ingested calls ---------------------------------------------------------------------------------


async def test_active_ingested_calls_have_a_cap_of_their_own(redis: FakeRedis) -> None:
    limiter = new_limiter(redis)
    await limiter.acquire(KEY, "simulated-1", 1, 5)

    assert await limiter.acquire_ingested(KEY, "ingested-1", 2) is True
    assert await limiter.acquire_ingested(KEY, "ingested-2", 2) is True
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire_ingested(KEY, "ingested-3", 2)

    assert refused.value.message.startswith("Maximum active ingested calls reached (2)")
    assert refused.value.limit == 2
    members = {m for m in await redis.zrange(keys.ingested_slots(KEY), 0, -1)}
    assert members == {b"ingested-1", b"ingested-2", keys.SLOTS_KNOWN.encode()}


async def test_an_ingested_call_that_holds_its_slot_is_told_so_not_given_a_second(
    redis: FakeRedis,
) -> None:
    """A repeated call_initiated of an active call: the slot is the call's already, so the
    request must not give it back when its insert finds the call there."""
    limiter = new_limiter(redis)
    assert await limiter.acquire_ingested(KEY, "ingested-1", 1) is True

    assert await limiter.acquire_ingested(KEY, "ingested-1", 1) is False
