"""Queue statistics: a scripted hour of ingested calls gives exactly the figures worked out by
hand, the rollups rebuilt from PostgreSQL after Redis is flushed equal the live ones, the key
stream carries a queue's figures at most once a second, and bad parameters get a 400."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
from redis.asyncio import Redis

from db.stats import fetch_totals
from tests.integration.conftest import Api
from tests.integration.platform import ROOT, Platform

HOUR = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WINDOW = f"since={HOUR.isoformat()}&until={(HOUR + timedelta(hours=1)).isoformat()}".replace(
    "+00:00", "Z"
)


def at(minutes: int, seconds: float = 0) -> str:
    return (HOUR + timedelta(minutes=minutes, seconds=seconds)).isoformat()


# Each call: its id, queue, type and events as (event, minute, second, fields), in order.
DAY: list[tuple[str, str, str, list[tuple[Any, ...]]]] = [
    # Answered in 10 s (within the 20 s service level), held 30 s, handled 180 s.
    (
        "A",
        "sales",
        "voice",
        [
            ("call_routed", 0, 5, {"agent_id": "a1"}),
            ("call_answered", 0, 10, {}),
            ("call_hold", 1, 0, {}),
            ("call_resumed", 1, 30, {}),
            ("call_ended", 3, 10, {"end_reason": "completed"}),
        ],
    ),
    # Routed after 20 s (rerouted), answered after 45 s (beyond; wait_sla_exceeded), 60 s.
    (
        "B",
        "sales",
        "voice",
        [
            ("call_routed", 5, 20, {"agent_id": "a2"}),
            ("call_answered", 5, 45, {}),
            ("call_ended", 6, 45, {"end_reason": "completed"}),
        ],
    ),
    # Abandoned after 3 s: a short abandon.
    ("C", "sales", "voice", [("call_ended", 10, 3, {"end_reason": "abandoned"})]),
    # Abandoned after 40 s, while ringing.
    (
        "D",
        "sales",
        "voice",
        [
            ("call_routed", 15, 2, {"agent_id": "a1"}),
            ("call_ended", 15, 40, {"end_reason": "abandoned"}),
        ],
    ),
    # Answered at exactly 20 s (within), held 120 s to its end (hold_limit_exceeded), 160 s.
    (
        "E",
        "sales",
        "voice",
        [
            ("call_routed", 20, 1, {"agent_id": "a1"}),
            ("call_answered", 20, 20, {}),
            ("call_hold", 21, 0, {}),
            ("call_ended", 23, 0, {"end_reason": "completed"}),
        ],
    ),
    # Still waiting.
    ("F", "sales", "voice", []),
    # Answered in 5 s, still on hold.
    (
        "G",
        "sales",
        "voice",
        [
            ("call_routed", 40, 3, {"agent_id": "a2"}),
            ("call_answered", 40, 5, {}),
            ("call_hold", 41, 0, {}),
        ],
    ),
    # Unanswered, then ended "completed" after 30 s: an ingested call's unanswered end is an
    # abandon whatever its reason.
    (
        "H",
        "sales",
        "voice",
        [
            ("call_routed", 50, 1, {"agent_id": "a2"}),
            ("call_unanswered", 50, 20, {}),
            ("call_ended", 50, 30, {"end_reason": "completed"}),
        ],
    ),
    # Answered in 3 s, talked 5 s (short_call).
    (
        "K",
        "sales",
        "voice",
        [
            ("call_routed", 55, 1, {"agent_id": "a1"}),
            ("call_answered", 55, 3, {}),
            ("call_ended", 55, 8, {"end_reason": "completed"}),
        ],
    ),
    # Outside the hour: started at its end, and a second before it.
    (
        "I",
        "sales",
        "voice",
        [
            ("call_routed", 60, 1, {"agent_id": "a1"}),
            ("call_answered", 60, 50, {}),
            ("call_ended", 62, 0, {"end_reason": "completed"}),
        ],
    ),
    ("J", "sales", "voice", [("call_ended", 0, 30, {"end_reason": "abandoned"})]),
    # Another queue, a video call abandoned after a second (short).
    ("V", "support", "video", [("call_ended", 0, 31, {"end_reason": "abandoned"})]),
]
STARTS = {"A": (0, 0), "B": (5, 0), "C": (10, 0), "D": (15, 0), "E": (20, 0), "F": (30, 0),
          "G": (40, 0), "H": (50, 0), "K": (55, 0), "I": (60, 0), "J": (-1, 59), "V": (0, 30)}  # fmt: skip

# Worked out by hand from the script above, for sales over the hour 09:00-10:00.
SALES = {
    "queue_id": "sales",
    "offered": 9,  # A B C D E F G H K
    "answered": 5,  # A B E G K
    "abandoned": 3,  # C D H
    "short_abandoned": 1,  # C
    "service_level_pct": 50.0,  # A E G K of 9 - 1
    "abandon_rate_pct": 33.33,  # 3 of 9
    "asa_s": 16.6,  # (10 + 45 + 20 + 5 + 3) / 5
    "aht_s": 101.25,  # (180 + 60 + 160 + 5) / 4 (G has not ended)
    "waiting_now": 1,  # F
    "on_hold_now": 1,  # G
    "flags": {
        "wait_sla_exceeded": 1,
        "hold_limit_exceeded": 1,
        "short_call": 1,
        "rerouted": 1,
    },
}
SUPPORT = {
    "queue_id": "support",
    "offered": 1,
    "answered": 0,
    "abandoned": 1,
    "short_abandoned": 1,
    "service_level_pct": None,  # nothing to divide by: the only call was a short abandon
    "abandon_rate_pct": 100.0,
    "asa_s": None,
    "aht_s": None,
    "waiting_now": 0,
    "longest_wait_s": None,
    "on_hold_now": 0,
    "flags": dict.fromkeys(SALES["flags"], 0),
}
AGENTS = [
    {"agent_id": "a1", "handled": 3, "aht_s": 115.0, "holds": 2, "hold_s": 150.0},  # A E K
    {"agent_id": "a2", "handled": 1, "aht_s": 60.0, "holds": 0, "hold_s": 0.0},  # B (G on hold)
]


async def post(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    status, answer, _ = await api.request("POST", "/events", json=body)
    assert status == 201, answer
    return answer


async def play_the_hour(api: Api) -> None:
    """Post the script, each call's events in order, the calls side by side."""

    async def one(name: str, queue: str, kind: str, events: list[tuple[Any, ...]]) -> None:
        minute, second = STARTS[name]
        await post(
            api,
            {"event": "call_initiated", "call_id": name, "type": kind, "queue_id": queue,
             "occurred_at": at(minute, second)},
        )  # fmt: skip
        for event, m, s, fields in events:
            await post(api, {"event": event, "call_id": name, "occurred_at": at(m, s)} | fields)

    await asyncio.gather(*(one(*call) for call in DAY))


