"""Status callback deliveries: claimed one call at a time in seq order, finished with every
attempt logged, and found again by upkeep when a timer or a worker was lost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core.call_ids import CallRef
from db.calls import EVENT_COLUMNS, NAMED_CALL, named_call_args
from db.pool import Executor

# A claimed delivery, with all its attempt needs: the transition (as a history row), where to
# send it and the key's signing secret; for a call of the Twilio face also its numbers and times,
# its Twilio request, the key's Auth Token and the delivery's place among the call's (`sequence`,
# from 0: Twilio's SequenceNumber). `d` is the delivery, `c` its call, `k` the call's key and `e`
# the transition's history row.
_CLAIMED = f"""
    d.id::text AS delivery_id, d.attempts AS attempt, d.created_at AS committed_at,
    c.status_callback, k.signing_secret, c.request_id, {EVENT_COLUMNS},
    c.twilio, k.auth_token, c.from_number, c.to_number, c.answered_at, c.ended_at,
    (SELECT count(*) FROM callback_deliveries p
      WHERE p.call_id = d.call_id AND p.seq < d.seq) AS sequence
"""


async def claim_next(conn: Executor, call_ids: Sequence[str]) -> list[asyncpg.Record]:
    """For each call, its first open delivery (in seq order): claimed (marked delivering, its
    attempt counted) when it is pending and due, with what its attempt needs (`delivery_id` set);
    else as it is (`open_status`, `due_ms`), so a retry's timer can be set again. A call with no
    open delivery gives no row; a call a 410 stopped has its pending deliveries marked stopped
    (`halted`)."""
    return await conn.fetch(
        f"""
        WITH first_open AS (
            SELECT DISTINCT ON (call_id) id, call_id, status, next_attempt_at
              FROM callback_deliveries
             WHERE call_id = ANY($1::uuid[]) AND status IN ('pending', 'delivering')
             ORDER BY call_id, seq
        ), halted AS (
            UPDATE callback_deliveries d SET status = 'stopped', updated_at = clock_timestamp()
              FROM calls c
             WHERE d.call_id = ANY($1::uuid[]) AND d.status = 'pending'
               AND c.id = d.call_id AND c.callbacks_stopped_at IS NOT NULL
         RETURNING d.id
        ), claimed AS (
            UPDATE callback_deliveries d
               SET status = 'delivering', attempts = d.attempts + 1,
                   updated_at = clock_timestamp()
              FROM first_open f
             WHERE d.id = f.id AND d.status = 'pending'
               AND d.next_attempt_at <= clock_timestamp()
               AND NOT EXISTS (SELECT 1 FROM calls s
                                WHERE s.id = d.call_id AND s.callbacks_stopped_at IS NOT NULL)
         RETURNING d.*
        )
        SELECT f.call_id::text AS open_call_id, f.status AS open_status,
               (extract(epoch FROM f.next_attempt_at) * 1000)::bigint AS due_ms,
               h.id IS NOT NULL AS halted, {_CLAIMED}
          FROM first_open f
          LEFT JOIN halted h ON h.id = f.id
          LEFT JOIN claimed d ON d.id = f.id
          LEFT JOIN calls c ON c.id = d.call_id
          LEFT JOIN api_keys k ON k.id = c.api_key_id
          LEFT JOIN call_events e ON e.call_id = d.call_id AND e.seq = d.seq
        """,
        list(call_ids),
    )


async def claim_failed(conn: Executor, call_id: str) -> asyncpg.Record | None:
    """The call's first failed delivery (its attempts spent), claimed for one more attempt: a
    dead letter requeued."""
    return await conn.fetchrow(
        f"""
        WITH claimed AS (
            UPDATE callback_deliveries d
               SET status = 'delivering', attempts = d.attempts + 1,
                   updated_at = clock_timestamp()
             WHERE d.id = (SELECT id FROM callback_deliveries
                            WHERE call_id = $1::uuid AND status = 'failed'
                            ORDER BY seq LIMIT 1)
               AND d.status = 'failed'
         RETURNING d.*
        )
        SELECT {_CLAIMED}
          FROM claimed d
          JOIN calls c ON c.id = d.call_id
          JOIN api_keys k ON k.id = c.api_key_id
          JOIN call_events e ON e.call_id = d.call_id AND e.seq = d.seq
        """,
        call_id,
    )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at a delivery, made, and what the delivery becomes after it: delivered (a
    2xx), stopped (a 410), pending again in `retry_in_ms`, or failed (its attempts spent)."""

    delivery_id: str
    attempt: int
    status_code: int | None
    error: str | None
    latency_ms: float
    attempted_at: datetime
    outcome: str
    retry_in_ms: float = 0.0


