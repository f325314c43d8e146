"""asyncpg pools with JSON codecs, opened the same way by every process."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import orjson

# What a query runs on: one connection, or a pool that lends one.
Executor = asyncpg.Connection | asyncpg.Pool


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


# Planner settings of a pool whose statements all find their rows by key (the workers' calls,
# recordings and outbox entries by id; the API's batched inserts, event reads and writes).
# asyncpg prepares every statement, and after five runs PostgreSQL may keep one generic plan
# for it, made from the tables as they were then: on a fresh database, a hash join over a
# sequential scan of `calls`, kept while the table grew (22 million rows read in 25 s of the
# end-to-end benchmark). With scans and hash or merge joins
# priced out, the generic plan is the index plan whatever the tables' size, so these statements
# are planned once per connection instead of on every run (planning was 38% of PostgreSQL's
# CPU end to end). A statement with no index to use still scans: the settings only price.
LOOKUP_SETTINGS = {
    "plan_cache_mode": "auto",
    "enable_seqscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
}
# Every other pool runs statements where a scan can be the right plan (lists, counts, upkeep's
# sweeps), so each run is planned for its own arguments and the tables as they are.
GENERAL_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, lookups_only: bool = False
) -> asyncpg.Pool:
    """A pool for the process; `lookups_only` when every statement it runs finds rows by key."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=10,
        server_settings=LOOKUP_SETTINGS if lookups_only else GENERAL_SETTINGS,
    )


def with_database(dsn: str, database: str) -> str:
    """`dsn` naming `database` instead, its query (a socket directory in `host=`, say) kept."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + quote(database, safe="")))


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, timeout=5)
    await _init_connection(conn)
    return conn