async def stats_of(api: Api, path: str) -> dict[str, Any]:
    status, body, _ = await api.request("GET", path)
    assert status == 200, body
    return body


async def test_a_scripted_hour_gives_exactly_the_figures_worked_out_by_hand(api: Api) -> None:
    await play_the_hour(api)
    started = datetime.now(UTC)

    body = await stats_of(api, f"/stats/queues?{WINDOW}")
    assert (body["window"], body["since"], body["until"]) == (
        None,
        "2026-03-02T09:00:00.000Z",
        "2026-03-02T10:00:00.000Z",
    )
    assert (body["service_level_s"], body["service_level_target_pct"]) == (20, 80)
    sales, support = body["data"]
    # F has waited since 09:30 of that day, whatever the window.
    waited_s = (started - (HOUR + timedelta(minutes=30))).total_seconds()
    assert waited_s - 1 <= sales.pop("longest_wait_s") <= waited_s + 60
    assert sales == SALES
    assert support == SUPPORT
    assert body["next_after"] is None

    # The same through the contact-centre path, and filtered.
    assert await stats_of(api, f"/api/stats/queues?{WINDOW}&queue_id=support") == body | {
        "data": [SUPPORT]
    }
    video = await stats_of(api, f"/stats/queues?{WINDOW}&type=video")
    assert [queue["queue_id"] for queue in video["data"]] == ["support"]
    page = await stats_of(api, f"/stats/queues?{WINDOW}&after=sales")
    assert [queue["queue_id"] for queue in page["data"]] == ["support"]

    agents = await stats_of(api, f"/stats/agents?{WINDOW}")
    assert agents["data"] == AGENTS
    assert (await stats_of(api, f"/stats/agents?{WINDOW}&queue_id=support"))["data"] == []


