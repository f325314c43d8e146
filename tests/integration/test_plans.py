"""The pools' statements keep finding calls by their key after the table has grown: a plan
PostgreSQL cached while the table was empty (a sequential scan) must not stay in use. The
lookups pools (the workers', the API's batchers') keep one plan per statement; the others plan
every run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from calls.stores import Pools, Stores
from core.settings import Settings
from db import calls as db_calls
from db.pool import create_pool
from db.stats import Measures

pytestmark = pytest.mark.integration


async def seq_scans_of_calls(conn: asyncpg.Connection) -> int:
    """Sequential scans of `calls` in this connection's open transaction."""
    return await conn.fetchval(
        "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_xact_user_tables WHERE relname = 'calls'"
    )


async def new_key(pool: asyncpg.Pool) -> str:
    return await pool.fetchval(
        "INSERT INTO api_keys (name, key_hash, key_prefix) VALUES ('plans', $1, 'p')"
        " RETURNING id::text",
        uuid.uuid4().bytes * 2,
    )


def new_calls(key_id: str, count: int) -> list[db_calls.NewCall]:
    return [
        db_calls.NewCall(str(uuid.uuid4()), key_id, "simulated", "+1", "+2", {})
        for _ in range(count)
    ]


# What the moves measure their queues' statistics against: the default settings.
MEASURES = Measures.of(Settings(_env_file=None))


def routed(call_id: str) -> db_calls.Transition:
    return db_calls.Transition(
        call_id, 1, "QUEUED", "RINGING", "call_routed", [], [], datetime.now(UTC)
    )


@pytest.mark.parametrize("lookups_only", [False, True], ids=["general", "lookups"])
async def test_statements_prepared_on_an_empty_table_use_the_key_once_it_has_grown(
    scratch_dsn, lookups_only: bool
) -> None:
    pool = await create_pool(scratch_dsn, min_size=1, max_size=1, lookups_only=lookups_only)
    try:
        key_id = await new_key(pool)
        # Prepared and run while the table is nearly empty, more than the 5 times after which
        # PostgreSQL may settle on one generic plan for a statement.
        early = new_calls(key_id, 10)
        await db_calls.insert_calls(pool, early)
        for call in early:
            await db_calls.write_transitions(pool, [routed(call.call_id)], MEASURES)
            await db_calls.fetch_calls(pool, [call.call_id])
        grown = new_calls(key_id, 20_000)
        for start in range(0, len(grown), 1_000):
            await db_calls.insert_calls(pool, grown[start : start + 1_000])

        async with pool.acquire() as conn, conn.transaction():
            before = await seq_scans_of_calls(conn)
            moved = await db_calls.write_transitions(
                conn, [routed(grown[7].call_id), routed(grown[19_000].call_id)], MEASURES
            )
            found = await db_calls.fetch_calls(conn, [grown[8].call_id])
            assert await seq_scans_of_calls(conn) == before, "a statement read the whole table"
            assert len(moved) == 2 and list(found) == [grown[8].call_id]
    finally:
        await pool.close()


async def plans_of(pool: asyncpg.Pool, marker: str) -> tuple[int, int]:
    """(generic, custom) plans made for the connection's prepared statement containing
    `marker`."""
    row = await pool.fetchrow(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
        " WHERE statement LIKE '%' || $1 || '%' AND statement NOT LIKE '%pg_prepared%'",
        marker,
    )
    assert row is not None, f"no prepared statement with {marker!r}"
    return row["generic_plans"], row["custom_plans"]


@pytest.mark.parametrize("lookups_only", [False, True], ids=["general", "lookups"])
async def test_only_the_lookup_pool_keeps_one_plan_per_statement(
    scratch_dsn, lookups_only: bool
) -> None:
    pool = await create_pool(scratch_dsn, min_size=1, max_size=1, lookups_only=lookups_only)
    try:
        calls = new_calls(await new_key(pool), 20)
        await db_calls.insert_calls(pool, calls)
        for call in calls:
            await db_calls.write_transitions(pool, [routed(call.call_id)], MEASURES)
            await db_calls.fetch_calls(pool, [call.call_id])

        # The moves' statement, the costliest to plan. (A generic plan is PostgreSQL's choice
        # where allowed: it keeps planning `fetch_calls` of one id, whose custom plan it
        # estimates cheaper.)
        generic, custom = await plans_of(pool, "UPDATE calls c")
        if lookups_only:
            # PostgreSQL tries five custom plans before it settles on the generic one.
            assert generic >= 10 and custom <= 5, (generic, custom)
        else:
            assert generic == 0 and custom == 20, (generic, custom)
    finally:
        await pool.close()


@pytest.mark.parametrize("lookups_max", [None, 3], ids=["one pool", "two pools"])
async def test_the_api_opens_a_lookups_pool_of_its_own_when_asked(
    scratch_dsn, lookups_max: int | None
) -> None:
    # Redis is never reached: the clients connect on first use.
    settings = Settings(_env_file=None, database_url=scratch_dsn, redis_url="redis://127.0.0.1:1")
    stores = await Stores.open(settings, Pools("api", 2, lookups_max or 0))
    try:
        general = await stores.pool.fetchval("SHOW plan_cache_mode")
        lookups = await stores.lookups.fetchval("SHOW plan_cache_mode")
        assert general == "force_custom_plan"
        if lookups_max:
            assert stores.lookups is not stores.pool
            assert lookups == "auto"
            assert await stores.lookups.fetchval("SHOW enable_seqscan") == "off"
            assert stores.lookups.get_max_size() == lookups_max
        else:
            assert stores.lookups is stores.pool
    finally:
        await stores.close()
