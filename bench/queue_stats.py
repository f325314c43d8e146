"""Times the queue statistics at ten million calls and 100 queues: the SQL of each route, and the
routes themselves through a running API process.

    .venv/bin/python -m bench.queue_stats [--rows 10000000] [--queues 100] [--days 31]

Makes a scratch database on the server of DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/postgres; dropped at the end) and fills it with `--rows`
calls of one key over `--days` days up to now, spread over `--queues` queues and five agents
each: 70% answered (waits of 0-36 s, so some beyond the service level; talks of 1-5 minutes),
10% answered and held 30 s, 15% abandoned, 5% unanswered, 10% video, the newest 2,000 still
waiting or on hold. The rollups are then counted by `python -m db stats rebuild`'s own code
(db.stats.rebuild_stats, timed), and a few seconds' worth of deltas left unfolded, as upkeep
leaves them between passes. Then, `--runs` times each: the statements the routes send (the
median and p99 of each), and the routes over HTTP from one client, one request at a time, to an
API process (`python -m api`) on that database and a private redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg

from bench.stats import percentile
from calls import stats
from db import stats as db_stats
from db.pool import GENERAL_SETTINGS, connect
from devstack.databases import LOCAL_SERVER_DSN, scratch_database, server_dsn
from devstack.keys import new_key
from devstack.layout import start_process
from devstack.ports import free_port
from devstack.redis import RedisServer

ACTIVE = 2_000
AGENTS_PER_QUEUE = 5


async def fill(conn: asyncpg.Connection, key_id: str, rows: int, queues: int, days: int) -> None:
    await conn.execute("SET synchronous_commit = off")
    # Call i started i/rows of the days ago; its outcome is i % 20.
    await conn.execute(
        """
        INSERT INTO calls (id, api_key_id, kind, status, call_type, queue_id, agent_id,
                           end_reason, flags, seq, created_at, started_at, routed_at,
                           answered_at, held_at, ended_at)
        SELECT gen_random_uuid(), $1, 'ingested',
               CASE WHEN active THEN (CASE WHEN i % 3 = 0 THEN 'ON_HOLD' ELSE 'QUEUED' END)
                    ELSE 'COMPLETED' END,
               CASE WHEN i % 10 = 0 THEN 'video' ELSE 'voice' END,
               'q' || (i % $3), CASE WHEN routed THEN 'a' || (i % $3) || '-' || (i % 5) END,
               CASE WHEN active THEN NULL WHEN outcome BETWEEN 14 AND 16 THEN 'abandoned'
                    ELSE 'completed' END,
               CASE WHEN answered AND wait_s > 30 THEN ARRAY['wait_sla_exceeded']
                    ELSE '{}' END,
               CASE WHEN outcome = 18 AND NOT active THEN 6 ELSE 4 END,
               started, started, CASE WHEN routed THEN started + interval '1 second' END,
               CASE WHEN answered THEN started + make_interval(secs => wait_s) END,
               CASE WHEN outcome = 18 AND answered
                    THEN started + make_interval(secs => wait_s + 10) END,
               CASE WHEN NOT active THEN
                    started + make_interval(secs => CASE WHEN answered THEN wait_s + 60 + i % 240
                                                         ELSE i % 60 END) END
          FROM (SELECT i, i % 20 AS outcome, i <= $5 AS active, i % 37 AS wait_s,
                       now() - make_interval(secs => $4::float8 * 86400 * i / $2) AS started,
                       (i <= $5 AND i % 3 = 0)
                           OR (i > $5 AND (i % 20 < 14 OR i % 20 >= 17)) AS routed,
                       (i <= $5 AND i % 3 = 0)
                           OR (i > $5 AND (i % 20 < 14 OR i % 20 >= 18)) AS answered
                  FROM generate_series(1, $2) AS i) AS c
        """,
        key_id,
        rows,
        queues,
        days,
        ACTIVE,
    )
    # The held calls' holds: call_hold, then call_resumed 30 s later.
    await conn.execute(
        """
        INSERT INTO call_events (call_id, seq, event, from_status, to_status, occurred_at)
        SELECT id, e.seq, e.event, e.from_status, e.to_status, e.at
          FROM calls,
               LATERAL (VALUES (4, 'call_hold', 'ANSWERED', 'ON_HOLD', held_at),
                               (5, 'call_resumed', 'ON_HOLD', 'ANSWERED',
                                held_at + interval '30 seconds'))
                   AS e(seq, event, from_status, to_status, at)
         WHERE held_at IS NOT NULL AND status = 'COMPLETED'
        """
    )


async def leave_deltas(conn: asyncpg.Connection, key_id: str, queues: int) -> None:
    """A few seconds of traffic not folded yet: 1,000 rows over the last minutes."""
    await conn.execute(
        """
        INSERT INTO stats_deltas (api_key_id, queue_id, call_type, agent_id, minute, offered,
                                  answered, answered_in_sl, wait_ms)
        SELECT $1, 'q' || (i % $2), 'voice', 'a' || (i % $2) || '-0',
               date_trunc('minute', now() - make_interval(mins => i % 5), 'UTC'), 1, 1, 1, 4000
          FROM generate_series(1, 1000) AS i
        """,
        key_id,
        queues,
    )


async def timed(run: Callable[[], Awaitable[object]], runs: int) -> tuple[float, float]:
    """(median, p99) of `runs` runs, in ms, after one to warm up."""
    await run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await run()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), percentile(times, 99)


async def over_sql(conn: asyncpg.Connection, key_id: str, runs: int) -> None:
    now = datetime.now(UTC)
    day = stats.window_of("24h", None, None, now)
    month = stats.window_of(None, day.until - stats.MAX_WINDOW, day.until, now)
    every = db_stats.StatsFilter()
    limit = stats.MAX_PER_ANSWER + 1

    def queues(window: stats.Window) -> Callable[[], Awaitable[object]]:
        return lambda: stats.read_queues(conn, key_id, window, every, 1.0, limit)

    def series(bucket: str) -> Callable[[], Awaitable[object]]:
        step, span = stats.BUCKETS[bucket]
        window = stats.window_of("24h", None, None, now, step)
        seconds = int(step.total_seconds())

        async def run() -> object:
            await db_stats.has_queue(conn, key_id, "q7")
            return await db_stats.fetch_queue_series(
                conn, key_id, "q7", span, window.since, window.until, seconds, None
            )

        return run

    def agents(window: stats.Window) -> Callable[[], Awaitable[object]]:
        ranges = stats.ranges_of(window.since, window.until)
        return lambda: db_stats.fetch_agent_figures(conn, key_id, ranges, every, limit=limit)

    print(f"\n{'statement (SQL only)':<52} {'median ms':>10} {'p99 ms':>8}")
    for name, run in (
        ("/stats/queues?window=24h (100 queues)", queues(day)),
        ("/stats/queues over 31 days", queues(month)),
        ("/stats/queues/q7/series 24h at 1m (1,440 points)", series("1m")),
        ("/stats/queues/q7/series 24h at 5m", series("5m")),
        ("/stats/queues/q7/series 24h at 1h", series("1h")),
        ("/stats/agents?window=24h (500 agents)", agents(day)),
        ("/stats/agents over 31 days", agents(month)),
    ):
        median, p99 = await timed(run, runs)
        print(f"{name:<52} {median:>10.1f} {p99:>8.1f}")


async def over_http(dsn: str, secret: str, runs: int, workdir: Path) -> None:
    redis = RedisServer(workdir / "redis.log")
    redis.start()
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": dsn,
        "REDIS_URL": redis.url(),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    api = start_process("api", "api", env, workdir)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get(base + "/ready") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline or not api.alive:
                    raise RuntimeError("the API did not start: see " + str(workdir / "api.log"))
                await asyncio.sleep(0.2)

            def get(path: str) -> Callable[[], Awaitable[object]]:
                async def run() -> object:
                    async with http.get(base + path) as response:
                        assert response.status == 200, await response.text()
                        return await response.read()

                return run

            print(f"\n{'route (HTTP, one client)':<52} {'median ms':>10} {'p99 ms':>8}")
            for path in (
                "/stats/queues?window=24h",
                "/stats/queues/q7/series?window=24h&bucket=1m",
                "/stats/agents?window=24h",
            ):
                median, p99 = await timed(get(path), runs)
                print(f"{path:<52} {median:>10.1f} {p99:>8.1f}")
    finally:
        api.stop()
        redis.stop()


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()

    async with scratch_database(server_dsn(LOCAL_SERVER_DSN), "mc_bench") as dsn:
        conn = await connect(dsn)
        try:
            key = await new_key(conn, "bench-stats")
            started = time.perf_counter()
            await fill(conn, key.id, args.rows, args.queues, args.days)
            print(
                f"{args.rows:,} calls over {args.queues} queues and {args.days} days loaded in"
                f" {time.perf_counter() - started:.0f} s"
            )
            started = time.perf_counter()
            counted = await db_stats.rebuild_stats(
                conn, db_stats.Measures(20_000, 5_000, 1.0), None
            )
            print(
                f"rollups rebuilt from {counted:,} calls in {time.perf_counter() - started:.0f} s"
            )
            await leave_deltas(conn, key.id, args.queues)
            for table in ("calls", "call_events", "queue_stats", "agent_stats", "stats_deltas"):
                await conn.execute(f"VACUUM ANALYZE {table}")
            for table in ("queue_stats", "agent_stats"):
                count = await conn.fetchval(f"SELECT count(*) FROM {table}")
                print(f"{table}: {count:,} rows")
            # Planned as the API's pool plans them.
            for name, value in GENERAL_SETTINGS.items():
                await conn.execute(f"SET {name} = '{value}'")
            await over_sql(conn, key.id, args.runs)
        finally:
            await conn.close()
        with tempfile.TemporaryDirectory(prefix="mc-bench-stats-") as workdir:
            await over_http(dsn, key.secret, args.runs, Path(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
