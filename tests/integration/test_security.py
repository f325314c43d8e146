"""Security: secrets never at rest nor in logs, every call isolated by key on every route and
stream, a per-key cap on open streams, and rq-dashboard on loopback behind a login."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis

from db.keys import hash_secret
from tests.integration.conftest import Api
from tests.integration.platform import ROOT, Platform, free_port
from tests.integration.test_key_stream import key_stream
from tests.integration.test_operations import procfile
from tests.integration.test_realtime import (
    UPGRADE,
    SseReader,
    open_streams,
    refused_upgrade,
    stream_url,
    ws_url,
)

# Any single wait longer than this is a hang.
READ_TIMEOUT_S = 5.0
NOT_FOUND = {"error": "Not Found", "message": "Call not found"}
SECRET = re.compile(r"mc_[A-Za-z0-9_-]{20,}")


# -- keys at rest --------------------------------------------------------------------------------


async def cli_key(platform: Platform, *args: str) -> str:
    """A key made the operator's way (`python -m db keys create`); returns its secret."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "db", "keys", "create", f"sec-{uuid.uuid4().hex[:10]}", *args],
        cwd=ROOT,
        env=platform.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = SECRET.findall(done.stdout)
    assert len(found) == 1, done.stdout
    return found[0]


async def every_row_as_text(dsn: str) -> dict[str, str]:
    """Each table of the database, every row rendered as text (bytea as hex)."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        return {
            row["tablename"]: "\n".join(
                r[0] for r in await conn.fetch(f'SELECT t::text FROM "{row["tablename"]}" t')
            )
            for row in tables
        }
    finally:
        await conn.close()


async def everything_in_redis(redis_url: str) -> bytes:
    """Every key and value in Redis, of every type, concatenated."""
    redis = Redis.from_url(redis_url)
    parts: list[bytes] = []
    try:
        async for key in redis.scan_iter(count=1000):
            parts.append(key)
            kind = (await redis.type(key)).decode()
            if kind == "string":
                parts.append(await redis.get(key) or b"")
            elif kind == "hash":
                for field, value in (await redis.hgetall(key)).items():
                    parts += [field, value]
            elif kind == "list":
                parts += await redis.lrange(key, 0, -1)
            elif kind == "set":
                parts += list(await redis.smembers(key))
            elif kind == "zset":
                parts += [member for member, _ in await redis.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for _, fields in await redis.xrange(key):
                    for field, value in fields.items():
                        parts += [field, value]
    finally:
        await redis.aclose()
    return b"\n".join(parts)


async def test_keys_are_kept_as_sha256_and_no_secret_is_stored_anywhere(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    """Only the SHA-256 of a key is kept: after the key has created calls, posted events and
    streamed, no table of PostgreSQL and no key or value of Redis holds the secret."""
    secret = await cli_key(platform, "--max-cps", "50")
    api = Api(http, platform, secret)
    _, created, _ = await api.create_call()
    status, event, _ = await api.request(
        "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
    )
    assert status == 201, event
    async with http.get(
        api.url(f"/calls/{event['call_id']}/stream"), params={"access_token": secret}
    ) as response:
        assert (await SseReader(response).message())["status"] == "QUEUED"
    await api.wait_recorded(created["call_id"])

    conn = await asyncpg.connect(platform.dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE key_hash = $1", hash_secret(secret))
        seeded = await conn.fetch(
            "SELECT key_hash FROM api_keys WHERE key_hash = ANY($1::bytea[])",
            [hash_secret(k) for k in ("test-api-key-1", "test-api-key-2", "demo-key")],
        )
    finally:
        await conn.close()
    assert row is not None and row["key_hash"] == hash_secret(secret)
    assert len(row["key_hash"]) == 32  # a SHA-256 digest, not the secret
    assert len(seeded) == 3
    # The new key's secret (random, so only the platform could have put it anywhere) is in no
    # table and nowhere in Redis; the seeded keys' secrets are not among the keys either.
    for table, text in (await every_row_as_text(platform.dsn)).items():
        assert secret not in text, f"the secret is stored in {table}"
        if table == "api_keys":
            for seeded_secret in ("test-api-key-1", "test-api-key-2", "demo-key"):
                assert seeded_secret not in text
    assert secret.encode() not in await everything_in_redis(platform.redis_url)


# -- isolation by key --------------------------------------------------------------------------


def stranger_ways(stranger: Api, *, query_token: bool) -> list[tuple[dict[str, str], dict]]:
    """Every way the stranger may present its key on a route: (headers, params)."""
    ways = [({"Authorization": f"Bearer {stranger.key}"}, {}), ({"X-API-Key": stranger.key}, {})]
    if query_token:
        ways.append(({}, {"access_token": stranger.key}))
    return ways


async def answer(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with asyncio.timeout(READ_TIMEOUT_S), http.request(method, url, **kwargs) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, response.content_type


@pytest.fixture
async def owner_and_stranger(make_api) -> tuple[Api, Api, dict[str, str]]:
    """Two keys; the owner has a completed simulated call (with its recording) and an open
    ingested one."""
    owner = await make_api(max_concurrent=100, max_cps=100)
    stranger = await make_api(max_concurrent=100, max_cps=100)
    _, simulated, _ = await owner.create_call()
    await owner.wait_recorded(simulated["call_id"])
    status, ingested, _ = await owner.request(
        "POST",
        "/events",
        json={"event": "call_initiated", "type": "voice", "queue_id": f"q-{uuid.uuid4().hex}"},
    )
    assert status == 201, ingested
    return owner, stranger, {"simulated": simulated["call_id"], "ingested": ingested["call_id"]}


READ_ROUTES = [
    "/calls/{id}",
    "/calls/{id}/events",
    "/api/calls/{id}/events",
    "/calls/{id}/recording",
    "/calls/{id}/stream",
]


@pytest.mark.parametrize("route", READ_ROUTES)
@pytest.mark.parametrize("kind", ["simulated", "ingested"])
async def test_another_keys_call_is_404_on_every_read_route_however_the_key_comes(
    owner_and_stranger, route: str, kind: str
) -> None:
    owner, stranger, calls = owner_and_stranger
    call_id = calls[kind]
    url = owner.url(route.format(id=call_id))
    streams = route.endswith("/stream")

    # The owner may read it (a stream answers 200 at once; the recording of a call with none
    # is a 404 for the owner too).
    status, _ = await answer(owner.http, "GET", url, headers=owner.auth)
    assert status == (404 if (kind, route) == ("ingested", READ_ROUTES[3]) else 200)

    # To the stranger it is a 404, word for word what a call that does not exist gets.
    unknown = await answer(
        stranger.http, "GET", owner.url(route.format(id=uuid.uuid4())), headers=stranger.auth
    )
    assert unknown[0] == 404
    for headers, params in stranger_ways(stranger, query_token=streams):
        found = await answer(stranger.http, "GET", url, headers=headers, params=params)
        assert found == unknown, (headers, params)


@pytest.mark.parametrize("kind", ["simulated", "ingested"])
async def test_another_keys_call_is_404_over_websocket_however_the_key_comes(
    owner_and_stranger, kind: str
) -> None:
    owner, stranger, calls = owner_and_stranger
    url = ws_url(stranger, calls[kind])
    async with owner.http.ws_connect(url, headers=owner.auth) as ws:
        first = await ws.receive_json(timeout=READ_TIMEOUT_S)
        assert first["call_id"] == calls[kind]

    for headers, params in stranger_ways(stranger, query_token=True):
        status, body = await refused_upgrade(
            stranger.http, ws_url(stranger, calls[kind], **params), headers
        )
        assert (status, body) == (404, NOT_FOUND), (headers, params)


@pytest.mark.parametrize(
    "event",
    [
        {"event": "call_routed", "agent_id": "intruder"},
        {"event": "call_answered"},
        {"event": "call_unanswered"},
        {"event": "call_hold"},
        {"event": "call_resumed"},
        {"event": "call_ended", "end_reason": "canceled"},
    ],
    ids=lambda e: e["event"],
)
@pytest.mark.parametrize("path", ["/events", "/api/events"])
async def test_another_key_cannot_move_a_call(owner_and_stranger, event, path) -> None:
    owner, stranger, calls = owner_and_stranger
    call_id = calls["ingested"]
    _, before, _ = await owner.request("GET", f"/calls/{call_id}/events")

    status, body, _ = await stranger.request(
        "POST", path, json=event | {"call_id": call_id, "event_id": f"e-{uuid.uuid4().hex}"}
    )

    assert (status, body) == (404, NOT_FOUND)
    _, after, _ = await owner.request("GET", f"/calls/{call_id}/events")
    assert after == before


@pytest.mark.parametrize("path", ["/calls", "/api/calls"])
async def test_another_keys_calls_never_show_in_a_list(owner_and_stranger, path) -> None:
    owner, stranger, calls = owner_and_stranger
    _, ingested, _ = await owner.get_call(calls["ingested"])
    for query in ("", "?limit=100", f"?queue_id={ingested['queue_id']}", "?status=COMPLETED"):
        status, page, _ = await stranger.request("GET", path + query)
        assert status == 200
        assert not {c["call_id"] for c in page["data"]} & set(calls.values()), query
    status, page, _ = await stranger.request("GET", f"{path}?queue_id={ingested['queue_id']}")
    assert (page["total"], page["data"]) == (0, [])


async def test_an_idempotency_key_replays_only_for_the_key_that_used_it(make_api) -> None:
    owner, stranger = await make_api(), await make_api()
    body = {"from": "+14155550100", "to": "+14155550199", "metadata": {"who": "owner"}}
    shared = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    _, first, _ = await owner.request("POST", "/calls", json=body, headers=shared)

    status, theirs, headers = await stranger.request("POST", "/calls", json=body, headers=shared)

    assert status == 201
    assert theirs["call_id"] != first["call_id"]
    assert "Idempotent-Replayed" not in headers
    assert (await stranger.get_call(first["call_id"]))[0] == 404


async def test_the_key_stream_carries_nothing_of_another_keys_calls(
    owner_and_stranger,
) -> None:
    owner, stranger, calls = owner_and_stranger
    owners = set(calls.values())
    for headers, params in stranger_ways(stranger, query_token=True):
        async with key_stream(stranger, headers=headers, params=params) as stream:
            _, theirs, _ = await owner.create_call()
            owners.add(theirs["call_id"])
            status, _, _ = await owner.request(
                "POST",
                "/events",
                json={"event": "call_routed", "call_id": calls["ingested"], "agent_id": "a"},
            )
            assert status in (201, 422)  # routed the first time round, refused after
            await owner.wait_for(theirs["call_id"], lambda c: c["status"] == "COMPLETED")
            # Then one of the stranger's own: the stream is live, and nothing of the owner's
            # came before it (the stranger's calls of earlier rounds may).
            _, own, _ = await stranger.create_call()
            while (message := await stream.message())["call_id"] != own["call_id"]:
                assert message["call_id"] not in owners, message


# -- a cap on open streams per key ---------------------------------------------------------------


STREAM_CAP = 3
TOO_MANY = {
    "error": "Rate limit exceeded",
    "message": f"Too many open streams for this key ({STREAM_CAP})",
}


@pytest.fixture(scope="module")
async def capped(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    """A platform whose API process lets each key hold STREAM_CAP streams open."""
    running = Platform(
        tmp_path_factory.mktemp("capped"), settings={"MAX_STREAMS_PER_KEY": str(STREAM_CAP)}
    )
    try:
        yield await running.start()
    finally:
        await running.stop()


async def ingested_call(api: Api) -> str:
    status, event, _ = await api.request(
        "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
    )
    assert status == 201, event
    return event["call_id"]


@contextlib.asynccontextmanager
async def open_sse(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], params: dict | None = None
) -> AsyncIterator[aiohttp.ClientResponse]:
    """An SSE stream, open past its first event."""
    async with asyncio.timeout(READ_TIMEOUT_S):
        response = await http.get(url, headers=headers, params=params)
    try:
        assert response.status == 200, await response.text()
        assert await SseReader(response).next() is not None
        yield response
    finally:
        response.close()


async def refused_stream(
    api: Api, kind: str, call_id: str, *, params: dict | None = None
) -> tuple[int, Any, Any]:
    """Try one more stream of `kind`; (status, JSON body, headers) of a refusal."""
    if kind == "websocket":
        async with api.http.get(
            ws_url(api, call_id, **(params or {})), headers=UPGRADE | api.auth
        ) as response:
            assert response.content_type == "application/json", await response.text()
            return response.status, await response.json(), response.headers
    url = api.url("/stream") if kind == "key" else stream_url(api, call_id)
    async with (
        asyncio.timeout(READ_TIMEOUT_S),
        api.http.get(url, headers=api.auth, params=params) as response,
    ):
        assert response.content_type == "application/json", response.content_type
        return response.status, await response.json(), response.headers


async def wait_streams(api: Api, count: int, timeout: float = READ_TIMEOUT_S) -> None:
    """Until the API process holds `count` open streams (it notices a close asynchronously)."""
    deadline = time.monotonic() + timeout
    while (held := await open_streams(api)) != count:
        assert time.monotonic() < deadline, f"{held} streams open, expected {count}"
        await asyncio.sleep(0.05)


async def test_a_keys_fourth_stream_is_429_of_every_kind_and_other_keys_are_unaffected(
    capped: Platform, http: aiohttp.ClientSession
) -> None:
    owner = Api(http, capped, await capped.new_key())
    other = Api(http, capped, await capped.new_key())
    first, second = await ingested_call(owner), await ingested_call(owner)
    theirs = await ingested_call(other)

    async with (
        open_sse(http, owner.url("/stream"), owner.auth),
        open_sse(http, stream_url(owner, first), {}, {"access_token": owner.key}),
        http.ws_connect(ws_url(owner, second), headers=owner.auth) as ws,
    ):
        assert (await ws.receive_json(timeout=READ_TIMEOUT_S))["call_id"] == second

        for kind, params in (
            ("key", None),
            ("call", None),
            ("call", {"access_token": owner.key}),
            ("websocket", None),
        ):
            status, body, headers = await refused_stream(owner, kind, first, params=params)
            assert (status, body) == (429, TOO_MANY), (kind, params)
            assert int(headers["Retry-After"]) >= 1
        # Only streams are capped: the key's other requests go on.
        assert (await owner.request("GET", "/calls"))[0] == 200

        # Another key opens as many as the cap allows, of every kind.
        async with (
            open_sse(http, other.url("/stream"), other.auth),
            open_sse(http, stream_url(other, theirs), other.auth),
            http.ws_connect(ws_url(other, theirs), headers=other.auth) as their_ws,
        ):
            assert (await their_ws.receive_json(timeout=READ_TIMEOUT_S))["call_id"] == theirs


async def test_closing_a_stream_frees_its_place_and_refused_ones_take_none(
    capped: Platform, http: aiohttp.ClientSession
) -> None:
    api = Api(http, capped, await capped.new_key())
    call_id = await ingested_call(api)
    await wait_streams(api, 0)

    # Refused streams take no place: unknown calls (SSE and WebSocket), bad Last-Event-ID.
    for _ in range(5):
        assert (await refused_stream(api, "call", str(uuid.uuid4())))[0] == 404
        assert (await refused_stream(api, "websocket", str(uuid.uuid4())))[0] == 404
        status, _, _ = await refused_stream(api, "call", call_id, params={"last_event_id": "x"})
        assert status == 400
    await wait_streams(api, 0)

    async with contextlib.AsyncExitStack() as held:
        opened = [
            await held.enter_async_context(open_sse(http, api.url("/stream"), api.auth))
            for _ in range(STREAM_CAP)
        ]
        assert (await refused_stream(api, "key", call_id))[:2] == (429, TOO_MANY)

        # One stream goes; its place is free again (once the server has noticed), for any kind.
        opened[0].close()
        await wait_streams(api, STREAM_CAP - 1)
        async with open_sse(http, stream_url(api, call_id), api.auth):
            assert (await refused_stream(api, "websocket", call_id))[:2] == (429, TOO_MANY)

    await wait_streams(api, 0)


async def test_the_cap_counts_a_keys_streams_on_every_api_process_and_a_dead_ones_go_back(
    platform_factory, http: aiohttp.ClientSession
) -> None:
    own = await platform_factory(
        {"MAX_STREAMS_PER_KEY": str(STREAM_CAP), "PROCESS_DEAD_AFTER_MS": "1000"}
    )
    port = free_port()
    own.add("api2", "api", {"PORT": str(port)})
    key = await own.new_key()
    first_api = Api(http, own, key)
    second_api = Api(http, own, key, base_url=f"http://127.0.0.1:{port}")
    call_id = await ingested_call(first_api)
    async with asyncio.timeout(20):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                if (await second_api.request("GET", "/calls"))[0] == 200:
                    break
            await asyncio.sleep(0.1)

    async with contextlib.AsyncExitStack() as held:
        for _ in range(2):
            await held.enter_async_context(open_sse(http, first_api.url("/stream"), first_api.auth))
        await held.enter_async_context(open_sse(http, second_api.url("/stream"), second_api.auth))

        # Three streams over two processes: the key is at its cap on both.
        for api in (first_api, second_api):
            assert (await refused_stream(api, "key", call_id))[:2] == (429, TOO_MANY)

        # The first process dies with its two streams open: they are given back once its count
        # lapses (PROCESS_DEAD_AFTER_MS, 1 s here), and the second process opens two more.
        own.processes["api"].kill()
        killed_at = time.monotonic()
        async with asyncio.timeout(5):
            while True:
                async with http.get(second_api.url("/stream"), headers=second_api.auth) as probe:
                    if probe.status == 200:
                        break  # the probe's stream closes here, and is given back
                await asyncio.sleep(0.1)
        assert time.monotonic() - killed_at >= 0.9
        await wait_streams(second_api, 1)
        for _ in range(2):
            await held.enter_async_context(
                open_sse(http, second_api.url("/stream"), second_api.auth)
            )
        assert (await refused_stream(second_api, "key", call_id))[:2] == (429, TOO_MANY)


# -- no secret in any log --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def verbose(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    """A platform logging everything, its libraries' debug lines included."""
    running = Platform(tmp_path_factory.mktemp("verbose"), settings={"LOG_LEVEL": "DEBUG"})
    try:
        yield await running.start()
    finally:
        await running.stop()


