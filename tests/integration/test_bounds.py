"""What one key can make grow is bounded: events per call, history pages, active ingested calls
and how long they may idle, and the limits hold when Redis loses its data."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from core import keys
from tests.integration.conftest import Api
from tests.integration.platform import Platform
from tests.integration.test_key_stream import key_stream, post_event
from tests.integration.test_realtime import SseReader, stream_url

READ_TIMEOUT_S = 5.0


@contextlib.asynccontextmanager
async def own_platform(
    tmp_path_factory: pytest.TempPathFactory, settings: dict[str, str]
) -> AsyncIterator[Platform]:
    running = Platform(tmp_path_factory.mktemp("bounds"), settings=settings)
    try:
        yield await running.start()
    finally:
        await running.stop()


@contextlib.asynccontextmanager
async def connected(platform: Platform) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(platform.dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def initiate(api: Api, **fields: Any) -> tuple[int, dict[str, Any]]:
    status, body, _ = await api.request(
        "POST",
        "/events",
        json={"event": "call_initiated", "type": "voice", "queue_id": "q"} | fields,
    )
    return status, body


async def answered_call(api: Api) -> str:
    status, body = await initiate(api)
    assert status == 201, body
    call_id = body["call_id"]
    await post_event(api, {"event": "call_routed", "call_id": call_id, "agent_id": "a"})
    await post_event(api, {"event": "call_answered", "call_id": call_id})
    return call_id


async def hold_and_resume(api: Api, call_id: str, times: int) -> None:
    for _ in range(times):
        await post_event(api, {"event": "call_hold", "call_id": call_id})
        await post_event(api, {"event": "call_resumed", "call_id": call_id})


# -- events per call ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def small_histories(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    async with own_platform(tmp_path_factory, {"MAX_EVENTS_PER_CALL": "12"}) as running:
        yield running


async def test_a_call_takes_events_up_to_its_limit_keeping_the_last_for_call_ended(
    small_histories: Platform, http
) -> None:
    api = Api(http, small_histories, await small_histories.new_key())
    call_id = await answered_call(api)  # 3 events
    await hold_and_resume(api, call_id, 4)  # 11
    async with key_stream(api) as live:
        status, body, _ = await api.request(
            "POST", "/events", json={"event": "call_hold", "call_id": call_id, "event_id": "x"}
        )
        assert status == 409, body
        assert body == {
            "error": "Conflict",
            "message": f"Call {call_id} has reached the limit of 12 events per call"
            " (MAX_EVENTS_PER_CALL); only call_ended may follow",
        }
        # Nothing stored, nothing published.
        await live.quiet_for(0.5)
    _, history, _ = await api.request("GET", f"/calls/{call_id}/events")
    assert len(history["data"]) == 11
    async with connected(small_histories) as pg:
        assert await pg.fetchval("SELECT count(*) FROM call_events WHERE event_id = 'x'") == 0

    ended = await post_event(
        api, {"event": "call_ended", "call_id": call_id, "end_reason": "completed"}
    )
    assert (ended["seq"], ended["status"]) == (12, "COMPLETED")


async def test_a_call_at_its_limit_minus_one_can_only_be_ended(
    small_histories: Platform, http
) -> None:
    api = Api(http, small_histories, await small_histories.new_key())
    call_id = await answered_call(api)
    await hold_and_resume(api, call_id, 4)
    status, _, _ = await api.request(
        "POST", "/events", json={"event": "call_hold", "call_id": call_id}
    )
    assert status == 409
    status, body, _ = await api.request(
        "POST",
        "/events",
        json={"event": "call_ended", "call_id": call_id, "end_reason": "abandoned"},
    )
    assert (status, body["status"]) == (201, "COMPLETED")


# -- history pages --------------------------------------------------------------------------------


async def test_a_long_history_comes_in_pages_a_short_one_as_before(api: Api) -> None:
    call_id = await answered_call(api)
    await hold_and_resume(api, call_id, 75)  # 153 events

    _, first, _ = await api.request("GET", f"/calls/{call_id}/events")
    assert (first["limit"], len(first["data"]), first["next_after_seq"]) == (100, 100, 100)
    assert [e["seq"] for e in first["data"]] == list(range(1, 101))
    _, second, _ = await api.request(
        "GET", f"/api/calls/{call_id}/events?after_seq={first['next_after_seq']}"
    )
    assert [e["seq"] for e in second["data"]] == list(range(101, 154))
    assert second["next_after_seq"] is None
    _, capped, _ = await api.request("GET", f"/calls/{call_id}/events?limit=5000")
    assert (capped["limit"], len(capped["data"]), capped["next_after_seq"]) == (1000, 153, None)
    _, small, _ = await api.request("GET", f"/calls/{call_id}/events?limit=50&after_seq=60")
    assert [e["seq"] for e in small["data"]] == list(range(61, 111))
    assert small["next_after_seq"] == 110
    _, past_the_end, _ = await api.request("GET", f"/calls/{call_id}/events?after_seq=999")
    assert (past_the_end["data"], past_the_end["next_after_seq"]) == ([], None)

    short = await answered_call(api)
    _, whole, _ = await api.request("GET", f"/calls/{short}/events")
    assert (len(whole["data"]), whole["next_after_seq"], whole["limit"]) == (3, None, 100)


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=x", "after_seq=-1", "after_seq=1.5", "page=2", "limit=5&sort=seq"]
)
async def test_bad_history_queries_are_400_naming_them(api: Api, query: str) -> None:
    call_id = await answered_call(api)
    status, body, _ = await api.request("GET", f"/calls/{call_id}/events?{query}")
    assert status == 400, body
    name = query.split("&")[-1].split("=")[0]
    assert name in body["message"], body


async def test_a_stream_resumed_from_the_start_of_a_long_history_gets_all_of_it_in_order(
    api: Api,
) -> None:
    call_id = await answered_call(api)
    await hold_and_resume(api, call_id, 250)  # 503 events: the catch-up reads it in pages
    response = await api.http.get(
        stream_url(api, call_id), headers=api.auth | {"Last-Event-ID": "0"}
    )
    reader = SseReader(response)
    seqs = [(await reader.message())["seq"] for _ in range(503)]
    response.close()
    assert seqs == list(range(1, 504))


# -- ingested calls ---------------------------------------------------------------------------------


async def test_a_key_has_at_most_its_cap_of_active_ingested_calls(
    small_histories: Platform, http
) -> None:
    api = Api(http, small_histories, await small_histories.new_key())
    async with connected(small_histories) as pg:  # before the key's first request
        await pg.execute(
            "UPDATE api_keys SET max_active_ingested_calls = 3 WHERE name = $1", api.key
        )
    ids = []
    for i in range(3):
        status, body = await initiate(api, event_id=f"start-{i}")
        assert status == 201, body
        ids.append(body["call_id"])
    status, body = await initiate(api)
    assert status == 429, body
    assert body["message"].startswith("Maximum active ingested calls reached (3)")
    # A repeat of the call_initiated of an active call replays it, at the cap too.
    status, again = await initiate(api, event_id="start-1")
    assert (status, again["call_id"]) == (200, ids[1])
    # Simulated calls have limits of their own.
    assert (await api.create_call())[0] == 201

    await post_event(api, {"event": "call_ended", "call_id": ids[0], "end_reason": "abandoned"})
    status, body = await initiate(api)
    assert status == 201, body
    status, body = await initiate(api)
    assert status == 429, body


@pytest.fixture(scope="module")
async def idle_ends(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    settings = {"INGESTED_CALL_TIMEOUT_S": "1", "RECONCILE_INTERVAL_MS": "200"}
    async with own_platform(tmp_path_factory, settings) as running:
        yield running


async def test_an_ingested_call_idle_past_its_timeout_is_ended_as_timeout(
    idle_ends: Platform, http
) -> None:
    api = Api(http, idle_ends, await idle_ends.new_key())
    async with key_stream(api) as live:
        status, body = await initiate(api)
        assert status == 201
        call_id = body["call_id"]
        await post_event(api, {"event": "call_routed", "call_id": call_id, "agent_id": "a"})
        await post_event(api, {"event": "call_answered", "call_id": call_id})
        messages = [await live.message() for _ in range(3)]
        ended = await live.message(timeout=5)
    assert [m["event"] for m in messages] == ["call_initiated", "call_routed", "call_answered"]
    assert (ended["call_id"], ended["event"], ended["status"]) == (
        call_id,
        "call_ended",
        "COMPLETED",
    )
    assert "short_call" in ended["flags"]  # flagged like any end: talk under SHORT_CALL_S
    _, call, _ = await api.get_call(call_id)
    assert (call["status"], call["end_reason"]) == ("COMPLETED", "timeout")
    redis = Redis.from_url(idle_ends.redis_url)
    try:
        key_id = await key_id_of(idle_ends, api.key)
        assert await redis.zscore(keys.ingested_slots(key_id), call["call_id"]) is None
    finally:
        await redis.aclose()


async def key_id_of(platform: Platform, secret: str) -> str:
    conn = await asyncpg.connect(platform.dsn)
    try:
        return await conn.fetchval("SELECT id::text FROM api_keys WHERE name = $1", secret)
    finally:
        await conn.close()


# -- limits across a Redis loss ------------------------------------------------------------------------


async def test_no_create_is_admitted_over_the_limit_after_redis_loses_its_data(
    platform_factory, http
) -> None:
    """Three keys at their limit of 20 with every call in flight; Redis is flushed and the
    creates keep coming. None is admitted until the slots are restored from PostgreSQL, and
    then only as calls end."""
    own = await platform_factory({"TIME_SCALE": "1.0"})  # calls live 6-11 s
    apis = [Api(http, own, await own.new_key(max_concurrent=20, max_cps=1000)) for _ in range(3)]
    for api in apis:
        results = await asyncio.gather(*(api.create_call() for _ in range(20)))
        assert [status for status, _, _ in results] == [201] * 20
    redis = Redis.from_url(own.redis_url)
    try:
        await redis.flushdb()
        started = time.monotonic()
        statuses = []
        while time.monotonic() - started < 2.0:
            results = await asyncio.gather(*(api.create_call() for api in apis for _ in range(5)))
            statuses += [status for status, _, _ in results]
        assert statuses and set(statuses) == {429}, statuses
        for api in apis:
            key_id = await key_id_of(own, api.key)
            held = await redis.zcount(keys.leases(key_id), "-inf", "(+inf")
            assert held == 20
    finally:
        await redis.aclose()
