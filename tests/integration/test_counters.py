"""The platform's counters are kept as calls move: `/metrics` and a key's call count read a few
rows however many calls are stored, and stay exact (upkeep folds the deltas into totals)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg

from db.counters import BREACHES_COUNTED, fetch_call_counts, fetch_counters
from tests.integration.conftest import Api
from tests.integration.platform import Platform

TIMEOUT_S = 15.0


async def counted_by_hand(pg: asyncpg.Connection) -> dict[str, int]:
    """The six figures counted from the tables themselves."""
    row = await pg.fetchrow(
        """
        SELECT (SELECT count(*) FROM calls) AS total_calls,
               (SELECT count(*) FROM calls WHERE status <> 'COMPLETED') AS active_calls,
               (SELECT count(*) FROM recordings WHERE status IN ('pending', 'uploading'))
                   AS uploads_in_progress,
               (SELECT count(*) FROM recordings WHERE status = 'uploaded') AS uploads_completed
        """
    )
    figures = dict(row)
    figures["completed_calls"] = figures["total_calls"] - figures["active_calls"]
    return figures


async def metrics(api: Api) -> dict[str, Any]:
    status, body, _ = await api.request("GET", "/metrics")
    assert status == 200
    return body


async def test_metrics_stay_exact_as_calls_move_and_upkeep_folds_what_they_wrote(
    api: Api, pg
) -> None:
    created = [(await api.create_call())[1]["call_id"] for _ in range(10)]
    for _ in range(3):
        await api.request(
            "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
        )
    for call_id in created:
        await api.wait_recorded(call_id, TIMEOUT_S)

    # Other tests run on the same platform: compare once the platform is quiet.
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        by_hand = await counted_by_hand(pg)
        shown = await metrics(api)
        if all(shown[name] == value for name, value in by_hand.items()):
            break
        assert time.monotonic() < deadline, (shown, by_hand)
        await asyncio.sleep(0.2)

    # Upkeep folds the deltas into one total per key within a pass; the figures do not move.
    deadline = time.monotonic() + 5
    while await pg.fetchval("SELECT count(*) FROM counter_deltas"):
        assert time.monotonic() < deadline, "deltas were never folded"
        await asyncio.sleep(0.1)
    after = await metrics(api)
    assert {name: after[name] for name in by_hand} == by_hand


async def test_a_keys_unfiltered_call_count_comes_from_its_counter(make_api) -> None:
    api = await make_api(max_concurrent=100, max_cps=100)
    for _ in range(7):
        await api.create_call()
    _, page, _ = await api.request("GET", "/calls?limit=5")
    assert (page["total"], len(page["data"]), page["totalPages"]) == (7, 5, 2)
    _, page, _ = await api.request("GET", "/calls?status=COMPLETED&limit=5")
    assert page["total"] <= 7


class Captured:
    """Stands in for a connection: keeps the statement instead of running it."""

    def __init__(self) -> None:
        self.query = ""
        self.args: tuple[Any, ...] = ()

    async def fetchrow(self, query: str, *args: Any) -> None:
        self.query, self.args = query, args


def relations_scanned(plan: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(node type, relation, index condition) of every scan in a plan."""
    found = []
    if "Relation Name" in plan:
        found.append((plan["Node Type"], plan["Relation Name"], plan.get("Index Cond", "")))
    for child in plan.get("Plans", []):
        found += relations_scanned(child)
    return found


async def test_metrics_read_the_counters_not_the_calls(platform: Platform, pg) -> None:
    """With 200,000 more calls stored, the statement reads the counter tables and, of `calls`,
    only what was created in the last second (its BRIN index): no scan of the table. (In a
    transaction rolled back after, so the other tests' figures are untouched.)"""
    transaction = pg.transaction()
    await transaction.start()
    try:
        await plan_with_many_calls(pg)
    finally:
        await transaction.rollback()


async def plan_with_many_calls(pg: asyncpg.Connection) -> None:
    key_id = await pg.fetchval(
        "INSERT INTO api_keys (name, key_hash, key_prefix) VALUES ('bulk', 'bulk', 'bulk')"
        " ON CONFLICT (name) DO UPDATE SET name = 'bulk' RETURNING id"
    )
    await pg.execute(
        """
        INSERT INTO calls (id, api_key_id, kind, status, created_at, updated_at,
                           status_changed_at, started_at)
        SELECT gen_random_uuid(), $1, 'simulated', 'COMPLETED', t, t, t, t
          FROM generate_series(now() - interval '30 days', now() - interval '1 hour',
                               interval '12 seconds') AS t
        """,
        key_id,
    )
    await pg.execute("ANALYZE calls")
    for key in (None, str(key_id)):
        captured = Captured()
        await fetch_counters(captured, key)  # type: ignore[arg-type]
        explained = await pg.fetchval("EXPLAIN (FORMAT JSON) " + captured.query, *captured.args)
        scans = relations_scanned(json.loads(explained)[0]["Plan"])
        on_calls = [(node, cond) for node, relation, cond in scans if relation == "calls"]
        # The BRIN index's last-second range, or the key's index from a second ago.
        assert on_calls, scans
        for node, cond in on_calls:
            assert node == "Bitmap Heap Scan" or "created_at >" in cond, scans


async def test_stats_calls_counts_the_keys_calls_by_status_on_the_server(make_api) -> None:
    """What the dashboard's counters show: every call of the key, not a page of them."""
    api = await make_api(max_concurrent=100, max_cps=100)
    other = await make_api(max_concurrent=100, max_cps=100)
    await other.request("POST", "/events", json={"event": "call_initiated", "type": "voice"})
    started = []
    for _ in range(4):
        _, body, _ = await api.request(
            "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
        )
        started.append(body["call_id"])
    for call_id in started[:2]:
        await api.request(
            "POST", "/events", json={"event": "call_routed", "call_id": call_id, "agent_id": "a"}
        )
    await api.request(
        "POST", "/events", json={"event": "call_answered", "call_id": started[0], "wait_time": 45}
    )
    await api.request(
        "POST",
        "/events",
        json={"event": "call_ended", "call_id": started[3], "end_reason": "abandoned"},
    )

    status, counts, _ = await api.request("GET", "/stats/calls")

    assert status == 200, counts
    assert counts == {
        "total": 4,
        "by_status": {
            "QUEUED": 1,
            "RINGING": 1,
            "ANSWERED": 1,
            "ON_HOLD": 0,
            "UNANSWERED": 0,
            "COMPLETED": 1,
        },
        "breaches": 1,
        "breaches_capped": False,
    }


async def test_breached_calls_are_counted_up_to_a_cap(platform: Platform, pg) -> None:
    """However many breached calls a key has, the count reads at most BREACHES_COUNTED + 1 of
    them and says it stopped. (In a transaction rolled back after.)"""
    transaction = pg.transaction()
    await transaction.start()
    try:
        key_id = await pg.fetchval(
            "INSERT INTO api_keys (name, key_hash, key_prefix) VALUES ('breached', 'b', 'b')"
            " RETURNING id::text"
        )
        await pg.execute(
            """
            INSERT INTO calls (id, api_key_id, kind, status, flags, created_at, updated_at,
                               status_changed_at, started_at)
            SELECT gen_random_uuid(), $1::uuid, 'ingested', 'COMPLETED',
                   '{wait_sla_exceeded}', now(), now(), now(), now()
              FROM generate_series(1, $2)
            """,
            key_id,
            BREACHES_COUNTED + 5,
        )
        row = await fetch_call_counts(pg, key_id)
        assert row["breaches"] == BREACHES_COUNTED + 1
    finally:
        await transaction.rollback()
