"""The handles every process opens once: settings, the PostgreSQL pools and Redis; how many
PostgreSQL connections each kind of process opens at most, and the check, as a process starts,
that the server has room for them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Literal

import asyncpg
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from calls.batches import IN_FLIGHT
from core.redis_mux import MultiplexedRedis
from core.settings import Settings
from db.connections import fetch_headroom
from db.pool import create_pool

log = logging.getLogger(__name__)

# A worker's job holds at most one connection for its moves, one for its uploads, one for its
# callbacks and one for the publisher's outbox deletes at a time; the callbacks' batched claims
# and finishes (four each at most) and upload failures written concurrently take a few more.
WORKER_CONNECTIONS = 8
# The scheduler's upkeep and retention purge run one statement at a time, its publisher's
# outbox deletes beside them.
SCHEDULER_CONNECTIONS = 4
# The API's batchers (new calls, event reads, event writes) run IN_FLIGHT statements each at
# most, on a pool of their own.
API_LOOKUP_CONNECTIONS = 3 * IN_FLIGHT


@dataclass(frozen=True, slots=True)
class Pools:
    """The PostgreSQL connections one process opens at most (README: "PostgreSQL connections"
    gives the formula for all processes)."""

    # What the process is, for what it says at start.
    process: str
    # Its general pool.
    general: int
    # A second pool for the statements that find their rows by key (0: none).
    lookups: int = 0
    # Every statement of the process finds rows by key: its one pool keeps plans (db/pool.py).
    lookups_only: bool = False

    @property
    def total(self) -> int:
        return self.general + self.lookups

    def describe(self, settings: Settings) -> str:
        """Where the figure comes from, in the settings' terms."""
        if self.process == "api":
            return f"DB_POOL_MAX {settings.db_pool_max} + {self.lookups} for its batched writes"
        cap = WORKER_CONNECTIONS if self.process == "worker" else SCHEDULER_CONNECTIONS
        return f"DB_POOL_MAX {settings.db_pool_max}, at most {cap} for a {self.process}"


def pools_of(process: Literal["api", "worker", "scheduler"], settings: Settings) -> Pools:
    """The pools each kind of process opens: the one place their sizes come from."""
    if process == "api":
        return Pools("api", settings.db_pool_max, API_LOOKUP_CONNECTIONS)
    if process == "worker":
        # Jobs move calls and upload recordings by id, nothing else: their plans can be kept.
        return Pools("worker", min(WORKER_CONNECTIONS, settings.db_pool_max), lookups_only=True)
    return Pools("scheduler", min(SCHEDULER_CONNECTIONS, settings.db_pool_max))


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
    async def open(cls, settings: Settings, pools: Pools) -> Stores:
        """Open `pools` (pools_of), once the server was asked whether it has room for them."""
        await check_connections(settings, pools)
        pool = await create_pool(
            settings.dsn,
            min_size=min(settings.db_pool_min, pools.general),
            max_size=pools.general,
            lookups_only=pools.lookups_only,
        )
        lookups = pool
        if pools.lookups and not pools.lookups_only:
            lookups = await create_pool(
                settings.dsn, min_size=1, max_size=pools.lookups, lookups_only=True
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


async def check_connections(settings: Settings, pools: Pools) -> None:
    """Say at start whether PostgreSQL has room for every connection this process may open:
    at WARNING, with the figures and what to change, when it has not (the process runs all the
    same: its pools open connections only as they need them, and a refused one is a 503)."""
    try:
        headroom = await fetch_headroom(settings.dsn)
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("could not ask PostgreSQL how many connections it has left: %s", exc)
        return
    figures = {
        "connections_max": pools.total,
        "connections_left": headroom.left,
        "max_connections": headroom.max_connections,
    }
    if pools.total <= headroom.left:
        log.info(
            "PostgreSQL connections: this %s process opens at most %d (%s); the server has room"
            " for %d more",
            pools.process,
            pools.total,
            pools.describe(settings),
            headroom.left,
            extra=figures,
        )
        return
    log.warning(
        "PostgreSQL has room for %d more connections (%s), but this %s process may open up to"
        " %d (%s): under load some would be refused and its requests answered 503. Lower"
        " DB_POOL_MAX, run fewer processes or raise max_connections (README: PostgreSQL"
        " connections gives the formula for every process)",
        headroom.left,
        headroom.describe(),
        pools.process,
        pools.total,
        pools.describe(settings),
        extra=figures,
    )
