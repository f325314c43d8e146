"""Deleting ended calls with everything kept of them: history, outbox entries, upload rows
(callback deliveries go with their call: ON DELETE CASCADE)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from db.calls import CALL_COLUMNS
from db.pool import Executor


async def fetch_expired_calls(
    conn: Executor, older_than_s: float, limit: int
) -> list[asyncpg.Record]:
    """The calls that ended more than `older_than_s` ago (when the platform stored their end),
    oldest first, with the storage key of their recording (None when there is none)."""
    return await conn.fetch(
        """
        SELECT c.id::text AS call_id, r.storage_key
          FROM calls c LEFT JOIN recordings r ON r.call_id = c.id
         WHERE c.status = 'COMPLETED'
           AND c.status_changed_at < clock_timestamp() - make_interval(secs => $1::float8)
         ORDER BY c.status_changed_at
         LIMIT $2
        """,
        older_than_s,
        limit,
    )


async def fetch_calls_of_deleted_keys(conn: Executor, limit: int) -> list[asyncpg.Record]:
    """Ended calls of deleted keys (`keys delete`), with the storage key of their recording."""
    return await conn.fetch(
        """
        SELECT c.id::text AS call_id, r.storage_key
          FROM api_keys k
          JOIN calls c ON c.api_key_id = k.id AND c.status = 'COMPLETED'
          LEFT JOIN recordings r ON r.call_id = c.id
         WHERE k.deleted_at IS NOT NULL
         LIMIT $1
        """,
        limit,
    )


async def fetch_ended_calls_of_key(conn: Executor, key_id: str, limit: int) -> list[asyncpg.Record]:
    """Ended calls of one key (`DELETE /calls`), with the storage key of their recording."""
    return await conn.fetch(
        """
        SELECT c.id::text AS call_id, r.storage_key
          FROM calls c LEFT JOIN recordings r ON r.call_id = c.id
         WHERE c.api_key_id = $1 AND c.status = 'COMPLETED'
         LIMIT $2
        """,
        key_id,
        limit,
    )


async def fetch_active_calls_of_key(
    conn: Executor, key_id: str, limit: int
) -> list[asyncpg.Record]:
    """Calls of one key not over yet, as rows a transition is decided from."""
    return await conn.fetch(
        f"""
        SELECT {CALL_COLUMNS} FROM calls
         WHERE api_key_id = $1 AND status <> 'COMPLETED'
         LIMIT $2
        """,
        key_id,
        limit,
    )


async def count_active_calls_of_key(conn: Executor, key_id: str) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM calls WHERE api_key_id = $1 AND status <> 'COMPLETED'", key_id
    )


# The tables of the queue statistics (0008_queue_stats.sql), which no foreign key ties to a key.
_STATS_TABLES = ("stats_deltas", "queue_stats", "agent_stats")


async def delete_old_minute_stats(conn: Executor, older_than_s: float, limit: int) -> int:
    """Delete up to `limit` minute rows of the queue statistics no fold has touched for
    `older_than_s`, in each table, oldest first; returns how many. Hour and day rows stay."""
    deleted = 0
    for table in ("queue_stats", "agent_stats"):
        deleted += await conn.fetchval(
            f"""
            WITH gone AS (
                DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM {table}
                     WHERE span = 'minute'
                       AND folded_at < clock_timestamp() - make_interval(secs => $1::float8)
                     ORDER BY folded_at
                     LIMIT $2))
             RETURNING 1
            )
            SELECT count(*) FROM gone
            """,
            older_than_s,
            limit,
        )
    return deleted


async def delete_stats_of_deleted_keys(conn: Executor, limit: int) -> int:
    """Delete up to `limit` rows of the queue statistics of deleted keys that have no call left
    (nobody can read them any more), in each table; returns how many."""
    deleted = 0
    for table in _STATS_TABLES:
        deleted += await conn.fetchval(
            f"""
            WITH gone AS (
                DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                    SELECT s.ctid
                      FROM api_keys k JOIN {table} s ON s.api_key_id = k.id
                     WHERE k.deleted_at IS NOT NULL
                       AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.api_key_id = k.id)
                     LIMIT $1))
             RETURNING 1
            )
            SELECT count(*) FROM gone
            """,
            limit,
        )
    return deleted


async def drop_emptied_keys(conn: Executor) -> int:
    """Delete the rows of deleted keys with no call nor statistics left; returns how many.
    (Their counters stay: what was made was made.)"""
    no_stats = "\n".join(
        f"AND NOT EXISTS (SELECT 1 FROM {table} s WHERE s.api_key_id = k.id)"
        for table in _STATS_TABLES
    )
    return await conn.fetchval(
        f"""
        WITH gone AS (
            DELETE FROM api_keys k
             WHERE k.deleted_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.api_key_id = k.id)
               {no_stats}
         RETURNING id
        )
        SELECT count(*) FROM gone
        """
    )


async def delete_calls(pool: asyncpg.Pool, call_ids: Sequence[str]) -> int:
    """Delete ended calls with their history, outbox entries and upload rows, and count them as
    removed (counter_deltas); a call not ended is left alone. Returns how many were deleted.

    The ended ones are found (and locked) first, so that every delete finds its rows by index
    from a list of ids: joined to a CTE of the deleted calls instead, the planner may hash-join
    a scan of the whole history."""
    async with pool.acquire() as conn, conn.transaction():
        ended = await conn.fetchval(
            """
            SELECT coalesce(array_agg(id), '{}') FROM (
                SELECT id FROM calls WHERE id = ANY($1::uuid[]) AND status = 'COMPLETED'
                   FOR UPDATE
            ) AS locked
            """,
            list(call_ids),
        )
        if not ended:
            return 0
        return await conn.fetchval(
            """
            WITH events AS (
                DELETE FROM call_events WHERE call_id = ANY($1::uuid[])
            ), queued AS (
                DELETE FROM outbox WHERE call_id = ANY($1::uuid[])
            ), uploads AS (
                DELETE FROM recordings WHERE call_id = ANY($1::uuid[])
            ), gone AS (
                DELETE FROM calls WHERE id = ANY($1::uuid[]) RETURNING api_key_id
            ), counted AS (
                INSERT INTO counter_deltas (api_key_id, calls_removed)
                SELECT api_key_id, count(*) FROM gone GROUP BY api_key_id
            )
            SELECT count(*) FROM gone
            """,
            ended,
        )
