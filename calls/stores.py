"""The handles every process opens once: settings, the PostgreSQL pool and Redis."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import asyncpg
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.redis_mux import MultiplexedRedis
from core.settings import Settings
from db.pool import create_pool


@dataclass(frozen=True, slots=True)
class Stores:
    settings: Settings
    pool: asyncpg.Pool
    # Statements that find their rows by key, with plans kept (db/pool.py): the workers' only
    # pool; in the API, a second pool for the batched inserts, event reads and event writes.
    lookups: asyncpg.Pool
    # redis-py's pooled client: pub/sub, scans, blocking waits, transactions.
    redis: Redis
    # One multiplexed connection for the commands of the request and timer paths: a fraction of
    # the pooled client's CPU per command (core/redis_mux.py).
    mux: MultiplexedRedis

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        pool_max: int | None = None,
        lookups_only: bool = False,
        lookups_max: int | None = None,
    ) -> Stores:
        """`lookups_only`: every statement the process runs finds rows by key (db/pool.py);
        `lookups_max`: a second pool of that size for those that do."""
        pool = await create_pool(
            settings.dsn,
            min_size=settings.db_pool_min,
            max_size=pool_max or settings.db_pool_max,
            lookups_only=lookups_only,
        )
        lookups = pool
        if lookups_max and not lookups_only:
            lookups = await create_pool(
                settings.dsn, min_size=1, max_size=lookups_max, lookups_only=True
            )
        # A request waits for a free connection rather than failing when a burst outnumbers the
        # pool, and a command on a connection Redis dropped (a restart) is retried on a new one.
        connections = BlockingConnectionPool.from_url(
            settings.redis_dsn,
            max_connections=settings.redis_pool_max,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.01), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        redis = Redis.from_pool(connections)
        return cls(settings, pool, lookups, redis, MultiplexedRedis.from_url(settings.redis_dsn))

    async def close(self, timeout_s: float = 3.0) -> None:
        """Close them all; connections still busy after `timeout_s` are cut, so a stop never
        hangs."""
        await self.mux.aclose(timeout_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.redis.aclose(), timeout_s)
        for pool in dict.fromkeys((self.pool, self.lookups)):  # one pool or two
            try:
                await asyncio.wait_for(pool.close(), timeout_s)
            except TimeoutError:
                pool.terminate()
