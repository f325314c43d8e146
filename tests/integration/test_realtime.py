"""Watching a call live: SSE (`/calls/{id}/stream`) and WebSocket (`/ws?call_id=`)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.integration.conftest import Api
from tests.integration.lifecycle_table import MESSAGE_FIELDS, MOVES
from tests.integration.platform import Platform

# How long a read may wait before the test fails instead of hanging; a call lives ~0.5 s.
READ_TIMEOUT_S = 5.0
# A dropped client must be noticed at once, well inside the 1 s ping interval.
DROP_WITHIN_S = 0.5
OPEN_STREAMS = re.compile(r"^mockcomms_open_streams (\d+)\.0$", re.MULTILINE)


# -- SSE client ------------------------------------------------------------------------------


@dataclass
class SseEvent:
    id: str | None
    event: str | None
    data: str


class SseReader:
    """A small EventSource parser over an aiohttp response body (comments kept apart)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []
        self.closed = False

    async def next(self, timeout: float = READ_TIMEOUT_S) -> SseEvent | None:
        """The next event, or None when the server ended the stream."""
        fields: dict[str, str] = {}
        data: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    self.closed = True
                    return None
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        return SseEvent(fields.get("id"), fields.get("event"), "\n".join(data))
                    fields.clear()
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value

    async def comment(self, timeout: float) -> str:
        """The next comment line (a keep-alive ping); fails if an event or the end comes first."""
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                line = raw.decode().rstrip("\r\n")
                assert raw and (not line or line.startswith(":")), f"not a comment: {raw!r}"
                if line:
                    self.comments.append(line[1:].strip())
                    return self.comments[-1]

    async def message(self, timeout: float = READ_TIMEOUT_S) -> dict[str, Any] | None:
        """The next `call` event's JSON, checking its SSE id is its seq; None at the end."""
        event = await self.next(timeout)
        if event is None:
            return None
        body = json.loads(event.data)
        assert event.event == "call", event
        assert event.id == str(body["seq"]), event
        return body

    async def rest(self, timeout: float = READ_TIMEOUT_S) -> list[dict[str, Any]]:
        """Every message until the server ends the stream, within `timeout` in all."""
        messages = []
        async with asyncio.timeout(timeout):
            while (body := await self.message(timeout)) is not None:
                messages.append(body)
        return messages


def stream_url(api: Api, call_id: str) -> str:
    return api.url(f"/calls/{call_id}/stream")


