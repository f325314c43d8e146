"""Simulated calls move on timers through the original lifecycle to an uploaded recording."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from tests.integration.conftest import Api
from tests.integration.platform import ROOT

ANSWERED_PATH = ["QUEUED", "RINGING", "ANSWERED", "COMPLETED"]
UNANSWERED_PATH = ["QUEUED", "RINGING", "UNANSWERED", "COMPLETED"]
EVENTS = {
    "QUEUED": "call_initiated",
    "RINGING": "call_routed",
    "ANSWERED": "call_answered",
    "UNANSWERED": "call_unanswered",
    "COMPLETED": "call_ended",
}


async def history(pg, call_id: str) -> list:
    return await pg.fetch(
        "SELECT seq, event, from_status, to_status, occurred_at FROM call_events WHERE call_id = $1 ORDER BY seq",
        call_id,
    )


async def test_a_call_reaches_completed_with_a_recording_that_downloads(api: Api, pg) -> None:
    _, created, _ = await api.create_call()

    call = await api.wait_recorded(created["call_id"])

    assert call["recording_url"] == f"{api.platform.base_url}/calls/{created['call_id']}/recording"
    async with api.http.get(call["recording_url"], headers=api.auth) as response:
        assert response.status == 200
        assert response.content_type == "audio/x-wav"
        assert await response.read() == (ROOT / "assets" / "recording.wav").read_bytes()
    stored = list(Path(api.platform.recordings_dir).rglob(f"{created['call_id']}.wav"))
    assert len(stored) == 1


async def test_each_transition_is_one_history_row_in_order(api: Api, pg) -> None:
    calls = [(await api.create_call())[1]["call_id"] for _ in range(20)]
    for call_id in calls:
        await api.wait_for(call_id, lambda c: c["status"] == "COMPLETED")

    paths = set()
    for call_id in calls:
        rows = await history(pg, call_id)
        statuses = [row["to_status"] for row in rows]
        assert statuses in (ANSWERED_PATH, UNANSWERED_PATH)
        assert [row["seq"] for row in rows] == [1, 2, 3, 4]
        assert [row["event"] for row in rows] == [EVENTS[s] for s in statuses]
        assert [row["from_status"] for row in rows] == [None, *statuses[:-1]]
        paths.add(statuses[2])
    assert paths <= {"ANSWERED", "UNANSWERED"}


async def test_timers_keep_the_original_timings_at_millisecond_resolution(api: Api, pg) -> None:
    """At TIME_SCALE 0.05 each wait is 1/20 of the original (QUEUED→RINGING 1–2 s becomes
    50–100 ms): a whole-second timer could not land inside these windows."""
    scale = 0.05
    windows = {
        ("QUEUED", "RINGING"): (1000, 2000),
        ("RINGING", "ANSWERED"): (3000, 5000),
        ("RINGING", "UNANSWERED"): (3000, 5000),
        ("ANSWERED", "COMPLETED"): (2000, 4000),
        ("UNANSWERED", "COMPLETED"): (1000, 2000),
    }
    calls = [(await api.create_call())[1]["call_id"] for _ in range(10)]
    for call_id in calls:
        await api.wait_for(call_id, lambda c: c["status"] == "COMPLETED")

    for call_id in calls:
        rows = await history(pg, call_id)
        for before, after in itertools.pairwise(rows):
            low, high = windows[(before["to_status"], after["to_status"])]
            waited_ms = (after["occurred_at"] - before["occurred_at"]).total_seconds() * 1000
            # Never early; late by at most a poll plus a job's pickup on a busy test machine.
            assert low * scale - 1 <= waited_ms <= high * scale + 150, (before, after, waited_ms)


async def test_about_seventy_percent_of_calls_are_answered(make_api, pg) -> None:
    api = await make_api(max_concurrent=1000, max_cps=1000)
    calls = await asyncio.gather(*(api.create_call() for _ in range(200)))
    ids = [body["call_id"] for _, body, _ in calls]
    for call_id in ids:
        await api.wait_for(call_id, lambda c: c["status"] == "COMPLETED", timeout=30)

    answered = await pg.fetchval(
        "SELECT count(*) FROM call_events WHERE call_id = ANY($1::uuid[]) AND to_status = 'ANSWERED'",
        ids,
    )
    # Binomial(200, 0.7): mean 140, sd ~6.5; this band fails about once in a million runs.
    assert 108 <= answered <= 172


async def test_metrics_count_calls_and_uploads_exactly(make_api, platform_factory) -> None:
    own = await platform_factory()
    api = await make_api(max_concurrent=100, max_cps=100, on=own)
    status, before, _ = await api.request("GET", "/metrics")
    assert status == 200
    assert before == {
        "total_calls": 0,
        "active_calls": 0,
        "completed_calls": 0,
        "current_cps": 0,
        "uploads_in_progress": 0,
        "uploads_completed": 0,
    }

    ids = [(await api.create_call())[1]["call_id"] for _ in range(5)]
    _, during, _ = await api.request("GET", "/metrics")
    assert during["total_calls"] == 5
    assert during["active_calls"] + during["completed_calls"] == 5
    assert during["current_cps"] >= 1

    for call_id in ids:
        await api.wait_recorded(call_id)
    _, after, _ = await api.request("GET", "/metrics")
    assert (
        after["total_calls"] == 5 and after["completed_calls"] == 5 and after["active_calls"] == 0
    )
    assert (after["uploads_in_progress"], after["uploads_completed"]) == (0, 5)


async def test_prometheus_text_carries_the_same_counters(api: Api) -> None:
    async with api.http.get(api.url("/metrics?format=prometheus"), headers=api.auth) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    # prometheus_client writes a counter's sample with _total.
    for name in (
        "total_calls_total",
        "active_calls",
        "completed_calls_total",
        "current_cps",
        "uploads_in_progress",
        "uploads_completed_total",
        "uploads_failed_total",
    ):
        assert f"\nmockcomms_{name} " in text
    assert 'mockcomms_queue_depth{queue="timers"}' in text
    async with api.http.get(
        api.url("/metrics"), headers=api.auth | {"Accept": "text/plain"}
    ) as response:
        assert response.content_type == "text/plain"


async def test_failed_uploads_are_retried_then_counted_as_failed(
    platform_factory, make_api, http
) -> None:
    own = await platform_factory({"UPLOAD_FAILURE_PROBABILITY": "1", "UPLOAD_MAX_ATTEMPTS": "3"})
    api = await make_api(max_concurrent=10, max_cps=10, on=own)
    _, created, _ = await api.create_call()
    await api.wait_for(created["call_id"], lambda c: c["status"] == "COMPLETED")

    async def attempts() -> tuple[str, int]:
        import asyncpg

        conn = await asyncpg.connect(own.dsn)
        try:
            row = await conn.fetchrow(
                "SELECT status, attempts FROM recordings WHERE call_id = $1", created["call_id"]
            )
        finally:
            await conn.close()
        return row["status"], row["attempts"]

    for _ in range(100):
        if (await attempts())[0] == "failed":
            break
        await asyncio.sleep(0.05)
    assert await attempts() == ("failed", 3)
    _, metrics, _ = await api.request("GET", "/metrics")
    assert (metrics["uploads_in_progress"], metrics["uploads_completed"]) == (0, 0)
    async with http.get(api.url("/metrics?format=prometheus"), headers=api.auth) as response:
        assert "\nmockcomms_uploads_failed_total 1.0\n" in await response.text()
    _, call, _ = await api.get_call(created["call_id"])
    assert call["recording_url"] is None


async def test_the_recording_is_served_only_to_the_calls_owner(make_api) -> None:
    owner, stranger = await make_api(), await make_api()
    _, created, _ = await owner.create_call()
    call = await owner.wait_recorded(created["call_id"])

    async with stranger.http.get(call["recording_url"], headers=stranger.auth) as response:
        assert response.status == 404
    async with owner.http.get(call["recording_url"]) as response:
        assert response.status == 401


async def test_a_recording_in_another_hosts_directory_is_a_404_saying_it_is_not_here(
    platform_factory, make_api, tmp_path: Path
) -> None:
    # The worker runs "on another host": a RECORDINGS_DIR of its own, the API's is empty.
    own = await platform_factory(workers=0)
    own.add("worker1", "worker", {"RECORDINGS_DIR": str(tmp_path / "other-host")})
    api = await make_api(max_concurrent=10, max_cps=10, on=own)
    _, created, _ = await api.create_call()
    call = await api.wait_recorded(created["call_id"])

    status, body, _ = await api.request("GET", f"/calls/{call['call_id']}/recording")

    assert status == 404
    assert body["message"] == (
        "Recording not found on this API's storage: it was stored, but in a local directory"
        " another host holds (recordings kept in a local directory are one host's)"
    )
    # The call itself says it is recorded; the file is where that worker put it.
    assert list((tmp_path / "other-host").rglob(f"{call['call_id']}.wav"))
    # Before the upload, the answer says the call may not have completed.
    _, pending, _ = await api.create_call()
    status, body, _ = await api.request("GET", f"/calls/{pending['call_id']}/recording")
    assert (status, body["message"]) == (
        404,
        "Recording not found (the call may not have completed yet)",
    )
