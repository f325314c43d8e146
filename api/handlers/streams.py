"""Live updates: one call over SSE (`/calls/{id}/stream`) or WebSocket (`/ws?call_id=`), and
every call of a key over SSE (`/stream`)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp_sse import sse_response

from api import appkeys
from api.handlers.common import named_call, path_call
from api.realtime.follow import follow_call, follow_key
from api.realtime.hub import RESYNC, STATS, StreamClosed
from core.errors import BadRequest

SEQ_PATTERN = "^[0-9]{1,9}$"
_SEQ = re.compile(SEQ_PATTERN)
# The server reads nothing from a WebSocket client: a larger frame closes it (1009).
WS_MAX_FRAME_BYTES = 1024
WS_CLOSE_WAIT_S = 0.5


def _sse(request: web.Request) -> Any:
    """An SSE answer with the configured pings, unbuffered by proxies (X-Accel-Buffering)."""
    return sse_response(
        request,
        ping_interval=request.app[appkeys.SETTINGS].stream_ping_s,
        headers={"X-Accel-Buffering": "no"},
    )


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if raw is None:
        return None
    if not _SEQ.match(raw):
        raise BadRequest("Last-Event-ID must be the id (seq) of an event this stream sent")
    return int(raw)


async def call_stream(request: web.Request) -> web.StreamResponse:
    """SSE: each message's id is its seq, so a reconnect with Last-Event-ID resumes exactly."""
    call = path_call(request)
    after_seq = _last_event_id(request)
    app = request.app
    follow = follow_call(app[appkeys.HUB], app[appkeys.STORES].pool, call, after_seq)
    async with (
        follow as messages,
        _sse(request) as stream,
    ):
        # Closed by the platform (the key disabled, the process stopping): the stream ends.
        with contextlib.suppress(StreamClosed):
            async for message in messages:
                await stream.send(
                    orjson.dumps(message).decode(), id=str(message["seq"]), event="call"
                )
    return stream


async def call_websocket(request: web.Request) -> web.StreamResponse:
    """WebSocket: the same messages as JSON text frames; closed (1000) after COMPLETED, 4401
    when the key is disabled, 1001 when this process stops."""
    raw_id = request.query.get("call_id")
    if not raw_id:
        raise BadRequest("Missing required query parameter: call_id")
    call = named_call(request, raw_id)
    app = request.app
    follow = follow_call(app[appkeys.HUB], app[appkeys.STORES].pool, call)
    async with follow as messages:
        ws = web.WebSocketResponse(
            heartbeat=app[appkeys.SETTINGS].stream_ping_s,
            max_msg_size=WS_MAX_FRAME_BYTES,
            # How long a close waits for the client's own close frame.
            timeout=WS_CLOSE_WAIT_S,
        )
        await ws.prepare(request)
        # The client says nothing, but reading is how a close is noticed; it ends the send loop.
        reader = asyncio.create_task(_drain(ws))
        sender = asyncio.create_task(_send_all(ws, messages))
        code, reason = WSCloseCode.OK, b""
        try:
            await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
            closed = sender.exception() if sender.done() else None
            if isinstance(closed, StreamClosed):
                code, reason = closed.code, closed.reason.encode()
        finally:
            for task in (reader, sender):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, StreamClosed):
                    await task
            await ws.close(code=code, message=reason)
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    async for message in ws:
        if message.type == WSMsgType.ERROR:
            break


async def _send_all(ws: web.WebSocketResponse, messages: AsyncIterator[dict[str, Any]]) -> None:
    async for message in messages:
        await ws.send_str(orjson.dumps(message).decode())


async def key_stream(request: web.Request) -> web.StreamResponse:
    """SSE of every call of the caller's key: `ready` once subscribed, then a `call` message per
    new call and transition, a `stats` message with a queue's figures at most once a second
    while they change, and `resync` when the client should read `GET /calls` again."""
    app = request.app
    follow = follow_key(app[appkeys.HUB], app[appkeys.STORES].pool, appkeys.api_key(request).id)
    async with (
        follow as messages,
        _sse(request) as stream,
    ):
        await stream.send("{}", event="ready")
        with contextlib.suppress(StreamClosed):  # closed by the platform: the stream ends
            async for message in messages:
                if message is RESYNC:
                    await stream.send('{"reason": "updates may have been missed"}', event="resync")
                elif STATS in message:
                    await stream.send(orjson.dumps(message[STATS]).decode(), event="stats")
                else:
                    await stream.send(orjson.dumps(message).decode(), event="call")
    return stream