async def read_stream(
    api: Api,
    call_id: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    timeout: float = READ_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Open an SSE stream with the key and read it to its end (fails if it does not end)."""
    async with api.http.get(
        stream_url(api, call_id), headers=api.auth | (headers or {}), params=params
    ) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        return await SseReader(response).rest(timeout)


async def read_websocket(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Every text frame until the server closes; fails if it does not close after COMPLETED."""
    messages = []
    async with asyncio.timeout(READ_TIMEOUT_S):
        async for frame in ws:
            assert frame.type == aiohttp.WSMsgType.TEXT, frame
            messages.append(frame.json())
    return messages


def ws_url(api: Api, call_id: str, **query: str) -> str:
    return str(URL(api.url("/ws")).with_query({"call_id": call_id, **query}))


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


async def refused_upgrade(http: aiohttp.ClientSession, url: str, headers: dict[str, str]):
    """A WebSocket handshake the server answers with a plain response: (status, JSON body)."""
    async with http.get(url, headers=UPGRADE | headers) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


# -- what a lifecycle must look like ---------------------------------------------------------


def iso_ms(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def assert_lifecycle(messages: list[dict[str, Any]], call_id: str) -> None:
    """Consecutive seqs from the first, legal moves, each previous_status the status before,
    and it ends with the one COMPLETED."""
    assert messages, "no message at all"
    for message in messages:
        assert set(message) == MESSAGE_FIELDS, message
        assert message["call_id"] == call_id
        assert MOVES.get((message["previous_status"], message["status"])) == message["event"], (
            message
        )
        assert isinstance(message["flags"], list)
        assert message["timestamp"].endswith("Z")
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    for before, after in itertools.pairwise(messages):
        assert after["previous_status"] == before["status"], (before, after)
        assert after["timestamp"] >= before["timestamp"], (before, after)
    assert [m["status"] for m in messages].count("COMPLETED") == 1
    assert messages[-1]["status"] == "COMPLETED"


async def history(pg, call_id: str) -> list[dict[str, Any]]:
    """call_events as the realtime messages they should have been."""
    rows = await pg.fetch(
        """
        SELECT e.seq, e.event, e.from_status, e.to_status, e.flags, e.occurred_at
          FROM call_events e JOIN calls c ON c.id = e.call_id
         WHERE coalesce(c.ref, c.id::text) = $1
         ORDER BY e.seq
        """,
        call_id,
    )
    return [
        {
            "call_id": call_id,
            "seq": row["seq"],
            "status": row["to_status"],
            "previous_status": row["from_status"],
            "event": row["event"],
            "flags": list(row["flags"]),
            "timestamp": iso_ms(row["occurred_at"]),
        }
        for row in rows
    ]


async def completed_call(api: Api) -> str:
    _, created, _ = await api.create_call()
    await api.wait_for(created["call_id"], lambda c: c["status"] == "COMPLETED")
    return created["call_id"]


# -- the gauge of open streams ---------------------------------------------------------------


async def open_streams(api: Api) -> int:
    async with api.http.get(
        api.url("/metrics"), params={"format": "prometheus"}, headers=api.auth
    ) as response:
        assert response.status == 200
        found = OPEN_STREAMS.search(await response.text())
    assert found, "no mockcomms_open_streams line"
    return int(found.group(1))


async def gauge_settles(api: Api, predicate: Callable[[int], bool], within_s: float) -> float:
    """Seconds until the open-streams gauge matches `predicate`; fails after `within_s`."""
    started = time.monotonic()
    seen = None
    while time.monotonic() - started < within_s:
        seen = await open_streams(api)
        if predicate(seen):
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"mockcomms_open_streams still {seen} after {within_s} s")


# -- a platform whose calls stay put ---------------------------------------------------------


@pytest.fixture(scope="module")
async def slow_platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    """Calls rest 20-40 s in QUEUED here, so a stream stays open as long as a test needs."""
    running = Platform(tmp_path_factory.mktemp("slow"), settings={"TIME_SCALE": "20"})
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def slow_api(make_api, slow_platform: Platform) -> Api:
    return await make_api(max_concurrent=100, max_cps=100, on=slow_platform)


# -- 1. SSE follows a new call to its end ----------------------------------------------------


async def test_sse_delivers_the_whole_lifecycle_of_a_new_call_and_closes(api: Api, pg) -> None:
    _, created, _ = await api.create_call()
    call_id = created["call_id"]

    async with api.http.get(stream_url(api, call_id), headers=api.auth) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        reader = SseReader(response)
        messages = []
        while (message := await reader.message()) is not None:
            messages.append(message)
            if message["status"] == "COMPLETED":
                completed_at = time.monotonic()
        closed_after_s = time.monotonic() - completed_at

    assert_lifecycle(messages, call_id)
    assert closed_after_s < 2, f"the stream stayed open {closed_after_s:.2f} s after COMPLETED"
    assert messages[0]["status"] in {"QUEUED", "RINGING"}, "subscribed at creation"
    assert messages == (await history(pg, call_id))[messages[0]["seq"] - 1 :]


# -- 2. a finished call gives its final state ------------------------------------------------


async def test_sse_on_a_completed_call_sends_its_completed_state_and_ends(api: Api, pg) -> None:
    call_id = await completed_call(api)

    messages = await read_stream(api, call_id)

    final = (await history(pg, call_id))[-1]
    _, call, _ = await api.get_call(call_id)
    assert len(messages) == 1
    assert messages[0] == final | {"flags": call["flags"]}


# -- 3. Last-Event-ID resumes ----------------------------------------------------------------


@pytest.mark.parametrize("via", ["header", "query"])
async def test_last_event_id_1_resumes_with_the_rest_of_the_history(api: Api, pg, via) -> None:
    call_id = await completed_call(api)
    _, call, _ = await api.get_call(call_id)
    final_seq = await pg.fetchval("SELECT max(seq) FROM call_events WHERE call_id = $1", call_id)
    assert call["status"] == "COMPLETED"
    assert final_seq == await pg.fetchval("SELECT seq FROM calls WHERE id = $1", call_id)

    if via == "header":
        messages = await read_stream(api, call_id, headers={"Last-Event-ID": "1"})
    else:
        messages = await read_stream(api, call_id, params={"last_event_id": "1"})

    assert [m["seq"] for m in messages] == list(range(2, final_seq + 1))
    assert messages == (await history(pg, call_id))[1:]
    assert_lifecycle(messages, call_id)


async def test_last_event_id_of_the_last_seq_sends_nothing_and_ends(api: Api, pg) -> None:
    call_id = await completed_call(api)
    final_seq = await pg.fetchval("SELECT max(seq) FROM call_events WHERE call_id = $1", call_id)

    messages = await read_stream(api, call_id, headers={"Last-Event-ID": str(final_seq)})

    assert messages == []


# -- 4. WebSocket ----------------------------------------------------------------------------


async def test_websocket_delivers_the_whole_lifecycle_and_the_server_closes_it(
    api: Api, pg
) -> None:
    _, created, _ = await api.create_call()
    call_id = created["call_id"]

    async with api.http.ws_connect(ws_url(api, call_id), headers=api.auth) as ws:
        messages = await read_websocket(ws)
        assert ws.closed
        assert ws.close_code == aiohttp.WSCloseCode.OK

    assert_lifecycle(messages, call_id)
    assert messages == (await history(pg, call_id))[messages[0]["seq"] - 1 :]


async def test_websocket_takes_the_key_as_access_token(api: Api) -> None:
    call_id = await completed_call(api)

    async with api.http.ws_connect(ws_url(api, call_id, access_token=api.key)) as ws:
        messages = await read_websocket(ws)
        assert ws.close_code == aiohttp.WSCloseCode.OK

    assert [m["status"] for m in messages] == ["COMPLETED"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API key: send Authorization: Bearer <key>, or X-API-Key: <key>"),
        ({"Authorization": "Bearer invalid-key"}, "Invalid API key"),
    ],
)
async def test_websocket_without_a_valid_key_is_401_json_before_upgrading(
    api: Api, headers, message
) -> None:
    _, created, _ = await api.create_call()
    call_id = created["call_id"]

    status, body = await refused_upgrade(api.http, ws_url(api, call_id), headers)

    assert (status, body) == (401, {"error": "Unauthorized", "message": message})
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.http.ws_connect(ws_url(api, call_id), headers=headers)
    assert refused.value.status == 401


