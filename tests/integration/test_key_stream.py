"""`GET /stream`: every call of the caller's key over SSE, and the outbox that keeps an update
committed to PostgreSQL from being lost for subscribers when Redis refuses to publish it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from core import keys
from core.clock import iso
from tests.integration.conftest import Api
from tests.integration.lifecycle_table import MESSAGE_FIELDS, MOVES
from tests.integration.platform import Platform

# Any single wait longer than this is a hang; a simulated call lives ~0.5 s here.
READ_TIMEOUT_S = 5.0
# Long enough for a simulated call's whole life on a busy machine.
LIFECYCLE_TIMEOUT_S = 15.0


# -- an SSE client that never loses half an event to a timeout --------------------------------


class KeyStream:
    """Parses one `/stream` response in a task of its own into (event, data) pairs, so a
    timed-out wait never cuts a line in half."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        # A queue's figures (`stats`, test_stats.py) come as its calls move: kept apart, since
        # these tests are about the calls' own messages.
        self.stats: list[dict[str, Any]] = []
        self.comments = 0
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        name, data = "message", []
        try:
            async for raw in self.response.content:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data and name == "stats":
                        self.stats.append(orjson.loads("\n".join(data)))
                    elif data:
                        await self.events.put((name, "\n".join(data)))
                    name, data = "message", []
                elif line.startswith(":"):
                    self.comments += 1
                else:
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)
        except (aiohttp.ClientError, asyncio.CancelledError):
            pass
        finally:
            self.events.put_nowait(None)

    async def next(self, timeout: float = READ_TIMEOUT_S) -> tuple[str, str] | None:
        """The next event, or None when the server ended the stream."""
        async with asyncio.timeout(timeout):
            return await self.events.get()

    async def message(self, timeout: float = READ_TIMEOUT_S) -> dict[str, Any]:
        """The next `call` message; anything else (resync, the end) fails the test."""
        event = await self.next(timeout)
        assert event is not None, "the stream ended"
        name, data = event
        assert name == "call", event
        return orjson.loads(data)

    async def until(
        self, done: Callable[[dict[str, list[dict[str, Any]]]], bool], timeout: float
    ) -> list[dict[str, Any]]:
        """Messages in arrival order until `done(messages by call)` holds."""
        received: list[dict[str, Any]] = []
        by_call: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        deadline = time.monotonic() + timeout
        while not done(by_call):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not done after {timeout} s; received {received}")
            message = await self.message(left)
            received.append(message)
            by_call[message["call_id"]].append(message)
        return received

    async def quiet_for(self, seconds: float) -> None:
        """Fails if any event (a message, a resync, the end) comes within `seconds`."""
        with contextlib.suppress(TimeoutError):
            event = await self.next(seconds)
            raise AssertionError(f"expected nothing for {seconds} s, got {event}")

    async def close(self) -> None:
        self.response.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def key_stream(
    api: Api,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> AsyncIterator[KeyStream]:
    """`GET /stream` with the key (or the given headers), past its `ready` event."""
    async with asyncio.timeout(READ_TIMEOUT_S):
        response = await api.http.get(
            api.url("/stream"),
            headers=api.auth if headers is None else headers,
            params=params,
        )
    stream = KeyStream(response)
    try:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        assert await stream.next() == ("ready", "{}")
        yield stream
    finally:
        await stream.close()


# -- what the messages must look like ---------------------------------------------------------


def completed(call_ids: set[str]) -> Callable[[dict[str, list[dict[str, Any]]]], bool]:
    return lambda by_call: all(
        by_call.get(call_id) and by_call[call_id][-1]["status"] == "COMPLETED"
        for call_id in call_ids
    )


def reached(seqs: dict[str, int]) -> Callable[[dict[str, list[dict[str, Any]]]], bool]:
    return lambda by_call: all(
        by_call.get(call_id) and by_call[call_id][-1]["seq"] >= seq for call_id, seq in seqs.items()
    )


def by_call(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        grouped[message["call_id"]].append(message)
    return dict(grouped)


def assert_in_order(messages: list[dict[str, Any]], first_seq: int = 1) -> None:
    """One call's messages: the message shape, consecutive seqs from `first_seq` (none twice,
    none missing), legal moves, each previous_status the status before."""
    assert [m["seq"] for m in messages] == list(range(first_seq, first_seq + len(messages)))
    for message in messages:
        assert set(message) == MESSAGE_FIELDS, message
        assert MOVES.get((message["previous_status"], message["status"])) == message["event"], (
            message
        )
        assert isinstance(message["flags"], list)
        assert message["timestamp"].endswith("Z")
    for before, after in itertools.pairwise(messages):
        assert after["previous_status"] == before["status"], (before, after)


async def history(pg: asyncpg.Connection, call_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """call_events of the calls, as the realtime messages they should have been."""
    rows = await pg.fetch(
        """
        SELECT coalesce(c.ref, c.id::text) AS call_id, e.seq, e.event, e.from_status,
               e.to_status, e.flags, e.occurred_at
          FROM call_events e JOIN calls c ON c.id = e.call_id
         WHERE coalesce(c.ref, c.id::text) = ANY($1::text[])
         ORDER BY 1, e.seq
        """,
        call_ids,
    )
    grouped: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["call_id"]].append(
            {
                "call_id": row["call_id"],
                "seq": row["seq"],
                "status": row["to_status"],
                "previous_status": row["from_status"],
                "event": row["event"],
                "flags": list(row["flags"]),
                "timestamp": iso(row["occurred_at"]),
            }
        )
    return dict(grouped)


def as_message(event_body: dict[str, Any]) -> dict[str, Any]:
    """The realtime message inside a `POST /events` answer."""
    return {name: event_body[name] for name in MESSAGE_FIELDS}


async def post_event(api: Api, event: dict[str, Any]) -> dict[str, Any]:
    async with asyncio.timeout(READ_TIMEOUT_S):
        status, body, _ = await api.request("POST", "/events", json=event)
    assert status == 201, body
    return body


async def new_simulated_call(api: Api) -> str:
    async with asyncio.timeout(READ_TIMEOUT_S):
        status, body, _ = await api.create_call()
    assert status == 201, body
    return body["call_id"]


async def ingested_lifecycle(api: Api, call_id: str) -> list[dict[str, Any]]:
    """Every event of an ingested call, one after another; their `POST /events` answers."""
    events = [
        {"event": "call_initiated", "call_id": call_id, "type": "video", "queue_id": "q1"},
        {"event": "call_routed", "call_id": call_id, "agent_id": "agent-7"},
        {"event": "call_answered", "call_id": call_id, "wait_time": 31},
        {"event": "call_hold", "call_id": call_id},
        {"event": "call_resumed", "call_id": call_id, "hold_duration": 5},
        {"event": "call_ended", "call_id": call_id, "end_reason": "completed", "duration": 45},
    ]
    return [await post_event(api, event) for event in events]


async def outbox_rows(pg: asyncpg.Connection, call_ids: list[str]) -> list[tuple[str, int]]:
    rows = await pg.fetch(
        """
        SELECT coalesce(c.ref, c.id::text) AS call_id, o.seq
          FROM outbox o JOIN calls c ON c.id = o.call_id
         WHERE coalesce(c.ref, c.id::text) = ANY($1::text[])
         ORDER BY o.id
        """,
        call_ids,
    )
    return [(row["call_id"], row["seq"]) for row in rows]


async def outbox_empties(pg: asyncpg.Connection, call_ids: list[str], within_s: float) -> float:
    """Seconds until no outbox entry of the calls is left; fails after `within_s`."""
    started = time.monotonic()
    left: list[tuple[str, int]] = []
    while time.monotonic() - started < within_s:
        left = await outbox_rows(pg, call_ids)
        if not left:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"outbox entries still there after {within_s} s: {left}")


# -- 1. new calls and their transitions arrive ------------------------------------------------


async def test_new_simulated_calls_arrive_with_every_transition_in_order(api: Api, pg) -> None:
    async with key_stream(api) as stream:
        call_ids = [await new_simulated_call(api) for _ in range(3)]
        messages = await stream.until(completed(set(call_ids)), LIFECYCLE_TIMEOUT_S)
        await stream.quiet_for(0.3)

    grouped = by_call(messages)
    assert set(grouped) == set(call_ids)
    recorded = await history(pg, call_ids)
    for call_id in call_ids:
        assert_in_order(grouped[call_id])
        assert grouped[call_id][0] | {"timestamp": None} == {
            "call_id": call_id,
            "seq": 1,
            "status": "QUEUED",
            "previous_status": None,
            "event": "call_initiated",
            "flags": [],
            "timestamp": None,
        }
        assert grouped[call_id] == recorded[call_id]
    # The QUEUED message of each call came before anything else of it, in creation order.
    firsts = [m["call_id"] for m in messages if m["seq"] == 1]
    assert firsts == call_ids


async def test_ingested_calls_arrive_with_every_event_and_its_flags(api: Api, pg) -> None:
    call_id = str(uuid.uuid4())
    async with key_stream(api) as stream:
        posted = await ingested_lifecycle(api, call_id)
        messages = await stream.until(completed({call_id}), READ_TIMEOUT_S)
        await stream.quiet_for(0.3)

    assert messages == [as_message(body) for body in posted]
    assert_in_order(messages)
    assert [m["event"] for m in messages] == [
        "call_initiated",
        "call_routed",
        "call_answered",
        "call_hold",
        "call_resumed",
        "call_ended",
    ]
    assert [m["flags"] for m in messages] == [[], [], *[["wait_sla_exceeded"]] * 4]
    assert messages == (await history(pg, [call_id]))[call_id]


async def test_a_stream_opened_mid_call_gets_the_later_transitions(api: Api) -> None:
    call_id = str(uuid.uuid4())
    await post_event(
        api, {"event": "call_initiated", "call_id": call_id, "type": "voice", "queue_id": "q1"}
    )
    await post_event(api, {"event": "call_routed", "call_id": call_id, "agent_id": "a1"})

    async with key_stream(api) as stream:
        answered = await post_event(api, {"event": "call_answered", "call_id": call_id})
        ended = await post_event(
            api, {"event": "call_ended", "call_id": call_id, "end_reason": "abandoned"}
        )
        messages = await stream.until(completed({call_id}), READ_TIMEOUT_S)

    assert messages == [as_message(answered), as_message(ended)]
    assert_in_order(messages, first_seq=3)


async def test_a_duplicate_event_id_publishes_nothing(api: Api) -> None:
    call_id = str(uuid.uuid4())
    async with key_stream(api) as stream:
        await post_event(
            api, {"event": "call_initiated", "call_id": call_id, "type": "voice", "queue_id": "q"}
        )
        routed = {"event": "call_routed", "call_id": call_id, "agent_id": "a", "event_id": "e1"}
        first = await post_event(api, routed)
        async with asyncio.timeout(READ_TIMEOUT_S):
            status, again, _ = await api.request("POST", "/events", json=routed)
        messages = await stream.until(reached({call_id: 2}), READ_TIMEOUT_S)
        await stream.quiet_for(0.5)

    assert (status, again) == (200, first)
    assert [m["seq"] for m in messages] == [1, 2]


# -- 2. one key never sees another's calls ----------------------------------------------------


async def test_two_keys_streaming_while_both_create_calls_see_only_their_own(make_api) -> None:
    keys_ = [await make_api(max_concurrent=100, max_cps=100) for _ in range(2)]
    idle = await make_api()

    async def traffic(api: Api) -> set[str]:
        simulated = [new_simulated_call(api) for _ in range(4)]
        ingested = [ingested_lifecycle(api, str(uuid.uuid4())) for _ in range(2)]
        results = await asyncio.gather(*simulated, *ingested)
        return {r if isinstance(r, str) else r[0]["call_id"] for r in results}

    async with (
        key_stream(keys_[0]) as first,
        key_stream(keys_[1]) as second,
        key_stream(idle) as idle_stream,
    ):
        created = await asyncio.gather(*(traffic(api) for api in keys_))
        received = await asyncio.gather(
            first.until(completed(created[0]), LIFECYCLE_TIMEOUT_S),
            second.until(completed(created[1]), LIFECYCLE_TIMEOUT_S),
        )
        # Late or stray messages would come now; none may.
        await asyncio.gather(first.quiet_for(0.5), second.quiet_for(0.5))
        assert idle_stream.events.empty(), idle_stream.events.get_nowait()

    assert not created[0] & created[1]
    for own, messages in zip(created, received, strict=True):
        assert {m["call_id"] for m in messages} == own
        for call_messages in by_call(messages).values():
            assert_in_order(call_messages)
            assert call_messages[-1]["status"] == "COMPLETED"


# -- 3. keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["bearer", "x-api-key", "access_token"])
async def test_the_stream_takes_the_key_every_documented_way(api: Api, style) -> None:
    headers, params = {
        "bearer": ({"Authorization": f"Bearer {api.key}"}, None),
        "x-api-key": ({"X-API-Key": api.key}, None),
        "access_token": ({}, {"access_token": api.key}),
    }[style]

    async with key_stream(api, headers=headers, params=params) as stream:
        call_id = await new_simulated_call(api)
        message = await stream.message()

    assert (message["call_id"], message["seq"], message["status"]) == (call_id, 1, "QUEUED")


@pytest.mark.parametrize(
    ("headers", "params", "message"),
    [
        ({}, None, "Missing API key: send Authorization: Bearer <key>, or X-API-Key: <key>"),
        ({"Authorization": "Bearer invalid-key"}, None, "Invalid API key"),
        ({}, {"access_token": "invalid-key"}, "Invalid API key"),
        (
            {},
            {"access_token": ""},
            "Missing API key: send Authorization: Bearer <key>, or X-API-Key: <key>",
        ),
    ],
    ids=["no key", "bad bearer", "bad access_token", "empty access_token"],
)
async def test_the_stream_without_a_valid_key_is_401_json(api: Api, headers, params, message):
    async with (
        asyncio.timeout(READ_TIMEOUT_S),
        api.http.get(api.url("/stream"), headers=headers, params=params) as response,
    ):
        assert response.content_type == "application/json"
        body = await response.json()

    assert (response.status, body) == (401, {"error": "Unauthorized", "message": message})


async def test_access_token_is_taken_on_streams_only(api: Api) -> None:
    async with (
        asyncio.timeout(READ_TIMEOUT_S),
        api.http.get(api.url("/calls"), params={"access_token": api.key}) as response,
    ):
        body = await response.json()

    assert response.status == 401, body


# -- 4. the outbox -----------------------------------------------------------------------------


async def test_the_outbox_is_empty_shortly_after_normal_traffic(api: Api, pg) -> None:
    call_ids = [await new_simulated_call(api) for _ in range(3)]
    ingested = str(uuid.uuid4())
    await ingested_lifecycle(api, ingested)
    for call_id in call_ids:
        await api.wait_for(call_id, lambda c: c["status"] == "COMPLETED", LIFECYCLE_TIMEOUT_S)
    everything = [*call_ids, ingested]
    events = await pg.fetchval(
        """
        SELECT count(*) FROM call_events e JOIN calls c ON c.id = e.call_id
         WHERE coalesce(c.ref, c.id::text) = ANY($1::text[])
        """,
        everything,
    )
    assert events >= 3 * 3 + 6

    # Published entries are deleted within ~0.1 s (ACK_INTERVAL_S); allow for a slow machine,
    # but stay well below what upkeep's republishing (OUTBOX_GRACE_MS 1000) would need.
    emptied_after_s = await outbox_empties(pg, everything, within_s=1.0)

    assert emptied_after_s < 1.0


@pytest.fixture
async def own_platform(platform_factory) -> Platform:
    """A platform of the test's own: its Redis gets its ACL changed."""
    return await platform_factory()


async def test_an_update_committed_while_redis_refuses_publish_reaches_the_stream_later(
    own_platform: Platform, make_api, pg_of_own
) -> None:
    api = await make_api(max_concurrent=100, max_cps=100, on=own_platform)
    redis = Redis.from_url(own_platform.redis_url)
    call_id = str(uuid.uuid4())
    try:
        async with key_stream(api) as stream:
            initiated = await post_event(
                api,
                {"event": "call_initiated", "call_id": call_id, "type": "voice", "queue_id": "q1"},
            )
            assert await stream.message() == as_message(initiated)

            # Refuse PUBLISH alone: every other command, SUBSCRIBE included, still works.
            await redis.execute_command("ACL", "SETUSER", "default", "-publish")
            with pytest.raises(NoPermissionError):
                await redis.publish("probe", "x")
            assert await redis.ping()
            await redis.set("probe", "1")
            assert await redis.get("probe") == b"1"
            probe = redis.pubsub()
            await probe.subscribe("probe")
            await probe.aclose()
            assert (await redis.pubsub_numsub(keys.EVENTS_CHANNEL))[0][1] >= 1

            started = time.monotonic()
            routed = await post_event(
                api, {"event": "call_routed", "call_id": call_id, "agent_id": "agent-1"}
            )
            answered = await post_event(api, {"event": "call_answered", "call_id": call_id})
            posting_s = time.monotonic() - started

            # Committed: the call has moved and both updates wait in the outbox...
            _, call, _ = await api.get_call(call_id)
            assert call["status"] == "ANSWERED"
            assert await outbox_rows(pg_of_own, [call_id]) == [(call_id, 2), (call_id, 3)]
            # ...and stay there, unpublished, past the outbox grace and several upkeep passes.
            await stream.quiet_for(2.5)
            assert await outbox_rows(pg_of_own, [call_id]) == [(call_id, 2), (call_id, 3)]
            # The API process kept its subscription all along.
            assert (await redis.pubsub_numsub(keys.EVENTS_CHANNEL))[0][1] >= 1

            await redis.execute_command("ACL", "SETUSER", "default", "+publish")
            restored = time.monotonic()
            late = [await stream.message(), await stream.message()]
            delivered_after_s = time.monotonic() - restored
            emptied_after_s = await outbox_empties(pg_of_own, [call_id], within_s=3.0)

            # Once publishing works again, updates go straight out, not through the outbox.
            started = time.monotonic()
            ended = await post_event(
                api, {"event": "call_ended", "call_id": call_id, "end_reason": "completed"}
            )
            assert await stream.message(timeout=1.0) == as_message(ended)
            direct_s = time.monotonic() - started
            await stream.quiet_for(0.5)
    finally:
        await redis.execute_command("ACL", "SETUSER", "default", "+publish")
        await redis.aclose()

    assert routed["seq"] == 2 and answered["seq"] == 3
    assert late == [as_message(routed), as_message(answered)]
    assert delivered_after_s < 3.0, f"the outbox was drained {delivered_after_s:.2f} s after"
    assert emptied_after_s < 3.0
    assert direct_s < 1.0, "published directly, not after the outbox grace"
    assert posting_s < 5.0, "a refused publish may cost its retries, not the request"
    assert await outbox_rows(pg_of_own, [call_id]) == []
    assert await pg_of_own.fetchval("SELECT count(*) FROM outbox") == 0
    api_log = own_platform.processes["api"].log_path.read_text(errors="replace")
    assert "realtime subscription lost" not in api_log


@pytest.fixture
async def pg_of_own(own_platform: Platform) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(own_platform.dsn)
    yield conn
    await conn.close()


# -- 5. an update published before an older one that waits in the outbox ----------------------

# Long enough that upkeep cannot republish the stuck update before the later one goes out.
RACE_GRACE_MS = 3_000


@pytest.fixture(scope="module")
async def slow_drain_platform(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Platform]:
    """Upkeep republishes an outbox entry only after RACE_GRACE_MS here."""
    running = Platform(
        tmp_path_factory.mktemp("slow-drain"), settings={"OUTBOX_GRACE_MS": str(RACE_GRACE_MS)}
    )
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


@contextlib.asynccontextmanager
async def publish_refused(platform: Platform) -> AsyncIterator[None]:
    """PUBLISH refused by the platform's Redis for the `with` block (nothing else is)."""
    redis = Redis.from_url(platform.redis_url)
    try:
        await redis.execute_command("ACL", "SETUSER", "default", "-publish")
        yield
    finally:
        await redis.execute_command("ACL", "SETUSER", "default", "+publish")
        await redis.aclose()


async def test_an_update_published_before_an_older_stuck_one_comes_after_it_from_history(
    slow_drain_platform: Platform, make_api
) -> None:
    """The stream saw the call's seq 1; seq 2 waits in the outbox; seq 3 is published at once.
    The stream fills seq 2 in from PostgreSQL before seq 3, and drops seq 2 when upkeep
    republishes it."""
    api = await make_api(max_concurrent=100, max_cps=100, on=slow_drain_platform)
    call_id = str(uuid.uuid4())
    async with key_stream(api) as stream:
        initiated = await post_event(
            api, {"event": "call_initiated", "call_id": call_id, "type": "voice", "queue_id": "q"}
        )
        assert await stream.message() == as_message(initiated)
        async with publish_refused(slow_drain_platform):
            routed = await post_event(
                api, {"event": "call_routed", "call_id": call_id, "agent_id": "a1"}
            )
        answered = await post_event(api, {"event": "call_answered", "call_id": call_id})

        # Both at once, well before upkeep could republish seq 2.
        at_once = [await stream.message(timeout=1.0), await stream.message(timeout=1.0)]
        # Upkeep republishes seq 2 after the grace: the stream must not send it again.
        await stream.quiet_for(RACE_GRACE_MS / 1000 + 1.5)

    assert at_once == [as_message(routed), as_message(answered)]


async def test_a_new_calls_first_message_left_in_the_outbox_still_reaches_key_streams(
    slow_drain_platform: Platform, make_api
) -> None:
    """The stream is open before the call exists. Its seq 1 (QUEUED) cannot be published and
    waits in the outbox; seq 2 is published at once when Redis is back. The key stream has
    not seen the call, takes seq 2 as the first it may have missed nothing before
    (api/realtime/follow.py `_key_messages`: `last = seq - 1` for an unknown call), and when
    upkeep republishes seq 1 it drops it as already seen (`seq <= last`). The subscriber never
    gets the call's QUEUED message, and no resync tells it to look."""
    api = await make_api(max_concurrent=100, max_cps=100, on=slow_drain_platform)
    call_id = str(uuid.uuid4())
    async with key_stream(api) as stream:
        async with publish_refused(slow_drain_platform):
            initiated = await post_event(
                api,
                {"event": "call_initiated", "call_id": call_id, "type": "voice", "queue_id": "q"},
            )
        routed = await post_event(
            api, {"event": "call_routed", "call_id": call_id, "agent_id": "a1"}
        )
        # Everything the stream sends until well after upkeep has republished seq 1.
        events = []
        deadline = time.monotonic() + RACE_GRACE_MS / 1000 + 2.0
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                event = await stream.next(left)
                assert event is not None, "the stream ended"
                events.append(event)

    conn = await asyncpg.connect(slow_drain_platform.dsn)
    try:
        # Upkeep did republish seq 1 within the wait: the stream had it and dropped it.
        assert await outbox_rows(conn, [call_id]) == []
    finally:
        await conn.close()
    messages = [orjson.loads(data) for name, data in events if name == "call"]
    resynced = any(name == "resync" for name, _ in events)
    assert resynced or messages == [as_message(initiated), as_message(routed)], events
