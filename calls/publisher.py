"""Publishing committed transitions on the pub/sub channel, with retries and the outbox.

Every transition is written with an outbox entry in the same statement. The publisher retries a
failed PUBLISH with backoff; once published, the entries are deleted in batches. What it could
not publish stays in the outbox, and the scheduler publishes it when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from calls.stores import Stores
from core import keys
from core.redis_mux import Batch
from db.outbox import delete_published

log = logging.getLogger(__name__)

# Waits before each retry of a failed publish, in seconds.
RETRY_BACKOFF_S = (0.05, 0.2, 0.5)
# Published outbox entries are deleted in one statement this often (or when this many wait).
ACK_INTERVAL_S = 0.1
ACK_BATCH = 1_000


# Queues commands on a pipeline (see Publisher.publish).
Queue = Callable[[Batch], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A realtime message to publish, the key that owns its call, and its outbox entry."""

    key_id: str
    message: dict[str, Any]
    outbox_id: int | None


def envelope(outgoing: Outgoing) -> bytes:
    """The pub/sub payload: the message plus the owning key, which the API processes use for
    routing and strip before sending."""
    return orjson.dumps(outgoing.message | {"key_id": outgoing.key_id})


class Publisher:
    def __init__(self, stores: Stores) -> None:
        self._stores = stores
        self._published: list[int] = []
        self._flusher: asyncio.Task[None] | None = None

    async def publish(self, items: Sequence[Outgoing], along: Queue | None = None) -> bool:
        """Publish transitions in order; True when all went out (their outbox entries are then
        deleted shortly), False when Redis refused them all retries (they stay in the outbox).

        `along` queues other commands on the first attempt's pipeline, so a transition's Redis
        updates and its publish share one round trip; retries publish alone.
        """
        if not items:
            return True
        payloads = [envelope(item) for item in items]
        for attempt, pause_s in enumerate((0.0, *RETRY_BACKOFF_S)):
            if pause_s:
                await asyncio.sleep(pause_s)
            try:
                async with self._stores.mux.pipeline() as pipe:
                    if along is not None and attempt == 0:
                        await along(pipe)
                    for payload in payloads:
                        pipe.publish(keys.EVENTS_CHANNEL, payload)
                    await pipe.execute()
                break
            except RedisError as exc:
                log.warning("publish failed (attempt %d): %s", attempt + 1, exc)
        else:
            log.error("publish gave up; %d updates wait in the outbox", len(payloads))
            return False
        self._acknowledge([item.outbox_id for item in items if item.outbox_id is not None])
        return True

    def _acknowledge(self, outbox_ids: list[int]) -> None:
        self._published.extend(outbox_ids)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(ACK_INTERVAL_S)
        await self.flush()

    async def flush(self) -> None:
        """Delete the outbox entries of what was published (at worst they are published twice:
        every subscriber drops a seq it has seen)."""
        while self._published:
            batch, self._published = self._published[:ACK_BATCH], self._published[ACK_BATCH:]
            try:
                await delete_published(self._stores.pool, batch)
            except Exception:
                log.warning("could not delete %d published outbox entries", len(batch))
                return

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
