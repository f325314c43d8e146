"""The platform's counters, kept as calls move (0006_counters.sql): reading them costs a few rows
whatever the size of `calls`, and each is exact, counted in the statements that change it."""

from __future__ import annotations

import asyncpg

from db.pool import Executor

# Every counter of a key: its folded total plus the deltas not folded yet, in one snapshot.
_BY_KEY = """
    SELECT api_key_id, calls_created, calls_completed, calls_removed, uploads_opened,
           uploads_stored, uploads_failed
      FROM counter_totals {where}
    UNION ALL
    SELECT api_key_id, calls_created, calls_completed, calls_removed, uploads_opened,
           uploads_stored, uploads_failed
      FROM counter_deltas {where}
"""


async def fetch_counters(conn: Executor, key_id: str | None = None) -> asyncpg.Record:
    """The counters of the platform, or of one key."""
    where = "" if key_id is None else "WHERE api_key_id = $1"
    return await conn.fetchrow(
        f"""
        SELECT coalesce(sum(calls_created), 0)::bigint AS total_calls,
               coalesce(sum(calls_created - calls_completed), 0)::bigint AS active_calls,
               (SELECT count(*) FROM calls
                 WHERE created_at > now() - interval '1 second'
                   {"" if key_id is None else "AND api_key_id = $1"}) AS current_cps,
               coalesce(sum(uploads_opened - uploads_stored - uploads_failed), 0)::bigint
                   AS uploads_in_progress,
               coalesce(sum(uploads_stored), 0)::bigint AS uploads_completed,
               coalesce(sum(uploads_failed), 0)::bigint AS uploads_failed
          FROM ({_BY_KEY.format(where=where)}) AS counters
        """,
        *(() if key_id is None else (key_id,)),
    )


def figures_of(row: asyncpg.Record) -> dict[str, int]:
    """The figures `/metrics` gives from a `fetch_counters` row (completed calls derived)."""
    return {
        "total_calls": row["total_calls"],
        "active_calls": row["active_calls"],
        "completed_calls": row["total_calls"] - row["active_calls"],
        "current_cps": row["current_cps"],
        "uploads_in_progress": row["uploads_in_progress"],
        "uploads_completed": row["uploads_completed"],
        "uploads_failed": row["uploads_failed"],
    }


# How many calls of the key $1 are stored (created, less deleted): a scalar subquery.
STORED_CALLS = f"""
    SELECT coalesce(sum(calls_created - calls_removed), 0)::bigint
      FROM ({_BY_KEY.format(where="WHERE api_key_id = $1")}) AS counters
"""


async def fetch_stored_calls(conn: Executor, key_id: str | None = None) -> int:
    """How many calls the platform stores (created, less deleted), for every key or one."""
    if key_id is not None:
        return await conn.fetchval(STORED_CALLS, key_id)
    return await conn.fetchval(
        f"""
        SELECT coalesce(sum(calls_created - calls_removed), 0)::bigint
          FROM ({_BY_KEY.format(where="")}) AS counters
        """
    )


async def fold_counter_deltas(conn: Executor) -> int:
    """Fold the deltas written so far into the totals (upkeep, each pass); returns how many."""
    return await conn.fetchval(
        """
        WITH folded AS (
            DELETE FROM counter_deltas RETURNING *
        ), added AS (
            INSERT INTO counter_totals AS t (api_key_id, calls_created, calls_completed,
                                             calls_removed, uploads_opened, uploads_stored,
                                             uploads_failed)
            SELECT api_key_id, sum(calls_created), sum(calls_completed), sum(calls_removed),
                   sum(uploads_opened), sum(uploads_stored), sum(uploads_failed)
              FROM folded GROUP BY api_key_id
            ON CONFLICT (api_key_id) DO UPDATE
               SET calls_created = t.calls_created + excluded.calls_created,
                   calls_completed = t.calls_completed + excluded.calls_completed,
                   calls_removed = t.calls_removed + excluded.calls_removed,
                   uploads_opened = t.uploads_opened + excluded.uploads_opened,
                   uploads_stored = t.uploads_stored + excluded.uploads_stored,
                   uploads_failed = t.uploads_failed + excluded.uploads_failed
        )
        SELECT count(*) FROM folded
        """
    )


# Breached calls (a wait or hold breach) counted at most: past it the answer says "at least".
BREACHES_COUNTED = 10_000


async def fetch_call_counts(conn: Executor, key_id: str) -> asyncpg.Record:
    """A key's stored calls, its active ones by status, and its breached calls up to
    BREACHES_COUNTED, in one round trip whatever the size of `calls`: the stored count is the
    key's counter, the active calls are bounded by its limits (and read by the key and status
    index), and the breach count stops at the cap (the flags' partial indexes)."""
    return await conn.fetchrow(
        f"""
        SELECT ({STORED_CALLS}) AS stored,
               (SELECT coalesce(jsonb_object_agg(status, n), '{{}}'::jsonb)
                  FROM (SELECT status, count(*) AS n FROM calls
                         WHERE api_key_id = $1 AND status <> 'COMPLETED'
                         GROUP BY status) AS active) AS active,
               (SELECT count(*) FROM (
                    SELECT 1 FROM calls
                     WHERE api_key_id = $1
                       AND (flags @> '{{wait_sla_exceeded}}' OR flags @> '{{hold_limit_exceeded}}')
                     LIMIT $2) AS breached) AS breaches
        """,
        key_id,
        BREACHES_COUNTED + 1,
    )
