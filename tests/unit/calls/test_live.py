"""The live view of a call in Redis: written through a pipeline, forward-only by seq."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fakeredis.aioredis import FakeRedis

from calls.live import ENDED_TTL_MS, LiveState
from core import keys
from tests.unit.calls.rows import call_row


async def write(redis: FakeRedis, row: Mapping[str, Any]) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        LiveState(redis).write(pipe, row)
        await pipe.execute()


async def test_written_call_reads_back_as_the_row(redis: FakeRedis) -> None:
    row = call_row()

    await write(redis, row)

    assert await LiveState(redis).read(row["call_id"]) == row


async def test_call_with_recording_and_flags_reads_back_as_the_row(redis: FakeRedis) -> None:
    row = call_row(
        status="COMPLETED",
        seq=5,
        flags=["held", "recorded"],
        recording_url="/recordings/0b6f4c3e-2f4a-4d9e-9a57-3c1f1d2e8b01.wav",
    )

    await write(redis, row)

    assert await LiveState(redis).read(row["call_id"]) == row


async def test_ingested_call_without_numbers_reads_back_as_the_row(redis: FakeRedis) -> None:
    row = call_row(kind="ingested", from_number=None, to_number=None, metadata={})

    await write(redis, row)

    assert await LiveState(redis).read(row["call_id"]) == row


async def test_unknown_call_reads_as_none(redis: FakeRedis) -> None:
    assert await LiveState(redis).read("no-such-call") is None


async def test_write_with_a_lower_seq_than_stored_is_ignored(redis: FakeRedis) -> None:
    newer = call_row(status="ANSWERED", seq=3)
    older = call_row(status="RINGING", seq=2)

    await write(redis, newer)
    await write(redis, older)

    assert await LiveState(redis).read(newer["call_id"]) == newer


async def test_write_with_a_higher_seq_replaces_the_stored_state(redis: FakeRedis) -> None:
    older = call_row(status="RINGING", seq=2)
    newer = call_row(status="ANSWERED", seq=3)

    await write(redis, older)
    await write(redis, newer)

    assert await LiveState(redis).read(newer["call_id"]) == newer


async def test_completed_call_expires(redis: FakeRedis) -> None:
    row = call_row(status="COMPLETED", seq=4)

    await write(redis, row)

    ttl_ms = await redis.pttl(keys.call_state(row["call_id"]))
    assert 0 < ttl_ms <= ENDED_TTL_MS


async def test_active_call_does_not_expire(redis: FakeRedis) -> None:
    row = call_row(status="ANSWERED", seq=3)

    await write(redis, row)

    assert await redis.pttl(keys.call_state(row["call_id"])) == -1


async def test_ignored_older_write_keeps_the_completed_call_expiring(redis: FakeRedis) -> None:
    completed = call_row(status="COMPLETED", seq=4)

    await write(redis, completed)
    await write(redis, call_row(status="ANSWERED", seq=3))

    assert await redis.pttl(keys.call_state(completed["call_id"])) > 0
    assert await LiveState(redis).read(completed["call_id"]) == completed


async def test_a_write_on_a_pipeline_costs_no_script_check_before_it(redis: FakeRedis) -> None:
    # redis-py sends SCRIPT EXISTS before executing a pipeline holding registered scripts: a
    # round trip more on every commit. The live write is queued as a plain EVAL instead.
    async with redis.pipeline(transaction=False) as pipe:
        LiveState(redis).write(pipe, call_row())
        assert not pipe.scripts
        assert [args[0] for args, _ in pipe.command_stack] == ["EVAL"]
        await pipe.execute()