async def test_websocket_on_another_keys_call_is_404_json(make_api) -> None:
    owner, stranger = await make_api(), await make_api()
    _, created, _ = await owner.create_call()

    status, body = await refused_upgrade(
        stranger.http, ws_url(stranger, created["call_id"]), stranger.auth
    )

    assert (status, body) == (404, {"error": "Not Found", "message": "Call not found"})


@pytest.mark.parametrize("call_id", ["", "not a call", "x" * 129])
async def test_websocket_without_a_call_id_is_400_json(api: Api, call_id) -> None:
    status, body = await refused_upgrade(api.http, ws_url(api, call_id), api.auth)

    assert status == 400
    assert body["error"] == "Bad Request" and "call_id" in body["message"]


# -- 5. who may stream what ------------------------------------------------------------------


@pytest.mark.parametrize("style", ["bearer", "x-api-key", "access_token"])
async def test_sse_takes_the_key_every_documented_way(api: Api, style) -> None:
    _, created, _ = await api.create_call()
    call_id = created["call_id"]
    headers, params = {
        "bearer": ({"Authorization": f"Bearer {api.key}"}, None),
        "x-api-key": ({"X-API-Key": api.key}, None),
        "access_token": ({}, {"access_token": api.key}),
    }[style]

    async with api.http.get(stream_url(api, call_id), headers=headers, params=params) as response:
        assert response.status == 200
        first = await SseReader(response).message()

    assert first is not None and first["call_id"] == call_id


async def test_sse_without_a_key_is_401_json(api: Api) -> None:
    _, created, _ = await api.create_call()
    call_id = created["call_id"]

    async with api.http.get(stream_url(api, call_id)) as response:
        assert response.content_type == "application/json"
        body = await response.json()

    assert response.status == 401
    assert body == {
        "error": "Unauthorized",
        "message": "Missing API key: send Authorization: Bearer <key>, or X-API-Key: <key>",
    }


async def test_another_key_cannot_stream_a_call(make_api) -> None:
    owner, stranger = await make_api(), await make_api()
    _, created, _ = await owner.create_call()

    status, body, _ = await stranger.request("GET", f"/calls/{created['call_id']}/stream")

    assert (status, body) == (404, {"error": "Not Found", "message": "Call not found"})


async def test_streaming_an_unknown_call_is_404(api: Api) -> None:
    status, body, _ = await api.request("GET", f"/calls/{uuid.uuid4()}/stream")

    assert (status, body) == (404, {"error": "Not Found", "message": "Call not found"})


async def test_streaming_what_cannot_be_a_call_id_is_400(api: Api) -> None:
    status, body, _ = await api.request("GET", "/calls/not%20a%20call/stream")

    assert status == 400
    assert body == {
        "error": "Bad Request",
        "message": "call_id must be a UUID or 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', "
        "':' and '-', got 'not a call'",
    }


