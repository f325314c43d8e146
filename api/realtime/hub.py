"""One Redis subscription per API process, fanned out in memory to the streams it serves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from redis.exceptions import RedisError

from api.realtime.stream_counts import StreamCounts
from core import keys
from core.redis_mux import MultiplexedRedis

log = logging.getLogger(__name__)

# Put in a subscription's queue when messages may have been missed (queue overflow, lost
# Redis connection): the follower then reads the gap from PostgreSQL.
RESYNC: dict[str, Any] = {"resync": True}
# Put in a subscription's queue when its stream must end (see StreamClosed).
_CLOSED: dict[str, Any] = {"closed": True}

# WebSocket close codes of a stream ended by the platform (4000-4999: the application's own).
KEY_DISABLED = 4401
GOING_AWAY = 1001
# A key stream's message holding a queue's figures (published by scheduler/stats.py) has this
# one field, its figures.
STATS = "stats"


class StreamClosed(Exception):
    """The stream must end: its key was disabled, or this process is stopping. `code` is the
    WebSocket close code that says which."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Subscription:
    """The messages of one call (or of every call of a key) for one stream."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=size)
        self.closed: StreamClosed | None = None

    def offer(self, message: dict[str, Any]) -> None:
        if self.closed is not None:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            # A slow reader: drop what it has not read and let it catch up from history.
            self._replace_all(RESYNC)

    def close(self, code: int, reason: str) -> None:
        """End the stream: what it has not read is dropped, and its next read raises."""
        self.closed = StreamClosed(code, reason)
        self._replace_all(_CLOSED)

    def _replace_all(self, message: dict[str, Any]) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(message)

    async def get(self) -> dict[str, Any]:
        """The next message; raises StreamClosed once the stream was closed."""
        message = await self.queue.get()
        if message is _CLOSED:
            self.queue.put_nowait(_CLOSED)  # and on every later read
            assert self.closed is not None
            raise self.closed
        return message


class Hub:
    def __init__(
        self,
        redis: MultiplexedRedis,
        counts: StreamCounts,
        queue_size: int = 256,
        on_key_change: Callable[[str], None] | None = None,
    ) -> None:
        """`counts` caps each key's streams across every API process; `on_key_change(key id)`
        is told of every change to a key (`python -m db keys`)."""
        self._redis = redis
        self._counts = counts
        self._on_key_change = on_key_change
        self._queue_size = queue_size
        # Streams of one call, by (key id, the call's id as the key knows it), and of a key.
        self._by_call: defaultdict[tuple[str, str], set[Subscription]] = defaultdict(set)
        self._by_key: defaultdict[str, set[Subscription]] = defaultdict(set)
        # Open streams of each API key on this process, of both kinds.
        self._of_key: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def open_subscriptions(self) -> int:
        return sum(map(len, self._by_call.values())) + sum(map(len, self._by_key.values()))

    async def start(self) -> None:
        await self._counts.start()
        self._task = asyncio.create_task(self._listen(), name="hub")
        # Streams opened before the subscription is live could miss a message: wait for it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._counts.aclose()

    def call(self, key_id: str, ref: str) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """Subscribe to the messages of the key's call `ref` for the life of the `async with`
        block; raises RateLimited when the key holds MAX_STREAMS_PER_KEY streams already."""
        return self._subscribe(self._by_call, (key_id, ref), key_id)

    def key(self, key_id: str) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """Subscribe to the messages of every call of an API key (capped as `call`)."""
        return self._subscribe(self._by_key, key_id, key_id)

    @contextlib.asynccontextmanager
    async def _subscribe(
        self, index: defaultdict[Any, set[Subscription]], name: Any, key_id: str
    ) -> AsyncIterator[Subscription]:
        await self._counts.take(key_id)
        sub = Subscription(self._queue_size)
        index[name].add(sub)
        self._of_key[key_id].add(sub)
        try:
            yield sub
        finally:
            self._discard(index, name, sub)
            self._discard(self._of_key, key_id, sub)
            self._counts.give_back(key_id)

    @staticmethod
    def _discard(index: defaultdict[Any, set[Subscription]], name: Any, sub: Subscription) -> None:
        subs = index.get(name)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del index[name]

    def dispatch(self, payload: bytes) -> None:
        if not self._by_call and not self._by_key:
            return  # nobody here is listening: not worth parsing
        message = orjson.loads(payload)
        key_id = message.pop("key_id", None)
        for sub in self._by_call.get((key_id, message["call_id"]), ()):
            sub.offer(message)
        for sub in self._by_key.get(key_id, ()):
            sub.offer(message)

    def _on_stats(self, payload: bytes) -> None:
        """A queue's figures, for the key streams of its key."""
        if not self._by_key:
            return  # nobody here is listening: not worth parsing
        try:
            figures = orjson.loads(payload)
            key_id = figures.pop("key_id")
        except (ValueError, KeyError, TypeError, AttributeError):
            log.exception("dropping malformed stats message")
            return
        for sub in self._by_key.get(key_id, ()):
            sub.offer({STATS: figures})

    def _resync_all(self) -> None:
        for index in (self._by_call, self._by_key):
            for subs in index.values():
                for sub in subs:
                    sub.offer(RESYNC)

    def _on_message(self, payload: bytes) -> None:
        try:
            self.dispatch(payload)
        except (ValueError, KeyError, TypeError):
            log.exception("dropping malformed pub/sub message")

    def _on_key_message(self, payload: bytes) -> None:
        try:
            change = orjson.loads(payload)
            key_id = change["key_id"]
        except (ValueError, KeyError, TypeError):
            log.exception("dropping malformed key change")
            return
        if self._on_key_change is not None:
            self._on_key_change(key_id)
        if change.get("enabled") is False:
            for sub in self._of_key.get(key_id, ()):
                sub.close(KEY_DISABLED, "API key disabled")

    def close_all(self) -> None:
        """End every stream of this process (it is stopping): SSE streams end, WebSockets close
        with 1001, so clients reconnect elsewhere at once rather than time out."""
        for subs in self._of_key.values():
            for sub in subs:
                sub.close(GOING_AWAY, "server shutting down")

    def _on_subscribed(self) -> None:
        if self._subscribed.is_set():
            self._resync_all()  # messages published while we were away are in history
        self._subscribed.set()

    async def _listen(self) -> None:
        backoff_s = 0.1
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await self._redis.listen(
                    {
                        keys.EVENTS_CHANNEL: self._on_message,
                        keys.KEYS_CHANNEL: self._on_key_message,
                        keys.STATS_CHANNEL: self._on_stats,
                    },
                    self._on_subscribed,
                )
            except (RedisError, OSError) as exc:
                log.warning("realtime subscription lost (%s); reconnecting", exc)
            if asyncio.get_running_loop().time() - started > 5.0:
                backoff_s = 0.1  # it was up a while: this is a new outage
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 5.0)
