"""What the benchmark reads back to check a run: a key's calls and their histories from
PostgreSQL when the run owns the database, else through the API; how far the calls have got;
the RQ jobs' own timestamps. bench/verify.py judges what these return."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from bench.http import Client, closed_loop
from bench.stats import percentile
from bench.verify import CallCheck, judge_rows, row_from_api

_CALLS_OF_KEY = """
WITH c AS (
    SELECT id, kind, status, seq, recording_url, created_at, ended_at
      FROM calls WHERE api_key_id = $1
), e AS (
    SELECT call_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi,
           count(DISTINCT seq) AS distinct_seqs,
           count(*) FILTER (WHERE to_status = 'COMPLETED') AS completions,
           string_agg(to_status, '>' ORDER BY seq) AS path,
           bool_and(chain_ok) AS chain_ok
      FROM (SELECT call_id, seq, to_status,
                   from_status IS NOT DISTINCT FROM
                       lag(to_status) OVER (PARTITION BY call_id ORDER BY seq) AS chain_ok
              FROM call_events WHERE call_id IN (SELECT id FROM c)) AS ev
     GROUP BY call_id
)
SELECT c.id::text AS call_id, c.kind, c.status, c.seq, c.recording_url IS NOT NULL AS has_url,
       c.created_at, c.ended_at, r.status AS recording_status, r.updated_at AS uploaded_at,
       e.n, e.lo, e.hi, e.distinct_seqs, e.completions, e.path, e.chain_ok
  FROM c LEFT JOIN e ON e.call_id = c.id LEFT JOIN recordings r ON r.call_id = c.id
"""


async def calls_of_key(pool: asyncpg.Pool, key_id: str) -> list[asyncpg.Record]:
    # A key made after the last ANALYZE has no calls as far as the statistics know, and the
    # planner then loops over call_events once per call: minutes for 50,000 calls. Hash joins
    # read each table once whatever the estimates.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_nestloop = off")
        return await conn.fetch(_CALLS_OF_KEY, key_id)


async def wait_drained(
    pool: asyncpg.Pool,
    key_id: str,
    timeout_s: float,
    *,
    need_recording: bool = True,
    on_tick: Callable[[int, int], None] | None = None,
) -> float | None:
    """Wait until every call of the key is COMPLETED (with its recording stored); returns how
    long that took, or None on timeout."""
    started = time.monotonic()
    while True:
        row = await pool.fetchrow(
            """
            SELECT count(*) AS total,
                   count(*) FILTER (WHERE c.status = 'COMPLETED'
                                     AND ($2 = false OR r.status = 'uploaded')) AS done
              FROM calls c LEFT JOIN recordings r ON r.call_id = c.id
             WHERE c.api_key_id = $1
            """,
            key_id,
            need_recording,
        )
        if on_tick is not None:
            on_tick(row["done"], row["total"])
        if row["done"] == row["total"]:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            return None
        await asyncio.sleep(0.5)


async def count_done(pool: asyncpg.Pool, key_id: str) -> tuple[int, int]:
    """(calls COMPLETED with their recording stored, calls) of a key, right now."""
    row = await pool.fetchrow(
        """
        SELECT count(*) AS total,
               count(*) FILTER (WHERE c.status = 'COMPLETED' AND r.status = 'uploaded') AS done
          FROM calls c LEFT JOIN recordings r ON r.call_id = c.id
         WHERE c.api_key_id = $1
        """,
        key_id,
    )
    return row["done"], row["total"]


# -- through the API (another implementation, or a platform whose database is not ours) -------


async def verify_via_api(
    client: Client,
    call_ids: list[str],
    timeout_s: float,
    on_tick: Callable[[int, int], None] | None = None,
) -> tuple[CallCheck, float | None]:
    """Poll each call through GET /calls/{id} until it is COMPLETED with a recording_url, then
    check its history through GET /calls/{id}/events. Returns the verdict and how long the
    last call took to be seen done (None when some never were)."""
    started = time.monotonic()
    waiting = list(call_ids)
    rows: dict[str, dict[str, Any]] = {}
    while waiting:
        asking = list(waiting)
        answers = await closed_loop(
            client, len(asking), 32, lambda i, ids=asking: client.raw("GET", f"/calls/{ids[i]}")
        )
        still = []
        for call_id, response in zip(waiting, answers, strict=True):
            body = orjson.loads(response.body) if response and response.status == 200 else None
            if body and body.get("status") == "COMPLETED" and body.get("recording_url"):
                rows[call_id] = body
            else:
                still.append(call_id)
        waiting = still
        if on_tick is not None:
            on_tick(len(call_ids) - len(waiting), len(call_ids))
        if waiting and time.monotonic() - started > timeout_s:
            break
        if waiting:
            await asyncio.sleep(0.5)
    drained = None if waiting else time.monotonic() - started

    done_ids = list(rows)
    histories = await closed_loop(
        client, len(done_ids), 32, lambda i: client.raw("GET", f"/calls/{done_ids[i]}/events")
    )
    judged = [
        row_from_api(
            call_id, rows[call_id], orjson.loads(response.body).get("data", []) if response else []
        )
        for call_id, response in zip(done_ids, histories, strict=True)
    ]
    check = judge_rows(judged, None)
    check.expected = len(call_ids)
    check.unfinished += len(waiting)
    for call_id in waiting[:3]:
        check.note(f"{call_id}: not COMPLETED with a recording_url in time")
    return check, drained


# -- where timer lateness comes from: the RQ jobs' own timestamps ---------------------------


async def rq_job_timings(redis: Any, since_ms: float = 0.0, limit: int = 50_000) -> dict[str, Any]:
    """Split the life of the RQ jobs still kept in Redis (RQ keeps a finished job for its
    result TTL) into its stages, per queue, in ms: enqueued → started (waiting for a worker),
    started → ended (running: a job takes due timers until none is due or JOB_DRAIN_MS is up).
    Jobs enqueued before `since_ms` (epoch ms) are left out."""

    def when(raw: bytes | None) -> float | None:
        if not raw:
            return None
        stamp = datetime.strptime(raw.decode(), "%Y-%m-%dT%H:%M:%S.%fZ")
        return stamp.replace(tzinfo=UTC).timestamp() * 1000

    keys = []
    async for key in redis.scan_iter(match="rq:job:*", count=1000):
        if key.count(b":") == 2:  # rq:job:<id>, not its sub-keys
            keys.append(key)
        if len(keys) >= limit:
            break
    stages: dict[str, dict[str, list[float]]] = {}
    for start in range(0, len(keys), 500):
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 500]:
                pipe.hmget(key, "origin", "enqueued_at", "started_at", "ended_at")
            replies = await pipe.execute()
        for origin, enqueued, started, ended in replies:
            t_enq, t_start, t_end = when(enqueued), when(started), when(ended)
            if origin is None or t_enq is None or t_start is None or t_end is None:
                continue
            if t_enq < since_ms:
                continue
            queue = stages.setdefault(origin.decode(), {"waiting": [], "running": []})
            queue["waiting"].append(t_start - t_enq)
            queue["running"].append(t_end - t_start)
    out: dict[str, Any] = {}
    for queue, values in stages.items():
        summary: dict[str, Any] = {"jobs": len(values["waiting"])}
        for stage in ("waiting", "running"):
            ordered = sorted(values[stage])
            if ordered:
                summary[f"{stage}_ms"] = {
                    "p50": round(percentile(ordered, 50), 1),
                    "p99": round(percentile(ordered, 99), 1),
                    "max": round(ordered[-1], 1),
                }
        out[queue] = summary
    return out


async def busy_counts(pool: asyncpg.Pool) -> tuple[int, int]:
    """(simulated calls not yet COMPLETED, recordings not yet stored) of every key."""
    row = await pool.fetchrow(
        """
        SELECT (SELECT count(*) FROM calls
                 WHERE status <> 'COMPLETED' AND kind = 'simulated') AS active,
               (SELECT count(*) FROM recordings
                 WHERE status IN ('pending', 'uploading')) AS uploads
        """
    )
    return row["active"], row["uploads"]


async def lifetimes(pool: asyncpg.Pool, key_id: str) -> list[tuple[datetime, datetime | None]]:
    """(created_at, ended_at) of each of a key's calls, in order of creation."""
    rows = await pool.fetch(
        "SELECT created_at, ended_at FROM calls WHERE api_key_id = $1 ORDER BY created_at", key_id
    )
    return [(r["created_at"], r["ended_at"]) for r in rows]


