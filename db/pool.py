"""asyncpg pools with JSON codecs, opened the same way by every process."""

from __future__ import annotations

import asyncpg
import orjson


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection without asyncpg's reset query (RESET ALL, UNLISTEN, ...): nothing
    here changes session state, and the query cost a round trip on every release. asyncpg
    still rolls back a transaction left open before calling this."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=10,
        # asyncpg prepares every statement; after five runs PostgreSQL may keep one generic
        # plan for it, made from the table as it was then. A fresh database's first batches
        # of moves got a hash join over a sequential scan of calls, kept while the table grew:
        # 22 million rows read in 25 s of the end-to-end benchmark, PostgreSQL saturated.
        # Planning each run costs tens of microseconds per statement; batches amortise it.
        server_settings={"plan_cache_mode": "force_custom_plan"},
    )


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, timeout=5)
    await _init_connection(conn)
    return conn