async def test_a_queues_series_adds_up_to_its_window(api: Api) -> None:
    await play_the_hour(api)
    window = {k: v for k, v in SALES.items() if k != "queue_id" and not k.endswith("_now")}
    hourly = await stats_of(api, f"/stats/queues/sales/series?{WINDOW}&bucket=1h")
    assert hourly["bucket"] == "1h" and hourly["queue_id"] == "sales"
    (point,) = hourly["data"]
    assert point == {"start": "2026-03-02T09:00:00.000Z"} | window

    minutes = (await stats_of(api, f"/stats/queues/sales/series?{WINDOW}"))["data"]
    assert len(minutes) == 60 and minutes[0]["start"] == "2026-03-02T09:00:00.000Z"
    assert sum(p["offered"] for p in minutes) == 9 and sum(p["answered"] for p in minutes) == 5
    # B started at 09:05 and was answered in 45 s: its minute misses the service level.
    assert minutes[5] | {"start": None} == {
        "start": None, "offered": 1, "answered": 1, "abandoned": 0, "short_abandoned": 0,
        "service_level_pct": 0.0, "abandon_rate_pct": 0.0, "asa_s": 45.0, "aht_s": 60.0,
        "flags": {"wait_sla_exceeded": 1, "hold_limit_exceeded": 0, "short_call": 0,
                  "rerouted": 1},
    }  # fmt: skip
    assert minutes[1]["offered"] == 0 and minutes[1]["service_level_pct"] is None
    fives = (await stats_of(api, f"/stats/queues/sales/series?{WINDOW}&bucket=5m"))["data"]
    assert [p["offered"] for p in fives] == [1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1]


async def test_rollups_rebuilt_from_postgresql_after_redis_is_flushed_equal_the_live_ones(
    api: Api, platform: Platform, redis: Redis
) -> None:
    await play_the_hour(api)
    shown = await stats_of(api, f"/stats/queues?{WINDOW}")
    await redis.flushall()

    conn = await asyncpg.connect(platform.dsn)
    try:
        key_id = await conn.fetchval("SELECT id::text FROM api_keys WHERE name = $1", api.key)
        # Upkeep folds what the writes added into the totals within a pass or two.
        deadline = time.monotonic() + 5
        while await conn.fetchval(
            "SELECT count(*) FROM stats_deltas WHERE api_key_id = $1", key_id
        ):
            assert time.monotonic() < deadline, "the deltas were never folded"
            await asyncio.sleep(0.1)
        live = [dict(row) for row in await fetch_totals(conn, key_id)]
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "db", "stats", "rebuild", "--key", api.key],
            cwd=ROOT,
            env=platform.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "rebuilt from 12 calls" in result.stdout
        rebuilt = [dict(row) for row in await fetch_totals(conn, key_id)]
    finally:
        await conn.close()
    # A minute, an hour and a day of each start minute with calls, and of the agents'.
    assert len(live) >= 20
    assert rebuilt == live
    after = await stats_of(api, f"/stats/queues?{WINDOW}")
    for answer in (shown, after):
        for queue in answer["data"]:
            queue.pop("longest_wait_s")
    assert after == shown


async def test_a_simulated_call_in_a_queue_counts_in_simulated_seconds(api: Api) -> None:
    status, created, _ = await api.create_call(queue_id="simulated")
    assert status == 201, created
    call = await api.wait_for(created["call_id"], lambda c: c["status"] == "COMPLETED")
    assert call["queue_id"] == "simulated"
    (queue,) = (await stats_of(api, "/stats/queues?window=15m&queue_id=simulated"))["data"]
    assert queue["offered"] == 1 and queue["abandoned"] == 0
    if queue["answered"]:
        # Rung after 1-2 s and answered 3-5 s later at TIME_SCALE 0.05, as the rules judge it.
        assert 4 <= queue["asa_s"] <= 7.5 and queue["service_level_pct"] == 100.0
        assert 2 <= queue["aht_s"] <= 4.5


async def sse_events(
    http: aiohttp.ClientSession, url: str, key: str, into: list[tuple[float, str, dict]]
) -> None:
    """Read a key stream, appending (time, event, data) of each event to `into`."""
    async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as response:
        event = None
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event is not None:
                into.append((time.monotonic(), event, orjson.loads(line[6:])))
                event = None


