"""`purge`: the request figures while upkeep deletes a million ended calls past RETENTION_DAYS:
`POST /calls` open-loop latency and `GET /calls/{id}` throughput first on a quiet platform,
then again with the calls past their retention put in (with their history and upload rows) and
upkeep deleting them; and how fast it deletes."""

from __future__ import annotations

import time

import orjson

from bench import wrk as wrk_runner
from bench.http import closed_loop
from bench.scenarios.drive import CALL_BODY, open_loop_run
from bench.session import Bench

# Calls put past their retention: a million at the load, fewer in a smoke run.
EXPIRED_FULL, EXPIRED_QUICK = 1_000_000, 50_000
# POST /calls is sent at this rate in both halves (the e2e target's).
POST_RATE = 500


async def purge(b: Bench) -> None:
    """Request figures without, then during, a purge of a million ended calls."""
    if not b.owns_database:
        b.say("  [yellow]needs the benchmark's own platform (its database): skipped[/yellow]")
        return
    assert b.system is not None and b.system.pool is not None
    secret, key_id = await b.key("purge")
    ids = await _calls_to_read(b, secret)
    paths = [f"/calls/{i}" for i in ids]
    script = wrk_runner.lua_script("GET", paths, headers={"Authorization": f"Bearer {secret}"})
    detail = b.detail("purge")

    quiet = await _figures(b, secret, script, "without a purge")
    expired = EXPIRED_QUICK if b.opts.quick else EXPIRED_FULL
    async with b.task(f"putting {expired:,} calls past their retention", None):
        started = time.monotonic()
        await _expired_calls(b, key_id, expired)
        detail["filled_s"] = round(time.monotonic() - started, 1)
    left_before = await _left(b, key_id)
    started = time.monotonic()
    during = await _figures(b, secret, script, "during the purge")
    purged = left_before - await _left(b, key_id)
    rate = purged / (time.monotonic() - started)
    detail.update({"without": quiet, "during": during, "expired": expired, "purged": purged})
    b.say(f"  upkeep deleted {purged:,} of {expired:,} calls meanwhile: {rate:,.0f}/s")
    b.add(
        "purge_post_p99_ms",
        during["post_p99_ms"],
        ceiling=quiet["post_p99_ms"],
        note=f"{POST_RATE}/s open loop; without a purge {quiet['post_p99_ms']:.1f} ms",
    )
    b.add(
        "purge_get_per_s",
        during["get_per_s"],
        ceiling=quiet["get_per_s"],
        note=f"without a purge {quiet['get_per_s']:,.0f}/s",
    )
    b.add("purge_calls_per_s", round(rate, 1), note=f"{purged:,} deleted while measuring")


async def _calls_to_read(b: Bench, secret: str) -> list[str]:
    client = b.client(secret, 32)
    body = CALL_BODY.encode()
    answers = await closed_loop(client, 300, 32, lambda i: client.raw("POST", "/calls", body))
    await client.close()
    return [orjson.loads(a.body)["call_id"] for a in answers if a is not None and a.status == 201]


async def _figures(b: Bench, secret: str, script: str, when: str) -> dict[str, float]:
    client = b.client(secret, 256)
    raw = client.raw("POST", "/calls", CALL_BODY.encode())
    posted = await open_loop_run(
        b, f"POST /calls {when}", client, lambda i: raw, POST_RATE, b.load.duration_s
    )
    await client.close()
    got = await b.wrk(f"GET /calls/{{id}} {when}", b.base_url, script, 64)
    return {"post_p99_ms": posted["latency_ms"]["p99"], "get_per_s": round(got.ok_per_s, 1)}


async def _expired_calls(b: Bench, key_id: str | None, count: int) -> None:
    """`count` calls of the key stored as ended 60 days ago (past the default 30), each with a
    four-event history and an uploaded recording's row: what a month of traffic leaves."""
    assert b.system is not None and b.system.pool is not None
    pool = b.system.pool
    # One statement: upkeep would otherwise delete a call before its history is in.
    await pool.execute(
        """
        WITH made AS (
            INSERT INTO calls (id, api_key_id, kind, status, seq, from_number, to_number,
                               created_at, updated_at, status_changed_at, started_at,
                               ended_at, ref)
            SELECT gen_random_uuid(), $1, 'simulated', 'COMPLETED', 4, '+14155550100',
                   '+14155550199', t, t, t, t, t, 'expired-' || i
              FROM (SELECT i, now() - interval '60 days' - make_interval(secs => i / 100.0)
                           AS t
                      FROM generate_series(1, $2) AS i) AS s
         RETURNING id, ended_at
        ), history AS (
            INSERT INTO call_events (call_id, seq, event, to_status, occurred_at, created_at)
            SELECT made.id, s.seq, 'call_initiated', 'COMPLETED', made.ended_at, made.ended_at
              FROM made CROSS JOIN generate_series(1, 4) AS s(seq)
        )
        INSERT INTO recordings (call_id, status, storage_key)
        SELECT id, 'uploaded', 'recordings/' || id || '.wav' FROM made
        """,
        key_id,
        count,
    )
    await pool.execute("ANALYZE calls")


async def _left(b: Bench, key_id: str | None) -> int:
    assert b.system is not None and b.system.pool is not None
    return await b.system.pool.fetchval(
        "SELECT count(*) FROM calls WHERE api_key_id = $1 AND ref LIKE 'expired-%'", key_id
    )
