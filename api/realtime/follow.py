"""Following one call (its current state or what came after Last-Event-ID, then every later
transition in order, none twice, until COMPLETED), or every call of a key."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg

from api.realtime.hub import RESYNC, STATS, Hub, Subscription
from calls.views import message_of
from core.call_ids import CallRef
from core.errors import NotFound
from core.lifecycle import Status
from db import calls as db_calls

# History is read this many rows at a time, so a catch-up never holds a whole history.
HISTORY_PAGE = 200


@contextlib.asynccontextmanager
async def follow_call(
    hub: Hub, pool: asyncpg.Pool, call: CallRef, after_seq: int | None = None
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """Open a follow of a key's call; raises NotFound before anything is sent.

    Subscribes before reading PostgreSQL, so nothing committed in between is missed. The
    messages are ordered by seq; a gap (a lost publish, a slow reader) is filled from history,
    and a message seen before is dropped.
    """
    async with hub.call(call.key_id, call.ref) as sub:
        latest = await db_calls.fetch_latest_event(pool, call)
        if latest is None:
            raise NotFound("Call not found")
        async with contextlib.aclosing(_messages(sub, pool, call, latest, after_seq)) as messages:
            yield messages


async def _messages(
    sub: Subscription,
    pool: asyncpg.Pool,
    call: CallRef,
    latest: asyncpg.Record,
    after_seq: int | None,
) -> AsyncIterator[dict[str, Any]]:
    if after_seq is None:
        yield message_of(latest)
    if after_seq is None or after_seq >= latest["seq"]:
        # A client claiming more than exists resumes from what does exist.
        last, status = latest["seq"], latest["status"]
    else:
        last, status = after_seq, None
        async for message in _history(pool, call, last):
            last, status = message["seq"], message["status"]
            yield message

    while status != Status.COMPLETED:
        message = await sub.get()
        if message is RESYNC or message["seq"] > last + 1:
            async for missed in _history(pool, call, last):
                last, status = missed["seq"], missed["status"]
                yield missed
            continue
        if message["seq"] <= last:
            continue
        last, status = message["seq"], message["status"]
        yield message


async def _history(
    pool: asyncpg.Pool,
    call: CallRef,
    after_seq: int,
    before_seq: int | None = None,
    received_since: datetime | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The call's history after `after_seq` (before `before_seq`, committed since
    `received_since`), a page at a time."""
    while True:
        rows = await db_calls.fetch_events(
            pool, call, after_seq, HISTORY_PAGE, before_seq, received_since
        )
        for row in rows:
            yield message_of(row)
        if len(rows) < HISTORY_PAGE:
            return
        after_seq = rows[-1]["seq"]


# Calls whose last seq a key stream remembers, to drop repeats and fill gaps.
REMEMBERED_CALLS = 10_000


@contextlib.asynccontextmanager
async def follow_key(
    hub: Hub, pool: asyncpg.Pool, key_id: str
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """Follow every call of a key: new calls and transitions as they happen, each call's in
    order and none twice. When messages may have been missed (a slow reader, a lost Redis
    connection) it yields RESYNC, so the client can read the current list again."""
    async with hub.key(key_id) as sub:
        # What is committed from now on is the stream's to deliver; an earlier part of a call's
        # history is not (the stream did not exist yet).
        since = await _window_start(pool)
        async with contextlib.aclosing(_key_messages(sub, pool, key_id, since)) as messages:
            yield messages


async def _window_start(pool: asyncpg.Pool) -> datetime:
    # PostgreSQL's clock, as the history's received_at (the row's insert time) is. An update
    # inserted before this and committed after it is published after it, so it arrives live
    # unless its publish fails too, within the same millisecond.
    return await pool.fetchval("SELECT clock_timestamp()")


async def _key_messages(
    sub: Subscription, pool: asyncpg.Pool, key_id: str, since: datetime
) -> AsyncIterator[dict[str, Any]]:
    last_seq: OrderedDict[str, int] = OrderedDict()
    while True:
        message = await sub.get()
        if message is RESYNC:
            # The client reads the list again; from here on it needs only what comes after.
            last_seq.clear()
            since = await _window_start(pool)
            yield RESYNC
            continue
        if STATS in message:
            yield message  # a queue's figures: no seq, nothing to order
            continue
        call_id, seq = message["call_id"], message["seq"]
        last = last_seq.get(call_id, 0)
        if seq <= last:
            continue
        if seq > last + 1:
            # A gap: an earlier update of this call is late (left in the outbox, or lost with a
            # connection). Fill it from history, but only with what this stream should have seen:
            # of a call it has not seen yet, what was committed since it started (or resynced).
            call = CallRef(key_id, call_id)
            received_since = None if call_id in last_seq else since
            async for missed in _history(pool, call, last, seq, received_since):
                yield missed
        last_seq[call_id] = seq
        last_seq.move_to_end(call_id)
        if len(last_seq) > REMEMBERED_CALLS:
            last_seq.popitem(last=False)
        yield message
