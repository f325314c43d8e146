"""Calls and their history: create, read, and move calls in batches with compare-and-set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool

# Every column a view of a call needs; the live state in Redis is built from the same row.
CALL_COLUMNS = """
    id::text AS call_id, api_key_id::text AS key_id, kind, status, seq,
    from_number, to_number, metadata, flags, recording_url,
    created_at, updated_at, status_changed_at
"""


@dataclass(frozen=True, slots=True)
class Move:
    """Move `call_id` from `from_status` to `to_status` by `event`, only if it is still there
    (and, when `from_seq` is given, still at that seq)."""

    call_id: str
    from_status: str
    to_status: str
    event: str
    from_seq: int | None = None


async def insert_call(
    conn: Executor,
    *,
    call_id: str,
    key_id: str,
    kind: str,
    from_number: str | None,
    to_number: str | None,
    metadata: dict[str, Any],
    idempotency_key: str | None,
    request_hash: bytes | None,
) -> asyncpg.Record | None:
    """Insert a QUEUED call with its first event (seq 1) in one statement.

    Returns None when the key already has a call under `idempotency_key`.
    """
    return await conn.fetchrow(
        f"""
        WITH created AS (
            INSERT INTO calls (id, api_key_id, kind, status, from_number, to_number, metadata,
                               idempotency_key, request_hash)
            VALUES ($1, $2, $3, 'QUEUED', $4, $5, $6, $7, $8)
            ON CONFLICT (api_key_id, idempotency_key) DO NOTHING
            RETURNING *
        ), first_event AS (
            INSERT INTO call_events (call_id, seq, event, from_status, to_status, occurred_at)
            SELECT id, 1, 'call_initiated', NULL, status, created_at FROM created
        )
        SELECT {CALL_COLUMNS} FROM created
        """,
        call_id,
        key_id,
        kind,
        from_number,
        to_number,
        metadata,
        idempotency_key,
        request_hash,
    )


async def fetch_call(conn: Executor, call_id: str, key_id: str) -> asyncpg.Record | None:
    """The call if it exists and belongs to `key_id`."""
    return await conn.fetchrow(
        f"SELECT {CALL_COLUMNS} FROM calls WHERE id = $1 AND api_key_id = $2", call_id, key_id
    )


async def fetch_idempotent_call(
    conn: Executor, key_id: str, idempotency_key: str
) -> tuple[asyncpg.Record, bytes | None] | None:
    row = await conn.fetchrow(
        f"""
        SELECT {CALL_COLUMNS}, request_hash FROM calls
         WHERE api_key_id = $1 AND idempotency_key = $2
        """,
        key_id,
        idempotency_key,
    )
    return (row, row["request_hash"]) if row else None


async def apply_moves(conn: Executor, moves: Sequence[Move]) -> list[asyncpg.Record]:
    """Apply each move whose call is still in `from_status`, in one statement.

    Each applied move bumps the call's seq, appends its call_events row and, on COMPLETED,
    opens the call's recording upload. Moves whose call has moved on are skipped (a late timer or
    a duplicate job). Returns the moved calls with `previous_status` and `event`.
    """
    if not moves:
        return []
    return await conn.fetch(
        f"""
        WITH moves AS (
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[])
                AS m(call_id, from_status, to_status, event, from_seq)
        ), moved AS (
            UPDATE calls c
               SET status = m.to_status, seq = c.seq + 1,
                   updated_at = clock_timestamp(), status_changed_at = clock_timestamp()
              FROM moves m
             WHERE c.id = m.call_id AND c.status = m.from_status
               AND (m.from_seq IS NULL OR c.seq = m.from_seq)
         RETURNING c.*, m.from_status AS previous_status, m.event
        ), logged AS (
            INSERT INTO call_events
                   (call_id, seq, event, from_status, to_status, flags, occurred_at)
            SELECT id, seq, event, previous_status, status, flags, status_changed_at
              FROM moved
        ), uploads AS (
            INSERT INTO recordings (call_id) SELECT id FROM moved WHERE status = 'COMPLETED'
        )
        SELECT {CALL_COLUMNS}, previous_status, event FROM moved
        """,
        [m.call_id for m in moves],
        [m.from_status for m in moves],
        [m.to_status for m in moves],
        [m.event for m in moves],
        [m.from_seq for m in moves],
    )


async def fetch_events(conn: Executor, call_id: str, after_seq: int = 0) -> list[asyncpg.Record]:
    """The call's history after `after_seq`, in order."""
    return await conn.fetch(
        """
        SELECT e.call_id::text, e.seq, e.event, e.from_status, e.to_status, e.flags, e.data,
               e.occurred_at, c.api_key_id::text AS key_id
          FROM call_events e JOIN calls c ON c.id = e.call_id
         WHERE e.call_id = $1 AND e.seq > $2
         ORDER BY e.seq
        """,
        call_id,
        after_seq,
    )