async def transition_gaps(pool: asyncpg.Pool, key_id: str) -> list[tuple[str, float | None]]:
    """(from_status, ms since the call's previous transition) of each transition of a key's
    simulated calls."""
    rows = await pool.fetch(
        """
        SELECT from_status, extract(epoch FROM occurred_at - lag(occurred_at)
                   OVER (PARTITION BY call_id ORDER BY seq)) * 1000 AS gap_ms
          FROM call_events
         WHERE call_id IN (SELECT id FROM calls WHERE api_key_id = $1 AND kind = 'simulated')
        """,
        key_id,
    )
    return [(r["from_status"], r["gap_ms"]) for r in rows]


async def count_calls(pool: asyncpg.Pool, key_ids: list[str]) -> int:
    """How many calls these keys have."""
    return await pool.fetchval(
        "SELECT count(*) FROM calls WHERE api_key_id = ANY($1::uuid[])", key_ids
    )


async def callback_commits(pool: asyncpg.Pool, key_id: str) -> dict[tuple[str, int], float]:
    """Every transition of a key's calls that is to be called back, (call id, seq) -> when its
    delivery was written with it (epoch ms, PostgreSQL's clock)."""
    rows = await pool.fetch(
        """
        SELECT d.call_id::text, d.seq, extract(epoch FROM d.created_at)::float8 * 1000 AS ms
          FROM callback_deliveries d JOIN calls c ON c.id = d.call_id
         WHERE c.api_key_id = $1
        """,
        key_id,
    )
    return {(row["call_id"], row["seq"]): row["ms"] for row in rows}


async def transitions_without_callback(pool: asyncpg.Pool, key_id: str) -> int:
    """Transitions of a key's calls that have no callback delivery (each should have one)."""
    return await pool.fetchval(
        """
        SELECT count(*) FROM call_events e JOIN calls c ON c.id = e.call_id
         WHERE c.api_key_id = $1
           AND NOT EXISTS (SELECT 1 FROM callback_deliveries d
                            WHERE d.call_id = e.call_id AND d.seq = e.seq)
        """,
        key_id,
    )


async def open_callbacks(pool: asyncpg.Pool, key_id: str | None = None) -> int:
    """Status callback deliveries not yet delivered, stopped or spent (of one key, or all)."""
    return await pool.fetchval(
        """
        SELECT count(*) FROM callback_deliveries d
         WHERE d.status IN ('pending', 'delivering')
           AND ($1::uuid IS NULL
                OR d.call_id IN (SELECT id FROM calls WHERE api_key_id = $1::uuid))
        """,
        key_id,
    )
