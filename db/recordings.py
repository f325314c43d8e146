"""Recording uploads: claimed, finished or failed per call, so every attempt is counted exactly."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from core.call_ids import CallRef
from db.calls import CALL_COLUMNS, NAMED_CALL, Executor, named_call_args


async def claim_uploads(conn: Executor, call_ids: Sequence[str]) -> list[asyncpg.Record]:
    """Mark pending uploads as uploading and count the attempt; others are skipped (duplicates).
    Each comes with how many first attempts its call's scenario makes fail."""
    return await conn.fetch(
        """
        UPDATE recordings r
           SET status = 'uploading', attempts = attempts + 1, updated_at = now()
          FROM calls c
         WHERE r.call_id = ANY($1::uuid[]) AND r.status = 'pending' AND c.id = r.call_id
        RETURNING r.call_id::text, coalesce(c.ref, c.id::text) AS ref, r.attempts, c.request_id,
                  coalesce((c.scenario->>'fail_upload_attempts')::int, 0) AS fail_attempts
        """,
        list(call_ids),
    )


async def finish_uploads(
    conn: Executor, done: Sequence[tuple[str, str, str]]
) -> list[asyncpg.Record]:
    """Record uploaded (call id, storage key, url) triples, in one statement; returns the
    updated calls."""
    return await conn.fetch(
        f"""
        WITH d AS (
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) AS d(call_id, storage_key, url)
        ), stored AS (
            UPDATE recordings r SET status = 'uploaded', storage_key = d.storage_key,
                   last_error = NULL, updated_at = now()
              FROM d
             WHERE r.call_id = d.call_id AND r.status = 'uploading'
         RETURNING r.call_id
        ), counted AS (
            INSERT INTO counter_deltas (api_key_id, uploads_stored)
            SELECT c.api_key_id, count(*) FROM stored JOIN calls c ON c.id = stored.call_id
             GROUP BY c.api_key_id
        )
        UPDATE calls c SET recording_url = d.url, updated_at = now()
          FROM d
         WHERE c.id = d.call_id
        RETURNING {CALL_COLUMNS}
        """,
        [d[0] for d in done],
        [d[1] for d in done],
        [d[2] for d in done],
    )


async def fail_upload(
    conn: Executor, call_id: str, error: str, max_attempts: int, retry_in_ms: int
) -> asyncpg.Record | None:
    """Give the attempt back as pending with a retry time, or as failed (and counted) after the
    last attempt."""
    return await conn.fetchrow(
        """
        WITH given_back AS (
            UPDATE recordings
               SET status = CASE WHEN attempts >= $3 THEN 'failed' ELSE 'pending' END,
                   next_attempt_at = now() + make_interval(secs => $4::float8 / 1000),
                   last_error = $2, updated_at = now()
             WHERE call_id = $1 AND status = 'uploading'
         RETURNING call_id, status, next_attempt_at
        ), counted AS (
            INSERT INTO counter_deltas (api_key_id, uploads_failed)
            SELECT c.api_key_id, 1 FROM given_back JOIN calls c ON c.id = given_back.call_id
             WHERE given_back.status = 'failed'
        )
        SELECT status, (extract(epoch FROM next_attempt_at) * 1000)::bigint AS next_attempt_ms
          FROM given_back
        """,
        call_id,
        error[:500],
        max_attempts,
        retry_in_ms,
    )


async def fetch_stranded_uploads(
    conn: Executor, pending_grace_ms: int, uploading_stale_ms: int, limit: int
) -> list[asyncpg.Record]:
    """Uploads whose timer or worker was lost: overdue pending ones and long-running attempts."""
    return await conn.fetch(
        """
        SELECT call_id::text, status FROM recordings
         WHERE (status = 'pending'
                AND next_attempt_at < now() - make_interval(secs => $1::float8 / 1000))
            OR (status = 'uploading'
                AND updated_at < now() - make_interval(secs => $2::float8 / 1000))
         ORDER BY next_attempt_at
         LIMIT $3
        """,
        pending_grace_ms,
        uploading_stale_ms,
        limit,
    )


async def reopen_uploads(conn: Executor, call_ids: Sequence[str]) -> None:
    """Put attempts whose worker died back to pending (the attempt stays counted)."""
    await conn.execute(
        """
        UPDATE recordings SET status = 'pending', updated_at = now()
         WHERE call_id = ANY($1::uuid[]) AND status = 'uploading'
        """,
        list(call_ids),
    )


async def reopen_failed_upload(conn: Executor, call_id: str) -> bool:
    """Put a failed upload back to pending for one more attempt (a dead letter requeued), and
    take it out of the failed count; False when it is not failed."""
    return await conn.fetchval(
        """
        WITH reopened AS (
            UPDATE recordings SET status = 'pending', next_attempt_at = now(), updated_at = now()
             WHERE call_id = $1::uuid AND status = 'failed'
         RETURNING call_id
        ), counted AS (
            INSERT INTO counter_deltas (api_key_id, uploads_failed)
            SELECT c.api_key_id, -1 FROM reopened JOIN calls c ON c.id = reopened.call_id
        )
        SELECT count(*) > 0 FROM reopened
        """,
        call_id,
    )


async def fetch_recording(conn: Executor, call: CallRef) -> asyncpg.Record | None:
    """The uploaded recording of the call its key names `call.ref`."""
    return await conn.fetchrow(
        f"""
        SELECT r.storage_key FROM recordings r JOIN calls c ON c.id = r.call_id
         WHERE {NAMED_CALL} AND r.status = 'uploaded'
        """,
        *named_call_args(call),
    )
