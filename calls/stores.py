"""The handles every process opens once: settings, the PostgreSQL pool and Redis."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from core.settings import Settings
from db.pool import create_pool


@dataclass(frozen=True, slots=True)
class Stores:
    settings: Settings
    pool: asyncpg.Pool
    redis: Redis

    @classmethod
    async def open(cls, settings: Settings, *, pool_max: int | None = None) -> Stores:
        pool = await create_pool(
            settings.dsn, min_size=settings.db_pool_min, max_size=pool_max or settings.db_pool_max
        )
        redis = Redis.from_url(
            settings.redis_dsn, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
        )
        return cls(settings, pool, redis)

    async def close(self, timeout_s: float = 3.0) -> None:
        """Close both; connections still busy after `timeout_s` are cut, so a stop never hangs."""
        await self.redis.aclose()
        try:
            await asyncio.wait_for(self.pool.close(), timeout_s)
        except TimeoutError:
            self.pool.terminate()