@pytest.mark.parametrize(
    ("via", "value"),
    [
        ("header", "abc"),
        ("header", "-1"),
        ("header", "1.5"),
        ("header", "0x2"),
        ("query", "abc"),
        # Unicode digits that int() refuses: str.isdigit() lets them through.
        ("query", "²"),
        ("query", "①"),
        # More digits than int() converts (sys.get_int_max_str_digits()).
        ("header", "9" * 5000),
    ],
    ids=[
        "abc",
        "negative",
        "decimal",
        "hex",
        "query-abc",
        "superscript-2",
        "circled-1",
        "5000-digits",
    ],
)
async def test_a_bad_last_event_id_is_400(api: Api, via, value) -> None:
    _, created, _ = await api.create_call()
    call_id = created["call_id"]
    kwargs: dict[str, Any] = (
        {"headers": {"Last-Event-ID": value}}
        if via == "header"
        else {"params": {"last_event_id": value}}
    )

    status, body, _ = await api.request("GET", f"/calls/{call_id}/stream", **kwargs)

    assert status == 400, body
    assert body["error"] == "Bad Request" and "Last-Event-ID" in body["message"]


# -- 6. a client that goes away is dropped at once --------------------------------------------


async def test_a_closed_sse_client_is_dropped_at_once(slow_api: Api) -> None:
    _, created, _ = await slow_api.create_call()
    before = await open_streams(slow_api)

    async with aiohttp.ClientSession() as client:
        response = await client.get(stream_url(slow_api, created["call_id"]), headers=slow_api.auth)
        first = await SseReader(response).message()
        assert first is not None and first["status"] == "QUEUED"
        assert await open_streams(slow_api) >= max(before + 1, 1)

        response.close()
        settled_s = await gauge_settles(slow_api, lambda n: n == before, DROP_WITHIN_S)

    assert settled_s < DROP_WITHIN_S


@pytest.mark.parametrize("how", ["close frame", "dropped connection"])
async def test_a_closed_websocket_client_is_dropped_at_once(slow_api: Api, how) -> None:
    _, created, _ = await slow_api.create_call()
    before = await open_streams(slow_api)

    client = aiohttp.ClientSession()
    try:
        ws = await client.ws_connect(ws_url(slow_api, created["call_id"]), headers=slow_api.auth)
        first = await ws.receive_json(timeout=READ_TIMEOUT_S)
        assert first["status"] == "QUEUED"
        assert await open_streams(slow_api) >= max(before + 1, 1)

        if how == "close frame":
            await ws.close()
        else:
            await client.close()  # the connection goes away without a close frame
        settled_s = await gauge_settles(slow_api, lambda n: n == before, DROP_WITHIN_S)
    finally:
        await client.close()

    assert settled_s < DROP_WITHIN_S


# -- keep-alives and headers on a quiet stream ----------------------------------------------


async def test_a_quiet_sse_stream_gets_a_ping_every_stream_ping_interval(slow_api: Api) -> None:
    """STREAM_PING_S is 1 on the test platforms: a quiet stream gets a comment within ~1 s."""
    _, created, _ = await slow_api.create_call()

    async with slow_api.http.get(
        stream_url(slow_api, created["call_id"]), headers=slow_api.auth
    ) as response:
        reader = SseReader(response)
        assert (await reader.message())["status"] == "QUEUED"
        started = time.monotonic()
        try:
            ping = await reader.comment(timeout=2.5)
        except TimeoutError:
            pytest.fail("no keep-alive comment within 2.5 s of a stream with STREAM_PING_S=1")

    assert ping == "ping"
    assert time.monotonic() - started < 2.5


async def test_resuming_a_live_call_at_its_latest_seq_answers_at_once(slow_api: Api) -> None:
    """A reconnect that is up to date gets its 200 at once, not at the next transition."""
    _, created, _ = await slow_api.create_call()

    async with asyncio.timeout(2):
        async with slow_api.http.get(
            stream_url(slow_api, created["call_id"]),
            headers=slow_api.auth | {"Last-Event-ID": "1"},
        ) as response:
            assert response.status == 200
            assert response.content_type == "text/event-stream"


# -- 7. many streams at once -----------------------------------------------------------------


async def test_twenty_sse_clients_on_twenty_calls_all_get_whole_lifecycles(api: Api, pg) -> None:
    async def watch_a_new_call() -> tuple[str, list[dict[str, Any]]]:
        status, created, _ = await api.create_call()
        assert status == 201, created
        return created["call_id"], await read_stream(api, created["call_id"], timeout=10)

    watched = await asyncio.gather(*(watch_a_new_call() for _ in range(20)))

    for call_id, messages in watched:
        assert_lifecycle(messages, call_id)
        assert len({m["seq"] for m in messages}) == len(messages)
        assert messages == (await history(pg, call_id))[messages[0]["seq"] - 1 :]