async def raw_request(platform: Platform, request: bytes) -> bytes:
    """Send bytes no HTTP client would, and read the answer (the server closes after it)."""
    port = int(platform.base_url.rsplit(":", 1)[1])
    async with asyncio.timeout(READ_TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await writer.drain()
            return await reader.read(65536)
        finally:
            writer.close()


def every_log(platform: Platform) -> dict[str, str]:
    return {
        name: process.log_path.read_text(errors="replace")
        for name, process in platform.processes.items()
        if process.log_path.exists()
    }


async def use_every_way_of_presenting(api: Api, secret: str) -> None:
    """Requests on every route and stream with the key in each place it may (and may not) go."""
    bearer, x_api_key = {"Authorization": f"Bearer {secret}"}, {"X-API-Key": secret}
    token = {"access_token": secret}
    http = api.http
    _, created, _ = await api.request("POST", "/calls", json={"from": "+123456", "to": "+654321"})
    call_id = created["call_id"]
    ingested = await ingested_call(api)
    for path in ("/calls", "/api/calls", "/metrics", f"/calls/{call_id}", "/nope"):
        for headers, params in ((bearer, {}), (x_api_key, {}), ({}, token)):
            await answer(http, "GET", api.url(path), headers=headers, params=params)
    for path in (f"/calls/{call_id}/events", f"/api/calls/{call_id}/events"):
        await answer(http, "GET", api.url(path), headers=x_api_key, params=token)
    await answer(
        http,
        "POST",
        api.url("/api/events"),
        headers=x_api_key,
        params=token,
        json={"event": "call_routed", "call_id": ingested, "agent_id": "a"},
    )
    # Streams: per call (SSE and WebSocket) and the key's, the key in each place.
    for headers, params in ((bearer, {}), (x_api_key, {}), ({}, token)):
        async with open_sse(http, stream_url(api, ingested), headers, params):
            pass
        async with open_sse(http, api.url("/stream"), headers, params):
            pass
        async with http.ws_connect(ws_url(api, ingested, **params), headers=headers) as ws:
            await ws.receive_json(timeout=READ_TIMEOUT_S)
    await answer(http, "GET", stream_url(api, ingested), headers=bearer | {"Last-Event-ID": "x"})
    # Wrong keys that carry the secret, in every place.
    wrong = "wrong-" + secret
    for headers, params in (
        ({"Authorization": f"Bearer {wrong}"}, {}),
        ({"X-API-Key": wrong}, {}),
        ({}, {"access_token": wrong}),
    ):
        await answer(http, "GET", stream_url(api, ingested), headers=headers, params=params)
        await answer(http, "GET", api.url("/stream"), headers=headers, params=params)
        await refused_upgrade(http, ws_url(api, ingested, **params), headers)
    await api.wait_recorded(call_id)


async def test_no_key_reaches_any_log_on_any_route_or_stream(
    verbose: Platform, http: aiohttp.ClientSession
) -> None:
    """Extends test_observability's check to every route, SSE per call, the key stream and
    WebSocket, and to wrong keys, with every process logging at DEBUG."""
    secret = await verbose.new_key(max_cps=100)
    api = Api(http, verbose, secret)

    await use_every_way_of_presenting(api, secret)
    await asyncio.sleep(0.5)  # the last lines are written

    logs = every_log(verbose)
    assert "api" in logs and any(name.startswith("worker") for name in logs)
    for name, text in logs.items():
        assert secret not in text, f"the key is in the {name} log"


async def test_a_key_in_a_request_the_http_parser_refuses_is_not_logged(platform: Platform) -> None:
    """aiohttp refuses a malformed header or an overlong line before the app sees it, and logs
    the refusal at ERROR (so at every LOG_LEVEL) with the offending line quoted: a key in that
    line lands in the log. The shared platform logs at WARNING only."""
    secret = await platform.new_key()
    key = secret.encode()
    for request in (
        # A control character after the key.
        b"GET /calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key + b"\x01\r\n\r\n",
        # A header line over the parser's limit (32 KiB here) that starts with the key.
        b"GET /calls HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key + b"a" * 40_000 + b"\r\n\r\n",
        # A stream URL with its access_token, over the 32 KiB the request line may take.
        b"GET /stream?access_token=" + key + b"&pad=" + b"p" * 40_000 + b" HTTP/1.1\r\n\r\n",
    ):
        answer_line = (await raw_request(platform, request)).split(b"\r\n", 1)[0]
        assert b" 400 " in answer_line or b" 414 " in answer_line, answer_line
    await asyncio.sleep(0.3)

    leaked = [name for name, text in every_log(platform).items() if secret in text]
    assert not leaked, f"the key is in the {leaked} log"


# -- rq-dashboard --------------------------------------------------------------------------------


def non_loopback_addresses() -> list[tuple[int, str]]:
    """This machine's own addresses other than loopback: (family, address)."""
    found: list[tuple[int, str]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):
                packed = fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
                address = socket.inet_ntoa(packed[20:24])
                if not address.startswith("127."):
                    found.append((socket.AF_INET, address))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw, _, _, scope, *_ = line.split()
            if scope == "00":  # global scope only (link-local needs an interface)
                address = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw))
                found.append((socket.AF_INET6, address))
    return found


