"""Times `GET /calls` pages and `/metrics` on a million calls (or ten) and prints the plans.

    .venv/bin/python -m bench.lists [--rows 1000000] [--keys 4]

Makes a scratch database on the server of DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/postgres; dropped at the end), fills it with
`--rows` calls spread over `--keys` keys (one key holds half of them), a recording for each
completed one, and their counters, then runs the same SQL the API sends: for each filter of the
list route (db.calls.fetch_calls_page) the median time of a first page, a deep page, and the
plan's top nodes; and the counters of `/metrics` (db.counters.fetch_counters) for the platform
and for the big key, beside the statement `/metrics` ran before the counters were kept
(counting every row of calls and recordings).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid

import asyncpg

from db.calls import CallFilter, fetch_calls_page
from db.counters import fetch_counters
from db.pool import connect
from devstack.databases import LOCAL_SERVER_DSN, scratch_database, server_dsn

FILTERS = {
    "none": CallFilter(),
    "status=ANSWERED": CallFilter(status="ANSWERED"),
    "flag=wait_sla_exceeded": CallFilter(flag="wait_sla_exceeded"),
    "queue_id=q7": CallFilter(queue_id="q7"),
    "type=video": CallFilter(call_type="video"),
    "status+type": CallFilter(status="COMPLETED", call_type="voice"),
}


async def fill(conn: asyncpg.Connection, rows: int, keys: list[str]) -> None:
    for key in keys:
        await conn.execute(
            "INSERT INTO api_keys (id, name, key_hash, key_prefix) VALUES ($1, $2, $3, 'x')",
            key,
            f"bench-{key}",
            uuid.UUID(key).bytes * 2,
        )
    # Half the calls to the first key, the rest spread; ~3% flagged, 20 queues, 10% video.
    await conn.execute(
        """
        INSERT INTO calls (id, api_key_id, kind, status, from_number, to_number, flags,
                           call_type, queue_id, created_at, started_at)
        SELECT gen_random_uuid(),
               CASE WHEN i % 2 = 0 THEN ($2::uuid[])[1]
                    ELSE ($2::uuid[])[1 + i % cardinality($2::uuid[])] END,
               'ingested',
               (ARRAY['QUEUED', 'RINGING', 'ANSWERED', 'ON_HOLD', 'UNANSWERED',
                      'COMPLETED'])[1 + (i * 7) % 6],
               '+14155550100', '+14155550199',
               CASE WHEN i % 33 = 0 THEN ARRAY['wait_sla_exceeded'] ELSE '{}' END,
               CASE WHEN i % 10 = 0 THEN 'video' ELSE 'voice' END,
               'q' || (i % 20),
               now() - make_interval(secs => i / 100.0), now()
          FROM generate_series(1, $1) AS i
        """,
        rows,
        keys,
    )
    await conn.execute(
        """
        INSERT INTO recordings (call_id, status, storage_key)
        SELECT id, 'uploaded', 'recordings/' || id || '.wav' FROM calls WHERE status = 'COMPLETED'
        """
    )
    # The counters, as 0006_counters.sql counts what is there when it is applied.
    await conn.execute(
        """
        INSERT INTO counter_totals (api_key_id, calls_created, calls_completed, uploads_opened,
                                    uploads_stored, uploads_failed)
        SELECT c.api_key_id, count(*), count(*) FILTER (WHERE c.status = 'COMPLETED'),
               count(r.call_id), count(*) FILTER (WHERE r.status = 'uploaded'),
               count(*) FILTER (WHERE r.status = 'failed')
          FROM calls c LEFT JOIN recordings r ON r.call_id = c.id
         GROUP BY c.api_key_id
        """
    )
    await conn.execute("VACUUM ANALYZE calls")
    await conn.execute("VACUUM ANALYZE recordings")


# What `/metrics` ran before the counters were kept (every row of calls and recordings).
METRICS_BEFORE = """
    SELECT (SELECT count(*) FROM calls) AS total_calls,
           (SELECT count(*) FROM calls WHERE status <> 'COMPLETED') AS active_calls,
           (SELECT count(*) FROM calls WHERE created_at > now() - interval '1 second') AS cps,
           (SELECT count(*) FROM recordings WHERE status IN ('pending', 'uploading')) AS up,
           (SELECT count(*) FROM recordings WHERE status = 'uploaded') AS done,
           (SELECT count(*) FROM recordings WHERE status = 'failed') AS failed
"""


async def timed_ms(run) -> float:
    """The median of seven runs, in ms."""
    times = []
    for _ in range(7):
        start = time.perf_counter()
        await run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def measure(conn: asyncpg.Connection, key: str, where: CallFilter, offset: int) -> float:
    times = []
    for _ in range(7):
        start = time.perf_counter()
        await fetch_calls_page(conn, key, where, limit=20, offset=offset)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def plan(conn: asyncpg.Connection, key: str, where: CallFilter) -> str:
    """The plan of the page query, captured by running it under auto_explain-like EXPLAIN."""
    captured: list[str] = []

    class Explaining:
        async def fetch(self, sql: str, *args):
            rows = await conn.fetch("EXPLAIN " + sql, *args)
            captured.extend(row[0] for row in rows)
            return []

    await fetch_calls_page(Explaining(), key, where, limit=20, offset=0)  # type: ignore[arg-type]
    return "\n".join("      " + line for line in captured if "Scan" in line or "Limit" in line)


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=4)
    args = parser.parse_args()

    async with scratch_database(server_dsn(LOCAL_SERVER_DSN), "mc_bench") as dsn:
        conn = await connect(dsn)
        try:
            keys = [str(uuid.uuid4()) for _ in range(args.keys)]
            started = time.perf_counter()
            await fill(conn, args.rows, keys)
            loaded_s = time.perf_counter() - started
            print(f"{args.rows:,} calls over {args.keys} keys loaded in {loaded_s:.1f} s")
            big = keys[0]
            print(f"\n{'/metrics':<40} {'ms':>8}")
            for name, run in (
                ("before: counting the tables", lambda: conn.fetchrow(METRICS_BEFORE)),
                ("counters, platform-wide", lambda: fetch_counters(conn)),
                ("counters, the big key (?scope=key)", lambda: fetch_counters(conn, big)),
            ):
                print(f"{name:<40} {await timed_ms(run):>8.1f}")
            print(f"\n{'filter':<24} {'matching':>10} {'page 1 ms':>10} {'page 500 ms':>12}")
            for name, where in FILTERS.items():
                _, total = await fetch_calls_page(conn, big, where, limit=20, offset=0)
                first = await measure(conn, big, where, 0)
                deep = await measure(conn, big, where, 20 * 499)
                print(f"{name:<24} {total:>10,} {first:>10.1f} {deep:>12.1f}")
                print(await plan(conn, big, where))
        finally:
            await conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
