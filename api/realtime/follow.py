"""Following one call: its current state (or what came after Last-Event-ID), then every later
transition in order, none twice, until COMPLETED. SSE and WebSocket both read this."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from api.realtime.hub import RESYNC, Hub
from calls.views import event_message
from core.errors import NotFound
from core.lifecycle import Status
from db import calls as db_calls


async def follow_call(
    hub: Hub, pool: asyncpg.Pool, call_id: str, key_id: str, after_seq: int | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield realtime messages of a call owned by `key_id`.

    Subscribes before reading PostgreSQL, so nothing committed in between is missed; messages
    are ordered by seq, a gap (lost publish, slow reader) is filled from history, and a message
    seen before is dropped.
    """
    with hub.call(call_id) as sub:
        latest = await db_calls.fetch_latest_event(pool, call_id, key_id)
        if latest is None:
            raise NotFound("Call not found")
        if after_seq is None or after_seq >= latest["seq"]:
            if after_seq is None:
                yield event_message(latest)
            last = latest["seq"]
            status = latest["to_status"]
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