async def test_the_key_stream_carries_a_queues_figures_at_most_once_a_second(
    api: Api, http: aiohttp.ClientSession
) -> None:
    seen: list[tuple[float, str, dict]] = []
    reader = asyncio.create_task(sse_events(http, api.url("/stream"), api.key, seen))
    try:
        deadline = time.monotonic() + 5
        while not any(event == "ready" for _, event, _ in seen):
            assert time.monotonic() < deadline, "the stream never said ready"
            await asyncio.sleep(0.02)
        # Eight calls over about 2.5 s: four answered at once, four abandoned after 30 s.
        began = time.monotonic()
        for i in range(8):
            now = datetime.now(UTC)
            name = f"live-{i}"
            await post(api, {"event": "call_initiated", "call_id": name, "type": "voice",
                             "queue_id": "live", "occurred_at": now.isoformat()})  # fmt: skip
            if i % 2 == 0:
                await post(api, {"event": "call_routed", "call_id": name, "agent_id": "x"})
                await post(api, {"event": "call_answered", "call_id": name})
            else:
                ended = (now + timedelta(seconds=30)).isoformat()
                await post(api, {"event": "call_ended", "call_id": name,
                                 "end_reason": "abandoned", "occurred_at": ended})  # fmt: skip
            await asyncio.sleep(0.3)
        last_post = time.monotonic()
        deadline = last_post + 5
        while True:
            figures = [(t, data) for t, event, data in seen if event == "stats"]
            if figures and figures[-1][1]["offered"] == 8 and figures[-1][1]["abandoned"] == 4:
                break
            assert time.monotonic() < deadline, figures
            await asyncio.sleep(0.05)
    finally:
        reader.cancel()
    final_at, final = figures[-1]
    assert final_at - last_post < 2.0  # within 2 s of the last transition
    assert final["queue_id"] == "live" and final["window"] == "1h"
    # Four answered at once, of eight offered with no short abandon.
    assert (final["answered"], final["service_level_pct"], final["abandon_rate_pct"]) == (
        4,
        50.0,
        50.0,
    )
    assert final["waiting_now"] == 0 and final["service_level_target_pct"] == 80
    times = [t for t, _ in figures if t >= began]
    assert len(times) >= 2
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) > 0.9, gaps  # at most once a second


async def test_bad_parameters_get_a_400_naming_them_and_other_keys_queues_do_not_exist(
    api: Api, make_api
) -> None:
    await post(api, {"event": "call_initiated", "type": "voice", "queue_id": "mine"})
    for path, named in (
        ("/stats/queues?window=2h", "window must be one of 15m, 1h, 24h"),
        ("/stats/queues?window=1h&since=2026-03-01T00:00:00Z", "either window or since/until"),
        ("/stats/queues?until=2026-03-01T00:00:00Z", "until needs since"),
        ("/stats/queues?since=2026-03-01T00:00:00Z&until=2026-02-01T00:00:00Z", "after since"),
        ("/stats/queues?since=2026-01-01T00:00:00Z&until=2026-02-02T00:00:00Z", "31 days"),
        ("/stats/queues?since=yesterday", "since must be an ISO 8601 date and time"),
        ("/stats/queues?type=fax", "type must be one of voice, video"),
        ("/stats/queues?windw=1h", "Unknown query parameter: windw"),
        ("/stats/agents?window=1d", "window must be one of 15m, 1h, 24h"),
        ("/stats/queues/mine/series?bucket=10s", "bucket must be one of 1m, 5m, 1h"),
        (
            "/stats/queues/mine/series?since=2026-01-01T00:00:00Z&until=2026-01-03T00:00:00Z",
            "2880 points, more than 1440",
        ),
        ("/stats/queues/" + "q" * 101 + "/series", "queue_id must be at most 100"),
    ):
        status, body, _ = await api.request("GET", path)
        assert status == 400 and named in body["message"], (path, body)

    other = await make_api()
    status, body, _ = await other.request("GET", "/stats/queues/mine/series")
    assert (status, body["message"]) == (404, "Queue not found")
    assert (await stats_of(other, "/stats/queues?window=24h"))["data"] == []
    assert (await stats_of(api, "/stats/queues/mine/series?window=24h&bucket=1h"))["data"]
