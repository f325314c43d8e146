"""The handles every process opens once: settings, the PostgreSQL pool and Redis."""

from __future__ import annotations

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

    async def close(self) -> None:
        await self.redis.aclose()
        await self.pool.close()
