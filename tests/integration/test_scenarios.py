"""Outcomes as telephony has them, scripted courses, and a clock the caller controls: advance and
hangup through the same compare-and-set as the timers."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from itertools import pairwise
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from tests.integration.conftest import Api
from tests.integration.platform import Platform

# A scenario time long enough that its timer never fires during a test.
NEVER_MS = 3_600_000


async def history(api: Api, call_id: str) -> list[dict[str, Any]]:
    status, body, _ = await api.request("GET", f"/calls/{call_id}/events")
    assert status == 200, body
    return body["data"]


def path_of(events: list[dict[str, Any]]) -> list[str]:
    return [event["status"] for event in events]


def parse_time(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def gaps_ms(events: list[dict[str, Any]]) -> list[float]:
    times = [parse_time(event["occurred_at"]) for event in events]
    return [(b - a).total_seconds() * 1000 for a, b in pairwise(times)]


async def create(api: Api, **body: Any) -> dict[str, Any]:
    status, created, _ = await api.create_call(**body)
    assert status == 201, created
    return created


async def completed(api: Api, call_id: str) -> dict[str, Any]:
    return await api.wait_for(call_id, lambda c: c["status"] == "COMPLETED")


async def test_unscripted_calls_end_with_completed_or_no_answer_by_their_path(api: Api) -> None:
    ids = [(await create(api))["call_id"] for _ in range(12)]

    for call_id in ids:
        call = await completed(api, call_id)
        answered = "ANSWERED" in path_of(await history(api, call_id))
        assert call["end_reason"] == ("completed" if answered else "no_answer")
        assert "scenario" not in call


@pytest.mark.parametrize(
    ("outcome", "path"),
    [
        ("completed", ["QUEUED", "RINGING", "ANSWERED", "COMPLETED"]),
        ("no_answer", ["QUEUED", "RINGING", "UNANSWERED", "COMPLETED"]),
        ("busy", ["QUEUED", "RINGING", "UNANSWERED", "COMPLETED"]),
        ("failed", ["QUEUED", "RINGING", "UNANSWERED", "COMPLETED"]),
    ],
)
async def test_each_scripted_outcome_takes_its_path_and_end_reason(
    api: Api, outcome: str, path: list[str]
) -> None:
    created = await create(api, scenario={"outcome": outcome, "ring_ms": 30})

    call = await completed(api, created["call_id"])
    events = await history(api, created["call_id"])

    assert path_of(events) == path
    assert call["end_reason"] == outcome
    assert events[-1]["data"]["end_reason"] == outcome
    assert created["scenario"]["outcome"] == call["scenario"]["outcome"] == outcome


async def test_scripted_timings_hold_exactly_with_the_hold_inside_the_talk(api: Api) -> None:
    scenario = {"outcome": "completed", "ring_ms": 300, "talk_ms": 800, "hold_ms": 400}
    created = await create(api, scenario=scenario)

    await completed(api, created["call_id"])
    events = await history(api, created["call_id"])

    assert path_of(events) == [
        "QUEUED", "RINGING", "ANSWERED", "ON_HOLD", "ANSWERED", "COMPLETED",
    ]  # fmt: skip
    _queued, ringing, talk_before, hold, talk_after = gaps_ms(events)
    assert ringing == pytest.approx(300, abs=60)
    assert hold == pytest.approx(400, abs=60)
    assert talk_before == pytest.approx(200, abs=60)
    assert talk_before + hold + talk_after == pytest.approx(800, abs=100)
    # Time scale does not apply to a scenario's times: a hold of 400 ms is 0.4 s, not flagged.
    assert "hold_limit_exceeded" not in events[-1]["flags"]


async def test_a_seeded_call_repeats_its_choices(api: Api) -> None:
    first = await create(api, scenario={"seed": 20_261_205})
    again = await create(api, scenario={"seed": 20_261_205})

    assert first["scenario"] == again["scenario"]
    await completed(api, first["call_id"])
    await completed(api, again["call_id"])
    first_events = await history(api, first["call_id"])
    again_events = await history(api, again["call_id"])
    assert path_of(first_events) == path_of(again_events)
    for one, other in zip(gaps_ms(first_events), gaps_ms(again_events), strict=True):
        assert one == pytest.approx(other, abs=60)


async def test_seeds_choose_outcomes_as_unscripted_calls_do(api: Api) -> None:
    plans = [(await create(api, scenario={"seed": seed}))["scenario"] for seed in range(20)]

    assert {plan["outcome"] for plan in plans} == {"completed", "no_answer"}


async def test_scripted_upload_failures_are_retried_then_the_recording_is_stored(
    api: Api, pg: asyncpg.Connection
) -> None:
    created = await create(api, scenario={"fail_upload_attempts": 2, "ring_ms": 10})

    await api.wait_recorded(created["call_id"])

    attempts = await pg.fetchval(
        "SELECT attempts FROM recordings WHERE call_id = $1::uuid", created["call_id"]
    )
    assert attempts == 3


async def test_a_bad_scenario_is_a_400_naming_the_field(api: Api) -> None:
    status, body, _ = await api.create_call(scenario={"outcome": "busy", "talk_ms": 5})

    assert status == 400
    assert (
        body["message"] == "scenario.talk_ms applies only to an answered call, not to outcome busy"
    )


# Advance: the timer, now.


async def advance(api: Api, call_id: str, to: str | None = None) -> tuple[int, Any]:
    query = f"?to={to}" if to else ""
    status, body, _ = await api.request("POST", f"/calls/{call_id}/advance{query}")
    return status, body


async def test_advance_moves_a_call_to_its_next_state_and_answers_that_transition(
    api: Api,
) -> None:
    created = await create(api, scenario={"outcome": "busy", "ring_ms": NEVER_MS})
    call_id = created["call_id"]
    await api.wait_for(call_id, lambda c: c["status"] == "RINGING")

    status, moved = await advance(api, call_id)

    assert status == 200
    assert moved | {"timestamp": None} == {
        "call_id": call_id,
        "seq": 3,
        "status": "UNANSWERED",
        "previous_status": "RINGING",
        "event": "call_unanswered",
        "flags": [],
        "timestamp": None,
        "end_reason": None,
    }


async def test_advance_to_completed_runs_through_every_state_in_order(api: Api) -> None:
    scenario = {"outcome": "completed", "ring_ms": NEVER_MS, "talk_ms": NEVER_MS, "hold_ms": 5}
    created = await create(api, scenario=scenario)

    status, moved = await advance(api, created["call_id"], "COMPLETED")

    assert status == 200
    assert (moved["status"], moved["seq"], moved["end_reason"]) == ("COMPLETED", 6, "completed")
    events = await history(api, created["call_id"])
    assert path_of(events) == [
        "QUEUED", "RINGING", "ANSWERED", "ON_HOLD", "ANSWERED", "COMPLETED",
    ]  # fmt: skip
    # The recording follows as for any call.
    await api.wait_recorded(created["call_id"])


async def test_advance_toward_a_state_settles_an_unscripted_choice_that_way(api: Api) -> None:
    created = await create(api)

    status, moved = await advance(api, created["call_id"], "UNANSWERED")

    assert (status, moved["status"]) == (200, "UNANSWERED")


async def test_advance_racing_the_timer_makes_one_transition(api: Api) -> None:
    ring_ms = 150
    scenario = {"outcome": "completed", "ring_ms": ring_ms, "talk_ms": NEVER_MS}
    created = [await create(api, scenario=scenario) for _ in range(16)]

    async def race(call_id: str, offset_ms: int) -> dict[str, Any]:
        await api.wait_for(call_id, lambda c: c["status"] == "RINGING")
        rang_at = parse_time((await history(api, call_id))[1]["occurred_at"])
        fires_at = rang_at.timestamp() + ring_ms / 1000
        await asyncio.sleep(max(0.0, fires_at + offset_ms / 1000 - time.time()))
        status, moved = await advance(api, call_id)
        assert status == 200, moved
        return moved

    offsets = [-40 + 12 * i for i in range(16)]  # around the moment the timer fires
    moves = await asyncio.gather(
        *(race(c["call_id"], offset) for c, offset in zip(created, offsets, strict=True))
    )

    await asyncio.sleep(0.1)  # the timers of calls advanced first fire now, stale
    course = ["QUEUED", "RINGING", "ANSWERED", "COMPLETED"]
    for call, moved in zip(created, moves, strict=True):
        # Before or as the timer fires, the advance and the timer both ask for RINGING ->
        # ANSWERED: one of them makes it, the advance answers with that one transition, and the
        # other finds the call moved on. After, the advance moves ANSWERED -> COMPLETED.
        assert moved["seq"] in (3, 4)
        assert moved["status"] == course[moved["seq"] - 1]
        assert path_of(await history(api, call["call_id"])) == course[: moved["seq"]]
    assert {moved["seq"] for moved in moves} == {3, 4}, "both sides of the race were run"


@pytest.mark.parametrize(
    ("scenario", "to", "message"),
    [
        ({"outcome": "no_answer"}, "ANSWERED", "its course does not take it to ANSWERED"),
        ({}, "ON_HOLD", "its course does not take it to ON_HOLD"),
        ({}, "QUEUED", "is QUEUED already"),
    ],
)
async def test_advance_to_a_state_off_the_calls_course_is_a_409(
    api: Api, scenario: dict[str, Any], to: str, message: str
) -> None:
    created = await create(api, scenario={"ring_ms": NEVER_MS} | scenario)

    status, body = await advance(api, created["call_id"], to)

    assert status == 409
    assert message in body["message"]


async def test_advance_of_a_completed_call_is_a_409(api: Api) -> None:
    created = await create(api, scenario={"ring_ms": 10, "outcome": "failed"})
    await completed(api, created["call_id"])

    status, body = await advance(api, created["call_id"])

    assert (status, body["error"]) == (409, "Conflict")
    assert body["message"] == f"Call {created['call_id']} has completed (failed)"


async def test_advance_and_hangup_of_an_ingested_call_are_409(api: Api) -> None:
    status, event, _ = await api.request(
        "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
    )
    assert status == 201

    for action in ("advance", "hangup"):
        status, body, _ = await api.request("POST", f"/calls/{event['call_id']}/{action}")
        assert status == 409
        assert "ingested call: it moves only by the events posted for it" in body["message"]


async def test_advance_of_an_unscripted_call_on_hold_waits_for_its_event(api: Api) -> None:
    created = await create(api)
    call_id = created["call_id"]
    await advance(api, call_id, "ANSWERED")
    status, _, _ = await api.request(
        "POST", "/events", json={"event": "call_hold", "call_id": call_id}
    )
    assert status == 201

    status, body = await advance(api, call_id)

    assert status == 409
    assert "waits for an event" in body["message"]


async def test_advance_of_an_unknown_call_is_a_404(api: Api) -> None:
    status, _ = await advance(api, "0b6f4c3e-2f4a-4d9e-9a57-3c1f1d2e8b01")

    assert status == 404


async def test_a_bad_to_is_a_400(api: Api) -> None:
    created = await create(api)

    status, body = await advance(api, created["call_id"], "LATER")

    assert status == 400
    assert body["message"].startswith("to must be one of QUEUED")


# Hang up: the caller ends the call now.


async def test_hangup_before_an_answer_ends_the_call_canceled(api: Api) -> None:
    created = await create(api, scenario={"ring_ms": NEVER_MS})

    status, body, _ = await api.request("POST", f"/calls/{created['call_id']}/hangup")

    assert status == 200
    assert (body["status"], body["event"], body["end_reason"]) == (
        "COMPLETED",
        "call_ended",
        "canceled",
    )
    call = await api.wait_recorded(created["call_id"])
    assert call["end_reason"] == "canceled"


async def test_hangup_after_an_answer_ends_the_call_completed(api: Api) -> None:
    created = await create(api, scenario={"outcome": "completed", "talk_ms": NEVER_MS})
    await advance(api, created["call_id"], "ANSWERED")

    status, body, _ = await api.request("POST", f"/calls/{created['call_id']}/hangup")

    assert (status, body["end_reason"], body["previous_status"]) == (200, "completed", "ANSWERED")


async def test_hangup_of_a_completed_call_is_a_409(api: Api) -> None:
    created = await create(api, scenario={"ring_ms": NEVER_MS})
    await api.request("POST", f"/calls/{created['call_id']}/hangup")

    status, body, _ = await api.request("POST", f"/calls/{created['call_id']}/hangup")

    assert (status, body["message"]) == (409, f"Call {created['call_id']} has completed (canceled)")


async def test_a_whole_scripted_call_takes_milliseconds(api: Api, platform: Platform) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    created = await create(api, scenario={"outcome": "completed", "ring_ms": NEVER_MS})

    status, moved = await advance(api, created["call_id"], "COMPLETED")

    assert (status, moved["status"]) == (200, "COMPLETED")
    assert loop.time() - started < 0.5


async def test_a_scripted_hold_whose_timer_redis_lost_is_resumed_by_upkeep(
    platform_factory, make_api
) -> None:
    own = await platform_factory()
    api = await make_api(max_concurrent=100, max_cps=100, on=own)
    scenario = {"outcome": "completed", "ring_ms": NEVER_MS, "talk_ms": 600, "hold_ms": 400}
    created = await create(api, scenario=scenario)
    status, held = await advance(api, created["call_id"], "ON_HOLD")
    assert (status, held["status"]) == (200, "ON_HOLD")
    redis = Redis.from_url(own.redis_url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()

    # Upkeep (every 0.3 s, 1 s past the longest rest) sets the hold's timer again.
    call = await api.wait_for(created["call_id"], lambda c: c["status"] == "COMPLETED")

    assert call["end_reason"] == "completed"
