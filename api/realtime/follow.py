"""Following one call: its current state (or what came after Last-Event-ID), then every later
transition in order, none twice, until COMPLETED. SSE and WebSocket both read this."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from api.realtime.hub import RESYNC, Hub, Subscription
from calls.views import event_message
from core.errors import NotFound
from core.lifecycle import Status
from db import calls as db_calls


@contextlib.asynccontextmanager
async def follow_call(
    hub: Hub, pool: asyncpg.Pool, call_id: str, key_id: str, after_seq: int | None = None
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """Open a follow of a call owned by `key_id`; raises NotFound before anything is sent.

    Subscribes before reading PostgreSQL, so nothing committed in between is missed. The
    messages are ordered by seq; a gap (a lost publish, a slow reader) is filled from history,
    and a message seen before is dropped.
    """
    with hub.call(call_id) as sub:
        latest = await db_calls.fetch_latest_event(pool, call_id, key_id)
        if latest is None:
            raise NotFound("Call not found")
        async with contextlib.aclosing(_messages(sub, pool, latest, after_seq)) as messages:
            yield messages


async def _messages(
    sub: Subscription, pool: asyncpg.Pool, latest: asyncpg.Record, after_seq: int | None
) -> AsyncIterator[dict[str, Any]]:
    call_id = latest["call_id"]
    if after_seq is None:
        yield event_message(latest)
    if after_seq is None or after_seq >= latest["seq"]:
        # A client claiming more than exists resumes from what does exist.
        last, status = latest["seq"], latest["to_status"]
    else:
        last, status = after_seq, None
        async for message in _history(pool, call_id, last):
            last, status = message["seq"], message["status"]
            yield message

    while status != Status.COMPLETED:
        message = await sub.get()
        if message is RESYNC or message["seq"] > last + 1:
            async for missed in _history(pool, call_id, last):
                last, status = missed["seq"], missed["status"]
                yield missed
            continue
        if message["seq"] <= last:
            continue
        last, status = message["seq"], message["status"]
        yield message


async def _history(
    pool: asyncpg.Pool, call_id: str, after_seq: int
) -> AsyncIterator[dict[str, Any]]:
    for row in await db_calls.fetch_events(pool, call_id, after_seq):
        yield event_message(row)
