"""Live queue statistics: every STATS_INTERVAL_MS the leading scheduler publishes the figures of
each queue whose calls moved since (the key stream's `stats` messages), so each queue's are sent
at most once an interval, and its last change is always sent."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime

import orjson

from calls import stats
from calls.stores import Stores
from core import keys
from db.stats import StatsFilter

log = logging.getLogger(__name__)

# The window a `stats` message's figures are over.
LIVE_WINDOW = "1h"


class StatsPublisher:
    def __init__(self, stores: Stores) -> None:
        self._stores = stores

    async def run_once(self) -> int:
        """Publish the figures of the queues marked changed (calls/transitions.py); returns how
        many. Marks taken but not published (PostgreSQL or Redis failed) are put back."""
        redis = self._stores.redis
        async with redis.pipeline(transaction=True) as pipe:
            pipe.smembers(keys.STATS_CHANGED)
            pipe.delete(keys.STATS_CHANGED)
            members, _ = await pipe.execute()
        if not members:
            return 0
        try:
            return await self._publish([member.decode() for member in members])
        except Exception:
            await redis.sadd(keys.STATS_CHANGED, *members)
            raise

    async def _publish(self, members: list[str]) -> int:
        settings = self._stores.settings
        queues_of: defaultdict[str, list[str]] = defaultdict(list)
        for member in members:
            key_id, queue_id = keys.queue_of_changed(member)
            queues_of[key_id].append(queue_id)
        window = stats.window_of(LIVE_WINDOW, None, None, datetime.now(UTC))
        about = window.body() | stats.measured_against(settings)
        payloads = []
        for key_id, queue_ids in queues_of.items():
            for figures in await stats.read_queues(
                self._stores.pool,
                key_id,
                window,
                StatsFilter(queue_ids=queue_ids),
                settings.time_scale,
                len(queue_ids),
            ):
                payloads.append(orjson.dumps(figures | about | {"key_id": key_id}))
        async with self._stores.redis.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.publish(keys.STATS_CHANNEL, payload)
            await pipe.execute()
        return len(payloads)
