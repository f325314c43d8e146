"""core/redis_mux.py against a real redis-server of the test's own: replies reach their callers
in order, errors and cancellations stay with their command, and the connection heals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.redis_mux import MultiplexedRedis
from devstack.ports import free_port
from devstack.redis import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    running = RedisServer(tmp_path / "redis.log")
    running.start()
    yield running
    running.kill()


@pytest.fixture
async def mux(server: RedisServer) -> AsyncIterator[MultiplexedRedis]:
    client = MultiplexedRedis.from_url(server.url(2), timeout_s=0.3)
    yield client
    await client.aclose()


@pytest.fixture
async def plain(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url(2))
    yield client
    await client.aclose()


async def test_each_of_many_concurrent_callers_gets_its_own_reply(mux, plain) -> None:
    await plain.mset({f"k{i}": i for i in range(500)})
    replies = await asyncio.gather(*(mux.get(f"k{i}") for i in range(500)))
    assert replies == [str(i).encode() for i in range(500)]
    # The database of the URL (2) is the one written.
    assert await plain.get("k7") == b"7"


async def test_a_pipeline_sends_its_commands_together_and_returns_every_reply(mux, plain) -> None:
    async with mux.pipeline() as pipe:
        pipe.zadd("z", {"a": 1, "b": 2.5})
        pipe.zrem("z", "a")
        pipe.eval("return {1, 'x'}", 0)
        pipe.hset("h", mapping={"seq": 3, "call": "{}"})
        pipe.hmget("h", "seq", "call", "nothing")
        replies = await pipe.execute()
    assert replies == [2, 1, [1, b"x"], 2, [b"3", b"{}", None]]
    assert await plain.zrange("z", 0, -1, withscores=True) == [(b"b", 2.5)]


async def test_an_error_reply_is_raised_to_its_caller_only(mux) -> None:
    await mux.set("s", "text")
    results = await asyncio.gather(
        mux.incr("s"), mux.get("s"), mux.execute_command("NO-SUCH-COMMAND"), return_exceptions=True
    )
    assert isinstance(results[0], ResponseError) and "not an integer" in str(results[0])
    assert results[1] == b"text"
    assert isinstance(results[2], ResponseError) and "unknown command" in str(results[2])
    # In a pipeline every command runs and the first error is raised after all replied.
    async with mux.pipeline() as pipe:
        pipe.incr("s").set("after", 1)
        with pytest.raises(ResponseError, match="not an integer"):
            await pipe.execute()
    assert await mux.get("after") == b"1"


async def test_a_cancelled_caller_leaves_the_next_reply_to_the_next_caller(
    mux, plain, server
) -> None:
    await mux.set("a", "A")
    await mux.set("b", "B")
    # Writes wait while Redis is paused; the connection's later commands wait behind them.
    await plain.execute_command("CLIENT", "PAUSE", "200", "WRITE")
    cancelled = asyncio.create_task(mux.set("a", "changed"))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    assert await mux.get("b") == b"B"
    assert await mux.get("a") == b"changed"  # the cancelled command still ran


async def test_a_script_missing_from_redis_is_loaded_and_run(mux, plain) -> None:
    script = mux.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await script(keys=["n"], args=[5]) == 5
    await plain.script_flush()
    assert await script(keys=["n"], args=[2]) == 7


async def test_a_connection_redis_drops_is_replaced_without_the_caller_noticing(mux, plain) -> None:
    first = await mux.client_id()
    await plain.client_kill_filter(_id=first)
    assert await mux.ping() is not None
    assert await mux.client_id() != first


async def test_commands_in_flight_when_redis_restarts_are_sent_again(mux, server) -> None:
    await mux.set("x", 1)
    server.kill()
    restarted = asyncio.get_running_loop().run_in_executor(None, server.start)
    # Sent while Redis is away: retried until the new server answers (it starts empty).
    assert await mux.get("x") in (None, b"1")
    await restarted
    assert await mux.set("y", 2) == b"OK"  # replies come raw: no redis-py callbacks


async def test_a_redis_that_does_not_answer_times_out_and_the_client_recovers(mux, plain) -> None:
    await plain.execute_command("CLIENT", "PAUSE", "1000", "ALL")
    started = time.monotonic()
    with pytest.raises(RedisTimeoutError):
        await mux.get("k")
    assert time.monotonic() - started < 0.9
    await asyncio.sleep(1.0)
    assert await mux.ping() is not None


async def test_no_redis_at_all_is_a_connection_error() -> None:
    client = MultiplexedRedis(port=free_port(), connect_timeout_s=0.2)
    with pytest.raises(RedisConnectionError, match="Cannot connect"):
        await client.get("k")
    await client.aclose()


async def test_a_wrong_password_is_refused_as_redis_words_it(server) -> None:
    client = MultiplexedRedis.from_url(f"redis://:secret@127.0.0.1:{server.port}/0")
    with pytest.raises(AuthenticationError, match="AUTH"):
        await client.get("k")
    await client.aclose()


async def test_a_subscriber_gets_every_message_in_order_until_its_connection_is_lost(
    mux, plain
) -> None:
    received: list[bytes] = []
    all_in = asyncio.Event()

    def on_message(payload: bytes) -> None:
        received.append(payload)
        if len(received) == 1000:
            all_in.set()

    subscribed = asyncio.Event()
    listening = asyncio.create_task(mux.listen({"updates": on_message}, subscribed.set))
    await asyncio.wait_for(subscribed.wait(), 5)
    for n in range(1000):
        await plain.publish("updates", f"m{n}")
    await plain.publish("elsewhere", "not ours")
    await asyncio.wait_for(all_in.wait(), 5)
    await asyncio.sleep(0.05)  # the message on another channel would land by now
    assert received == [f"m{n}".encode() for n in range(1000)]

    await plain.client_kill_filter(_type="pubsub")
    with pytest.raises(RedisConnectionError, match="closed the connection"):
        await asyncio.wait_for(listening, 5)


async def test_one_subscriber_hands_each_channels_messages_to_its_own_handler(mux, plain) -> None:
    received: dict[str, list[bytes]] = {"updates": [], "keys": []}
    subscribed = asyncio.Event()
    listening = asyncio.create_task(
        mux.listen({name: received[name].append for name in received}, subscribed.set)
    )
    await asyncio.wait_for(subscribed.wait(), 5)
    for n in range(3):
        await plain.publish("updates", f"u{n}")
        await plain.publish("keys", f"k{n}")
    await asyncio.sleep(0.1)
    listening.cancel()
    assert received == {"updates": [b"u0", b"u1", b"u2"], "keys": [b"k0", b"k1", b"k2"]}