def listeners(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].split(":")
                if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                    found.append(address)
    return found


@contextlib.asynccontextmanager
async def dashboard(platform: Platform, env: dict[str, str]) -> AsyncIterator[str]:
    """rq-dashboard started from the Procfile's line on a free port; yields its base URL once it
    answers."""
    port = free_port()
    command = procfile()["dashboard"].replace("9181", str(port))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RQ_DASHBOARD_")} | {
        "REDIS_URL": platform.redis_url,
        "PATH": f"{ROOT}/.venv/bin:{os.environ['PATH']}",
    }
    process = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        ["bash", "-c", f"exec {command}"],
        cwd=ROOT,
        env=full_env | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(base + "/"):
                        break
                assert process.poll() is None, "rq-dashboard exited"
                assert time.monotonic() < deadline, "rq-dashboard did not answer"
                await asyncio.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


LOGIN = {"RQ_DASHBOARD_USERNAME": "ops", "RQ_DASHBOARD_PASSWORD": "s3cret-dashboard"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


async def test_rq_dashboard_asks_for_its_login_and_listens_on_loopback_only(
    platform: Platform,
) -> None:
    async with dashboard(platform, LOGIN) as base, aiohttp.ClientSession() as http:
        port = int(base.rsplit(":", 1)[1])
        for path in ("/", "/0/data/queues.json"):
            for login in (
                {},
                basic("ops", "wrong"),
                basic("admin", "s3cret-dashboard"),
                basic("ops", ""),
            ):
                async with http.get(base + path, headers=login) as response:
                    assert response.status == 401, (path, login)
                    assert response.headers["WWW-Authenticate"].startswith("Basic")
            async with http.get(base + path, headers=basic("ops", "s3cret-dashboard")) as response:
                assert response.status == 200, path

        # Bound to 127.0.0.1 only, so unreachable on every other address of this machine.
        assert listeners(port) == ["0100007F"]
        for family, address in non_loopback_addresses():
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                with pytest.raises(OSError):
                    sock.connect((address, port))


@pytest.mark.parametrize(
    "env",
    [{}, {"RQ_DASHBOARD_USERNAME": "admin", "RQ_DASHBOARD_PASSWORD": ""}],
    ids=["login-unset", "password-empty"],
)
async def test_rq_dashboard_from_the_procfile_never_serves_without_a_password(
    platform: Platform, env: dict[str, str]
) -> None:
    """The Procfile passes `--username ""` when RQ_DASHBOARD_USERNAME is unset, and rq-dashboard
    then adds no login at all; with a user but an empty password, that user gets in with no
    password. Run by honcho without scripts/run (README: "Running it elsewhere"), the dashboard
    must refuse to start or still ask for a login."""
    try:
        async with dashboard(platform, env) as base, aiohttp.ClientSession() as http:
            for login in ({}, basic("admin", "")):
                async with http.get(base + "/0/data/queues.json", headers=login) as response:
                    assert response.status == 401, f"served the queues to {login or 'anyone'}"
    except AssertionError as refused:
        if "rq-dashboard exited" not in str(refused):
            raise


# -- what browsers are told ----------------------------------------------------------------------


async def test_every_answer_forbids_type_sniffing(api: Api) -> None:
    """JSON, errors, pages, static files, streams and the WebSocket handshake alike."""
    _, created, _ = await api.create_call()
    call_id = created["call_id"]
    targets = [
        ("GET", "/health", {}),
        ("GET", "/calls", api.auth),
        ("GET", f"/calls/{call_id}", api.auth),
        ("GET", "/calls", {}),  # 401
        ("GET", "/nowhere", {}),  # 404
        ("DELETE", "/health", {}),  # 405
        ("GET", "/dashboard", {}),
        ("GET", "/docs", {}),
        ("GET", "/static/dashboard.js", {}),
        ("GET", "/static/swagger-ui/swagger-ui.css", {}),
        ("GET", "/static/unknown.js", {}),
        ("GET", "/metrics?format=prometheus", api.auth),
    ]
    for method, path, headers in targets:
        async with api.http.request(method, api.url(path), headers=headers) as response:
            assert response.headers.get("X-Content-Type-Options") == "nosniff", (path, response)
    async with api.http.get(api.url(f"/calls/{call_id}/stream"), headers=api.auth) as response:
        assert response.headers.get("X-Content-Type-Options") == "nosniff"
    async with api.http.get(ws_url(api, call_id), headers=UPGRADE | api.auth) as response:
        assert response.status == 101
        assert response.headers.get("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize("path", ["/dashboard", "/docs"])
async def test_pages_run_only_their_own_scripts(api: Api, path: str) -> None:
    async with api.http.get(api.url(path)) as response:
        assert response.status == 200
        policy = {
            directive.split()[0]: directive.split()[1:]
            for directive in response.headers["Content-Security-Policy"].split(";")
        }
        page = await response.text()
    assert policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "<script>" not in page and " on" not in page.replace("\n", " ").split("<body")[0]
    for src in re.findall(r'<script src="([^"]+)"', page):
        async with api.http.get(api.url(src)) as script:
            assert script.status == 200
            assert script.content_type == "text/javascript"


@pytest.mark.parametrize(
    "name",
    [
        "dashboard.html",
        "..%2Fhandlers%2Fpages.py",
        "%2E%2E%2Fapp.py",
        "missing.js",
        "swagger-ui/LICENSE",
        "swagger-ui/README.md",
        "swagger-ui/../dashboard.html",
        "swagger-ui%2F..%2F..%2Fhandlers%2Fpages.py",
    ],
)
async def test_only_the_pages_own_files_are_served_from_static(api: Api, name: str) -> None:
    async with api.http.get(api.url("/static/" + name)) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "Not Found"


async def test_a_websocket_frame_from_a_client_is_capped_small(api: Api) -> None:
    """The server reads nothing a client sends on a call's WebSocket: a frame over 1 KiB closes
    it (1009) instead of being buffered."""
    _, created, _ = await api.request(  # an ingested call: it stays open until told otherwise
        "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
    )
    async with api.http.ws_connect(ws_url(api, created["call_id"]), headers=api.auth) as ws:
        await ws.receive(timeout=READ_TIMEOUT_S)  # the call's current state
        await ws.send_str("x" * 64 * 1024)
        while (message := await ws.receive(timeout=READ_TIMEOUT_S)).type == aiohttp.WSMsgType.TEXT:
            pass
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009
