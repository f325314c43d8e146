"""The platform's counters, read from the system of record so they are exact."""

from __future__ import annotations

import asyncpg

from db.calls import Executor


async def fetch_counters(conn: Executor) -> asyncpg.Record:
    return await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM calls) AS total_calls,
               (SELECT count(*) FROM calls WHERE status <> 'COMPLETED') AS active_calls,
               (SELECT count(*) FROM calls
                 WHERE created_at > now() - interval '1 second') AS current_cps,
               (SELECT count(*) FROM recordings
                 WHERE status IN ('pending', 'uploading')) AS uploads_in_progress,
               (SELECT count(*) FROM recordings WHERE status = 'uploaded') AS uploads_completed,
               (SELECT count(*) FROM recordings WHERE status = 'failed') AS uploads_failed
        """
    )
