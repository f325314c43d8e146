"""Ended calls older than RETENTION_DAYS are deleted by upkeep with their history, outbox
entries, upload rows and recording files; the counters count them as removed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.integration.conftest import Api
from tests.integration.platform import Platform

# A day in seconds is 86,400: a retention of a thousandth of a day is 86.4 s.
RETENTION_DAYS = "0.001"


@pytest.fixture(scope="module")
async def keeping_little(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    running = Platform(
        tmp_path_factory.mktemp("retention"),
        settings={"RETENTION_DAYS": RETENTION_DAYS, "RECONCILE_INTERVAL_MS": "200"},
    )
    try:
        yield await running.start()
    finally:
        await running.stop()


async def age(pg: asyncpg.Connection, call_ids: list[str], seconds: float) -> None:
    """Make the calls look as if the platform stored their end `seconds` ago."""
    await pg.execute(
        """
        UPDATE calls SET status_changed_at = status_changed_at - make_interval(secs => $2::float8)
         WHERE id = ANY($1::uuid[])
        """,
        call_ids,
        seconds,
    )


async def test_ended_calls_past_retention_go_with_everything_kept_of_them(
    keeping_little: Platform, http
) -> None:
    api = Api(http, keeping_little, await keeping_little.new_key(max_concurrent=50, max_cps=50))
    old = [(await api.create_call())[1]["call_id"] for _ in range(5)]
    recent = (await api.create_call())[1]["call_id"]
    for call_id in [*old, recent]:
        await api.wait_recorded(call_id)
    _, ingested, _ = await api.request(  # active: never purged, however old
        "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
    )
    pg = await asyncpg.connect(keeping_little.dsn)
    try:
        files = [
            keeping_little.recordings_dir / key
            for key in await pg.fetchval(
                "SELECT array_agg(storage_key) FROM recordings WHERE call_id = ANY($1::uuid[])",
                old,
            )
        ]
        assert all(path.exists() for path in files)
        before = (await api.request("GET", "/metrics"))[1]
        await age(pg, old, 2 * 86.4)
        await pg.execute(
            "UPDATE calls SET created_at = created_at - interval '1 day' WHERE id = $1",
            ingested["call_id"],
        )

        deadline = time.monotonic() + 10
        while await pg.fetchval("SELECT count(*) FROM calls WHERE id = ANY($1::uuid[])", old):
            assert time.monotonic() < deadline, "the old calls were never purged"
            await asyncio.sleep(0.1)

        for table, column in (
            ("call_events", "call_id"),
            ("outbox", "call_id"),
            ("recordings", "call_id"),
        ):
            left = await pg.fetchval(
                f"SELECT count(*) FROM {table} WHERE {column} = ANY($1::uuid[])", old
            )
            assert left == 0, table
        assert not any(path.exists() for path in files)
        assert await pg.fetchval("SELECT count(*) FROM calls WHERE id = $1", recent) == 1
        assert (await api.get_call(ingested["call_id"]))[0] == 200
        for call_id in old:
            assert (await api.get_call(call_id))[0] == 404
        _, page, _ = await api.request("GET", "/calls")
        assert page["total"] == 2  # the recent one and the active ingested one
        after = (await api.request("GET", "/metrics"))[1]
        # Counters count what was made: removing old calls does not unmake them.
        assert after["total_calls"] == before["total_calls"]
    finally:
        await pg.close()


async def test_nothing_is_purged_with_retention_zero(platform_factory, http) -> None:
    own = await platform_factory({"RETENTION_DAYS": "0", "RECONCILE_INTERVAL_MS": "200"})
    api = Api(http, own, await own.new_key())
    _, created, _ = await api.create_call()
    await api.wait_recorded(created["call_id"])
    pg = await asyncpg.connect(own.dsn)
    try:
        await age(pg, [created["call_id"]], 10 * 365 * 86_400)
        await asyncio.sleep(1)
        assert (await api.get_call(created["call_id"]))[0] == 200
    finally:
        await pg.close()


def test_a_recording_outside_the_root_is_never_deleted(tmp_path: Path) -> None:
    from calls.storage import LocalStorage

    outside = tmp_path / "precious.wav"
    outside.write_bytes(b"x")
    storage = LocalStorage(tmp_path / "root")
    asyncio.run(storage.delete(["../precious.wav", "recordings/none.wav"]))
    assert outside.exists()


async def test_a_call_ended_long_ago_by_its_sender_s_clock_is_kept_until_retention_passes(
    keeping_little: Platform, http
) -> None:
    """A call's age is when the platform stored its end, not the `occurred_at` its sender
    gave (an import of last year's calls is not deleted at once)."""
    api = Api(http, keeping_little, await keeping_little.new_key())
    events = [
        {"event": "call_initiated", "type": "voice", "queue_id": "q"},
        {"event": "call_ended", "end_reason": "abandoned"},
    ]
    _, made, _ = await api.request(
        "POST", "/events", json=events[0] | {"occurred_at": "2025-01-01T10:00:00Z"}
    )
    status, _, _ = await api.request(
        "POST",
        "/events",
        json=events[1] | {"call_id": made["call_id"], "occurred_at": "2025-01-01T10:05:00Z"},
    )
    assert status == 201
    await asyncio.sleep(1)  # several upkeep passes
    assert (await api.get_call(made["call_id"]))[0] == 200


async def stats_rows(pg: asyncpg.Connection, key_id: str) -> dict[str, int]:
    """The key's rows of the queue statistics, by table and span."""
    found = {}
    for table in ("queue_stats", "agent_stats"):
        for span, n in await pg.fetch(
            f"SELECT span, count(*) FROM {table} WHERE api_key_id = $1 GROUP BY span", key_id
        ):
            found[f"{table}:{span}"] = n
    found["stats_deltas"] = await pg.fetchval(
        "SELECT count(*) FROM stats_deltas WHERE api_key_id = $1", key_id
    )
    return found


async def an_answered_queue_call(api: Api, **initiated: str) -> None:
    """A call counted in a queue's statistics and an agent's, once upkeep folds it."""
    _, started, _ = await api.request(
        "POST",
        "/events",
        json={"event": "call_initiated", "type": "voice", "queue_id": "q"} | initiated,
    )
    call_id = started["call_id"]
    for body in (
        {"event": "call_routed", "agent_id": "a1"},
        {"event": "call_answered"},
        {"event": "call_ended", "end_reason": "completed"},
    ):
        status, answer, _ = await api.request("POST", "/events", json=body | {"call_id": call_id})
        assert status == 201, answer


async def wait_until(check, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_minute_statistics_go_after_retention_and_hours_and_days_stay(
    keeping_little: Platform, http
) -> None:
    api = Api(http, keeping_little, await keeping_little.new_key())
    await an_answered_queue_call(api)
    pg = await asyncpg.connect(keeping_little.dsn)
    try:
        key_id = await pg.fetchval("SELECT api_key_id FROM calls ORDER BY created_at DESC LIMIT 1")

        async def folded() -> bool:
            rows = await stats_rows(pg, key_id)
            return rows["stats_deltas"] == 0 and rows.get("queue_stats:minute") == 1

        await wait_until(folded, "the statistics were never folded")
        for table in ("queue_stats", "agent_stats"):
            await pg.execute(
                f"UPDATE {table} SET folded_at = folded_at - interval '1 day'"
                " WHERE api_key_id = $1 AND span = 'minute'",
                key_id,
            )

        async def minutes_gone() -> bool:
            rows = await stats_rows(pg, key_id)
            return not rows.get("queue_stats:minute") and not rows.get("agent_stats:minute")

        await wait_until(minutes_gone, "the old minute rows were never purged")
        rows = await stats_rows(pg, key_id)
        assert rows["queue_stats:hour"] == rows["queue_stats:day"] == 1, rows
        assert rows["agent_stats:hour"] == rows["agent_stats:day"] == 1, rows
    finally:
        await pg.close()


async def test_a_deleted_keys_statistics_go_before_its_row(keeping_little: Platform, http) -> None:
    api = Api(http, keeping_little, await keeping_little.new_key())
    await an_answered_queue_call(api)
    pg = await asyncpg.connect(keeping_little.dsn)
    try:
        key_id = await pg.fetchval("SELECT api_key_id FROM calls ORDER BY created_at DESC LIMIT 1")

        async def folded() -> bool:
            return (await stats_rows(pg, key_id))["stats_deltas"] == 0

        await wait_until(folded, "the statistics were never folded")
        # What `python -m db keys delete` does to the key's row.
        await pg.execute(
            "UPDATE api_keys SET deleted_at = now(), enabled = false WHERE id = $1", key_id
        )

        async def key_gone() -> bool:
            return not await pg.fetchval("SELECT count(*) FROM api_keys WHERE id = $1", key_id)

        await wait_until(key_gone, "the deleted key's row was never dropped")
        assert not any((await stats_rows(pg, key_id)).values())
        assert not await pg.fetchval("SELECT count(*) FROM calls WHERE api_key_id = $1", key_id)
    finally:
        await pg.close()


async def test_an_imported_calls_minutes_are_kept_as_long_as_the_call(
    keeping_little: Platform, http
) -> None:
    """Statistics age as calls do, from when the platform stored them: a call that started a
    year ago by its sender's clock keeps its minute's figures."""
    api = Api(http, keeping_little, await keeping_little.new_key())
    await an_answered_queue_call(api, occurred_at="2025-12-05T10:00:00Z")
    pg = await asyncpg.connect(keeping_little.dsn)
    try:
        key_id = await pg.fetchval("SELECT api_key_id FROM calls ORDER BY created_at DESC LIMIT 1")

        async def folded() -> bool:
            return (await stats_rows(pg, key_id)).get("queue_stats:minute") == 1

        await wait_until(folded, "the statistics were never folded")
        await asyncio.sleep(1)  # five purge passes (RECONCILE_INTERVAL_MS 200)
        rows = await stats_rows(pg, key_id)
        assert rows["queue_stats:minute"] == rows["agent_stats:minute"] == 1, rows
    finally:
        await pg.close()
