"""The transactional outbox: transitions committed but not yet known to be published."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from db.calls import EVENT_COLUMNS, Executor


async def delete_published(conn: Executor, outbox_ids: Sequence[int]) -> None:
    await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(outbox_ids))


async def fetch_unpublished(conn: Executor, older_than_ms: int, limit: int) -> list[asyncpg.Record]:
    """Entries older than `older_than_ms` (their publisher failed or died), oldest first, with
    the history row and the call's key needed to publish them."""
    return await conn.fetch(
        f"""
        SELECT o.id AS outbox_id, {EVENT_COLUMNS}
          FROM outbox o
          JOIN call_events e ON e.call_id = o.call_id AND e.seq = o.seq
          JOIN calls c ON c.id = o.call_id
         WHERE o.created_at < now() - make_interval(secs => $1::float8 / 1000)
         ORDER BY o.id
         LIMIT $2
        """,
        older_than_ms,
        limit,
    )