async def finish_attempts(
    conn: Executor, attempts: Sequence[Attempt], *, claim_next: bool = True
) -> list[asyncpg.Record]:
    """Log the attempts and move their deliveries on, in one statement; a 410 also stops the
    call's later callbacks, and a delivery delivered or spent lets the call's next one go: it is
    claimed here when it is due (as claim_next does). A delivery is moved only by the attempt
    that claimed it last (one whose worker was thought lost is logged, and changes nothing).

    Returns, for each delivery moved: its call (`finished_call_id`), its new status
    (`finished_status`), when a retry is due (`next_attempt_ms`), when delivered how long it took
    from the commit of its transition (`commit_to_delivery_ms`), and the call's next delivery as
    claim_next gives it (`delivery_id` set when claimed; `open_status` NULL when there is none
    in this statement's view, or another of the call's is in flight, or not `claim_next`)."""
    if not attempts:
        return []
    return await conn.fetch(
        f"""
        WITH a AS (
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[], $5::float8[],
                                 $6::timestamptz[], $7::text[], $8::float8[])
                AS a(id, attempt, status_code, error, latency_ms, attempted_at, outcome,
                     retry_in_ms)
        ), logged AS (
            INSERT INTO callback_attempts (delivery_id, attempt, status_code, error, latency_ms,
                                           attempted_at)
            SELECT id, attempt, status_code, error, latency_ms, attempted_at FROM a
            ON CONFLICT DO NOTHING
        ), finished AS (
            UPDATE callback_deliveries d
               SET status = a.outcome,
                   next_attempt_at = CASE WHEN a.outcome = 'pending'
                       THEN clock_timestamp() + make_interval(secs => a.retry_in_ms / 1000)
                       ELSE d.next_attempt_at END,
                   delivered_at = CASE WHEN a.outcome = 'delivered' THEN clock_timestamp() END,
                   last_error = CASE WHEN a.outcome = 'delivered' THEN NULL
                       ELSE coalesce(a.error, 'HTTP ' || a.status_code) END,
                   updated_at = clock_timestamp()
              FROM a
             WHERE d.id = a.id AND d.status = 'delivering' AND d.attempts = a.attempt
         RETURNING d.id, d.call_id, d.status, d.next_attempt_at, d.created_at, d.delivered_at
        ), stopping AS (
            UPDATE calls c SET callbacks_stopped_at = clock_timestamp()
              FROM finished f
             WHERE f.status = 'stopped' AND c.id = f.call_id AND c.callbacks_stopped_at IS NULL
        ), stopped_later AS (
            UPDATE callback_deliveries d SET status = 'stopped', updated_at = clock_timestamp()
              FROM finished f
             WHERE f.status = 'stopped' AND d.call_id = f.call_id AND d.status = 'pending'
        ), next_open AS (
            SELECT DISTINCT ON (n.call_id) n.id, n.call_id, n.status, n.next_attempt_at
              FROM finished f JOIN callback_deliveries n ON n.call_id = f.call_id
             WHERE $9 AND f.status IN ('delivered', 'failed') AND n.status = 'pending'
               AND NOT EXISTS (SELECT 1 FROM callback_deliveries o
                                WHERE o.call_id = f.call_id AND o.status = 'delivering'
                                  AND o.id <> f.id)
             ORDER BY n.call_id, n.seq
        ), claimed AS (
            UPDATE callback_deliveries d
               SET status = 'delivering', attempts = d.attempts + 1,
                   updated_at = clock_timestamp()
              FROM next_open n
             WHERE d.id = n.id AND d.status = 'pending'
               AND d.next_attempt_at <= clock_timestamp()
               AND NOT EXISTS (SELECT 1 FROM calls s
                                WHERE s.id = d.call_id AND s.callbacks_stopped_at IS NOT NULL)
         RETURNING d.*
        )
        SELECT f.id::text AS finished_id, f.call_id::text AS finished_call_id,
               f.status AS finished_status,
               (extract(epoch FROM f.next_attempt_at) * 1000)::bigint AS next_attempt_ms,
               (extract(epoch FROM f.delivered_at - f.created_at) * 1000)::float8
                   AS commit_to_delivery_ms,
               n.call_id::text AS open_call_id, n.status AS open_status,
               (extract(epoch FROM n.next_attempt_at) * 1000)::bigint AS due_ms,
               false AS halted, {_CLAIMED}
          FROM finished f
          LEFT JOIN next_open n ON n.call_id = f.call_id
          LEFT JOIN claimed d ON d.id = n.id
          LEFT JOIN calls c ON c.id = d.call_id
          LEFT JOIN api_keys k ON k.id = c.api_key_id
          LEFT JOIN call_events e ON e.call_id = d.call_id AND e.seq = d.seq
        """,
        [a.delivery_id for a in attempts],
        [a.attempt for a in attempts],
        [a.status_code for a in attempts],
        [None if a.error is None else a.error[:500] for a in attempts],
        [a.latency_ms for a in attempts],
        [a.attempted_at for a in attempts],
        [a.outcome for a in attempts],
        [a.retry_in_ms for a in attempts],
        claim_next,
    )


