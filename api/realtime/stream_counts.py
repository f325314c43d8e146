"""A key's open streams counted across every API process, in Redis, so MAX_STREAMS_PER_KEY caps
the key's streams on the whole platform, not on each process.

Each API process keeps its own count of each key's streams in Redis (core/keys.py
`stream_counts`) and renews it every third of PROCESS_DEAD_AFTER_MS while it holds any; the
count of a process that stops renewing it (killed, its host gone) lapses after that and is
dropped by the key's next stream (stream_take.lua). A stream is counted before it opens, in one
script that checks the cap; closing one is taken off the count right after (stream_sync.lua),
and again at the next renewal if Redis could not be reached then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from pathlib import Path

from redis.exceptions import RedisError

from core import keys
from core.errors import RateLimited
from core.redis_mux import Client

log = logging.getLogger(__name__)

_TAKE = (Path(__file__).parent / "stream_take.lua").read_text()
_SYNC = (Path(__file__).parent / "stream_sync.lua").read_text()
# How long a stop waits for a renewal or a give-back in flight.
STOP_WAIT_S = 0.5


class StreamCounts:
    def __init__(self, redis: Client, process: str, cap: int, lifetime_ms: int) -> None:
        """`process`: this API process's name (core/instance.py); `cap`: MAX_STREAMS_PER_KEY;
        `lifetime_ms`: how long a count holds without a renewal (PROCESS_DEAD_AFTER_MS)."""
        self._redis = redis
        self.process = process
        self.cap = cap
        self.lifetime_ms = lifetime_ms
        self._take = redis.register_script(_TAKE)
        self._sync = redis.register_script(_SYNC)
        # This process's streams by key, and those closed but not yet taken off its count.
        self._open: Counter[str] = Counter()
        self._closed: Counter[str] = Counter()
        self._flushing: asyncio.Task[None] | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        """Renew this process's counts while it runs. The scripts are loaded first, so a take
        and a sync sent one after the other are never reordered by a NOSCRIPT reload."""
        with contextlib.suppress(RedisError):
            for script in (_TAKE, _SYNC):
                await self._redis.script_load(script)
        self._renewing = asyncio.create_task(self._renew(), name="stream-counts")

    async def take(self, key_id: str) -> None:
        """Count one more stream of the key; raises RateLimited at the key's cap (across every
        API process). A client gone while the script runs has its stream given back."""
        taking = asyncio.ensure_future(
            self._take(
                keys=[keys.stream_counts(key_id), keys.stream_holders(key_id)],
                args=[self.process, self.cap, self.lifetime_ms],
            )
        )
        try:
            granted, _ = await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(lambda done: self._abandoned(key_id, done))
            raise
        if not granted:
            raise RateLimited(
                f"Too many open streams for this key ({self.cap})",
                limit=self.cap,
                remaining=0,
                reset_s=1,
            )
        self._open[key_id] += 1

    def give_back(self, key_id: str) -> None:
        """A stream of the key closed: take it off this process's count now (in the
        background; the next renewal does if Redis cannot be reached now)."""
        self._open[key_id] -= 1
        self._closed[key_id] += 1
        self._flush_soon()

    async def aclose(self) -> None:
        """Stop renewing, and drop this process's counts: its streams are closed (a stop)."""
        # Waited for a moment only: a client library may swallow the cancellation of a command
        # in flight, and a stop must not hang on it.
        self._stopped = True
        running = {task for task in (self._renewing, self._flushing) if task is not None}
        if self._renewing is not None:
            self._renewing.cancel()
        if running:
            await asyncio.wait(running, timeout=STOP_WAIT_S)
        held = set(self._open) | set(self._closed)
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_id in held:
                    pipe.hdel(keys.stream_counts(key_id), self.process)
                    pipe.zrem(keys.stream_holders(key_id), self.process)
                await pipe.execute()
        self._open.clear()
        self._closed.clear()

    def _abandoned(self, key_id: str, taking: asyncio.Future) -> None:
        """The take's client went away: a stream the script counted is given back."""
        if taking.cancelled() or taking.exception() is not None:
            return
        granted, _ = taking.result()
        if granted:
            self._closed[key_id] += 1
            self._flush_soon()

    def _flush_soon(self) -> None:
        """Take the closed streams off the counts, in one task for all that close together."""
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(), name="stream-counts-flush")

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the streams closing at this moment go together
        while self._closed:
            if not await self._sync_keys(list(self._closed)):
                return  # Redis is away: the next renewal tries again

    async def _sync_keys(self, key_ids: list[str]) -> bool:
        """Renew this process's count of each key, taking off the streams closed since;
        whether every key's went through."""
        synced = True
        for key_id in key_ids:
            # Taken out while in flight, so two syncs at once never take one stream off twice.
            closed, opened = self._closed.pop(key_id, 0), self._open[key_id]
            try:
                await self._sync(
                    keys=[keys.stream_counts(key_id), keys.stream_holders(key_id)],
                    args=[self.process, opened, closed, self.lifetime_ms],
                )
            except (RedisError, OSError) as exc:
                self._closed[key_id] += closed
                log.warning("could not renew the stream count of a key: %s", exc)
                synced = False
                continue
            if self._open[key_id] <= 0 and not self._closed[key_id]:
                del self._open[key_id], self._closed[key_id]
        return synced

    async def _renew(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.lifetime_ms / 3000)
            await self._sync_keys(list(self._open | self._closed))
