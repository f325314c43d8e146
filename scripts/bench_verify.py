"""What scripts/bench checks as it goes: every call completed exactly once, with its recording,
its history numbered 1..n and its path one the lifecycle allows; nothing lost; limits held.
Read from PostgreSQL when the benchmark owns the database, else through the API."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from bench_http import Client, closed_loop, percentile

SIMULATED_PATHS = {
    "QUEUED>RINGING>ANSWERED>COMPLETED",
    "QUEUED>RINGING>UNANSWERED>COMPLETED",
}

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


@dataclass
class CallCheck:
    """The verdict on a set of calls: counts of each kind of fault, with a few examples."""

    expected: int = 0
    found: int = 0
    done: int = 0
    lost: int = 0
    unfinished: int = 0
    no_recording: int = 0
    bad_history: int = 0
    completed_twice: int = 0
    bad_path: int = 0
    unexpected: int = 0
    examples: list[str] = field(default_factory=list)
    # Seconds from a call's creation to its recording stored (PostgreSQL's clock).
    lifetimes_s: list[float] = field(default_factory=list)
    first_created: datetime | None = None
    last_created: datetime | None = None
    last_uploaded: datetime | None = None

    @property
    def problems(self) -> int:
        return (
            self.lost
            + self.unfinished
            + self.no_recording
            + self.bad_history
            + self.completed_twice
            + self.bad_path
        )

    def breakdown(self) -> str:
        """The kinds of fault found, e.g. "; 410 unfinished" (empty when none)."""
        kinds = ("lost", "unfinished", "no_recording", "bad_history", "completed_twice", "bad_path")
        found = [f"{getattr(self, k):,} {k.replace('_', ' ')}" for k in kinds if getattr(self, k)]
        return "; " + ", ".join(found) if found else ""

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)

    def summary(self) -> dict[str, Any]:
        lifetimes = sorted(self.lifetimes_s)
        out: dict[str, Any] = {
            k: getattr(self, k)
            for k in (
                "expected",
                "found",
                "done",
                "lost",
                "unfinished",
                "no_recording",
                "bad_history",
                "completed_twice",
                "bad_path",
                "unexpected",
            )
        }
        out["problems"] = self.problems
        out["examples"] = self.examples
        if lifetimes:
            out["created_to_recorded_ms"] = {
                "p50": round(percentile(lifetimes, 50) * 1000, 1),
                "p99": round(percentile(lifetimes, 99) * 1000, 1),
                "max": round(lifetimes[-1] * 1000, 1),
            }
        return out


def judge_rows(
    rows: Iterable[asyncpg.Record | dict[str, Any]],
    expected_ids: set[str] | None,
    *,
    need_recording: bool = True,
) -> CallCheck:
    check = CallCheck()
    seen: set[str] = set()
    for row in rows:
        call_id = row["call_id"]
        seen.add(call_id)
        check.found += 1
        if expected_ids is not None and call_id not in expected_ids:
            check.unexpected += 1
        created = row["created_at"]
        if check.first_created is None or created < check.first_created:
            check.first_created = created
        if check.last_created is None or created > check.last_created:
            check.last_created = created
        if row["status"] != "COMPLETED":
            check.unfinished += 1
            check.note(f"{call_id}: still {row['status']}")
            continue
        ok = True
        if need_recording:
            if row["recording_status"] != "uploaded" or not row["has_url"]:
                check.no_recording += 1
                check.note(f"{call_id}: recording {row['recording_status']}")
                ok = False
            elif row["uploaded_at"] is not None:
                check.lifetimes_s.append((row["uploaded_at"] - created).total_seconds())
                if check.last_uploaded is None or row["uploaded_at"] > check.last_uploaded:
                    check.last_uploaded = row["uploaded_at"]
        n = row["n"] or 0
        if (
            not (
                n == row["seq"] and row["lo"] == 1 and row["hi"] == n and row["distinct_seqs"] == n
            )
            or not row["chain_ok"]
        ):
            check.bad_history += 1
            check.note(f"{call_id}: history {row['path']} (seq {row['seq']})")
            ok = False
        if row["completions"] != 1:
            check.completed_twice += 1
            check.note(f"{call_id}: {row['completions']} completions")
            ok = False
        if row["kind"] == "simulated" and row["path"] not in SIMULATED_PATHS:
            check.bad_path += 1
            check.note(f"{call_id}: path {row['path']}")
            ok = False
        check.done += ok
    if expected_ids is not None:
        check.expected = len(expected_ids)
        missing = expected_ids - seen
        check.lost = len(missing)
        for call_id in list(missing)[:3]:
            check.note(f"{call_id}: answered 201 but not in PostgreSQL")
    else:
        check.expected = check.found
    return check


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
    judged = []
    for call_id, response in zip(done_ids, histories, strict=True):
        events = orjson.loads(response.body).get("data", []) if response else []
        seqs = [e.get("seq") for e in events]
        chain_ok = all(
            events[i].get("previous_status") == events[i - 1].get("status")
            for i in range(1, len(events))
        )
        created = _parse_time(rows[call_id].get("created_at"))
        judged.append(
            {
                "call_id": call_id,
                "kind": "simulated",
                "status": "COMPLETED",
                "seq": len(events),
                "has_url": True,
                "created_at": created,
                "recording_status": "uploaded",
                "uploaded_at": None,
                "n": len(events),
                "lo": min(seqs, default=None),
                "hi": max(seqs, default=None),
                "distinct_seqs": len(set(seqs)),
                "completions": sum(e.get("status") == "COMPLETED" for e in events),
                "path": ">".join(str(e.get("status")) for e in events),
                "chain_ok": chain_ok,
            }
        )
    check = judge_rows(judged, None)
    check.expected = len(call_ids)
    check.unfinished += len(waiting)
    for call_id in waiting[:3]:
        check.note(f"{call_id}: not COMPLETED with a recording_url in time")
    return check, drained


def _parse_time(value: Any) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.min


# -- timer lateness from the Prometheus histogram ------------------------------------------

_BUCKET = re.compile(r'^mockcomms_timer_lateness_seconds_bucket\{le="([^"]+)"\}\s+(\S+)', re.M)
_COUNT = re.compile(r"^mockcomms_timer_lateness_seconds_count\s+(\S+)", re.M)


def lateness_buckets(prometheus_text: str) -> dict[float, float]:
    """Cumulative bucket counts by upper bound in seconds (inf for +Inf)."""
    return {
        (math.inf if le == "+Inf" else float(le)): float(count)
        for le, count in _BUCKET.findall(prometheus_text)
    }


def lateness_figures(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """p99 and max of the timers fired between two readings, as bucket upper bounds (ms)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0
    if not total:
        return {"timers": 0, "p99_ms": None, "max_ms": None, "buckets": {}}
    p99 = next(b for b, c in zip(bounds, counts, strict=True) if c >= 0.99 * total)
    # The highest bucket that gained anything: its bound is what the max is known to be under.
    highest = bounds[0]
    previous = 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative > previous:
            highest = bound
        previous = cumulative
    as_ms = lambda b: None if math.isinf(b) else round(b * 1000, 3)  # noqa: E731
    return {
        "timers": int(total),
        "p99_ms": as_ms(p99),
        "max_ms": as_ms(highest),
        "max_over_last_bucket": math.isinf(highest),
        "buckets": {
            ("+Inf" if math.isinf(b) else f"{b * 1000:g}ms"): int(c)
            for b, c in zip(bounds, counts, strict=True)
        },
    }


# -- where timer lateness comes from: the RQ jobs' own timestamps ---------------------------


async def rq_job_timings(redis: Any, since_ms: float = 0.0, limit: int = 50_000) -> dict[str, Any]:
    """Split the life of the RQ jobs still kept in Redis (RQ keeps a finished job for its
    result TTL) into its stages, per queue, in ms: enqueued → started (waiting for a worker),
    started → ended (running: a job takes due timers until none is due or JOB_DRAIN_MS is up).
    Jobs enqueued before `since_ms` (epoch ms) are left out."""
    from datetime import UTC

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