async def reopen_stranded(conn: Executor, attempt_timeout_ms: int, limit: int) -> list[str]:
    """Give back deliveries claimed longer ago than `attempt_timeout_ms` (their worker died mid
    attempt; the attempt stays counted); returns their calls."""
    rows = await conn.fetch(
        """
        UPDATE callback_deliveries SET status = 'pending', next_attempt_at = clock_timestamp(),
                                       updated_at = clock_timestamp()
         WHERE id IN (SELECT id FROM callback_deliveries
                       WHERE status = 'delivering'
                         AND updated_at < clock_timestamp()
                                          - make_interval(secs => $1::float8 / 1000)
                       ORDER BY next_attempt_at
                       LIMIT $2)
           AND status = 'delivering'
        RETURNING call_id::text
        """,
        attempt_timeout_ms,
        limit,
    )
    return sorted({row["call_id"] for row in rows})


async def fetch_overdue_calls(conn: Executor, grace_ms: int, limit: int) -> list[str]:
    """Calls with a pending delivery due more than `grace_ms` ago (their timer may be lost)."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT call_id::text FROM (
            SELECT call_id FROM callback_deliveries
             WHERE status = 'pending'
               AND next_attempt_at < clock_timestamp() - make_interval(secs => $1::float8 / 1000)
             ORDER BY next_attempt_at
             LIMIT $2
        ) AS overdue
        """,
        grace_ms,
        limit,
    )
    return [row["call_id"] for row in rows]


async def fetch_callback_settings(conn: Executor, call: CallRef) -> asyncpg.Record | None:
    """The status callback of the call its key names `call.ref`, its statuses, and when a 410
    stopped it; None when the key has no such call."""
    return await conn.fetchrow(
        f"""
        SELECT c.status_callback, c.status_callback_events, c.callbacks_stopped_at
          FROM calls c WHERE {NAMED_CALL}
        """,
        *named_call_args(call),
    )


async def fetch_deliveries(
    conn: Executor, call: CallRef, after_seq: int, limit: int
) -> list[asyncpg.Record]:
    """A page of the deliveries of the call its key names `call.ref`, in seq order, each with
    its attempts in order: one row per attempt (a delivery not yet tried: one row, no attempt)."""
    return await conn.fetch(
        f"""
        SELECT d.id::text AS delivery_id, d.seq, e.to_status AS status, d.status AS state,
               d.attempts, d.created_at, d.next_attempt_at, d.delivered_at, d.last_error,
               a.attempt, a.status_code, a.error, a.latency_ms, a.attempted_at
          FROM (SELECT d.* FROM calls c JOIN callback_deliveries d ON d.call_id = c.id
                 WHERE {NAMED_CALL} AND d.seq > $4
                 ORDER BY d.seq LIMIT $5) AS d
          JOIN call_events e ON e.call_id = d.call_id AND e.seq = d.seq
          LEFT JOIN callback_attempts a ON a.delivery_id = d.id
         ORDER BY d.seq, a.attempt
        """,
        *named_call_args(call),
        after_seq,
        limit,
    )
