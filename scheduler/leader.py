"""The leader lock: one scheduler acts, the others stand by and take over when it lapses."""

from __future__ import annotations

import uuid
from pathlib import Path

from redis.asyncio import Redis

from core import keys

_RENEW = (Path(__file__).parent / "renew.lua").read_text()
_RELEASE = (Path(__file__).parent / "release.lua").read_text()


class LeaderLock:
    def __init__(self, redis: Redis, ttl_ms: int) -> None:
        self.token = uuid.uuid4().hex
        self.ttl_ms = ttl_ms
        self._redis = redis
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def hold(self) -> bool:
        """Take the lock if it is free, or extend it if it is ours; True while we lead."""
        if await self._renew(keys=[keys.SCHEDULER_LOCK], args=[self.token, self.ttl_ms]):
            return True
        return bool(await self._redis.set(keys.SCHEDULER_LOCK, self.token, nx=True, px=self.ttl_ms))

    async def release(self) -> None:
        await self._release(keys=[keys.SCHEDULER_LOCK], args=[self.token])