async def fetch_stale_active_calls(
    conn: Executor, older_than_ms: int, limit: int
) -> list[asyncpg.Record]:
    """Simulated calls that are not over and have not moved for `older_than_ms`."""
    return await conn.fetch(
        f"""
        SELECT {CALL_COLUMNS} FROM calls
         WHERE status <> 'COMPLETED' AND kind = 'simulated'
           AND status_changed_at < clock_timestamp() - make_interval(secs => $1::float8 / 1000)
         ORDER BY status_changed_at
         LIMIT $2
        """,
        older_than_ms,
        limit,
    )


async def fetch_ended_among(conn: Executor, call_ids: Sequence[str]) -> set[str]:
    """Which of `call_ids` are COMPLETED or do not exist (their limit leases can go)."""
    rows = await conn.fetch(
        """
        SELECT id::text FROM unnest($1::uuid[]) AS ids(id)
         WHERE NOT EXISTS (SELECT 1 FROM calls c WHERE c.id = ids.id AND c.status <> 'COMPLETED')
        """,
        list(call_ids),
    )
    return {row["id"] for row in rows}


async def fetch_active_by_key(conn: Executor) -> list[asyncpg.Record]:
    """Every active call with its key and the time it started (to rebuild limit leases)."""
    return await conn.fetch(
        """
        SELECT id::text AS call_id, api_key_id::text AS key_id, created_at
          FROM calls WHERE status <> 'COMPLETED'
        """
    )


async def fetch_latest_event(conn: Executor, call_id: str, key_id: str) -> asyncpg.Record | None:
    """The call's latest history row, if the call belongs to `key_id`: its state as a message."""
    return await conn.fetchrow(
        """
        SELECT e.call_id::text, e.seq, e.event, e.from_status, e.to_status, c.flags, e.occurred_at
          FROM calls c JOIN call_events e ON e.call_id = c.id AND e.seq = c.seq
         WHERE c.id = $1 AND c.api_key_id = $2
        """,
        call_id,
        key_id,
    )


async def fetch_calls_page(
    conn: Executor, key_id: str, *, status: str | None, limit: int, offset: int
) -> tuple[list[asyncpg.Record], int]:
    """One page of the key's calls, newest first, with the total that match, in one query."""
    rows = await conn.fetch(
        f"""
        SELECT {CALL_COLUMNS}, count(*) OVER () AS total FROM calls
         WHERE api_key_id = $1 AND ($2::text IS NULL OR status = $2)
         ORDER BY created_at DESC, id DESC
         LIMIT $3 OFFSET $4
        """,
        key_id,
        status,
        limit,
        offset,
    )
    if rows:
        return rows, rows[0]["total"]
    if offset == 0:
        return [], 0
    # Past the last page the window count has no row to ride on; count on its own.
    total = await conn.fetchval(
        "SELECT count(*) FROM calls WHERE api_key_id = $1 AND ($2::text IS NULL OR status = $2)",
        key_id,
        status,
    )
    return [], total
