"""Contact-centre events: `POST /events` moves calls through the one state machine, the business
rules flag them, `event_id` deduplicates, and the history reads back in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from core import keys
from tests.integration.conftest import Api

# Every test call starts at this moment (call_initiated's occurred_at) unless it says otherwise,
# so the rules can be driven by timestamps to the second without waiting.
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
READ_TIMEOUT_S = 5.0

# DESIGN.md's lifecycle table: (from, event) -> to.
VALID: dict[tuple[str, str], str] = {
    ("QUEUED", "call_routed"): "RINGING",
    ("RINGING", "call_answered"): "ANSWERED",
    ("RINGING", "call_unanswered"): "UNANSWERED",
    ("ANSWERED", "call_hold"): "ON_HOLD",
    ("ON_HOLD", "call_resumed"): "ANSWERED",
} | {
    (status, "call_ended"): "COMPLETED"
    for status in ("QUEUED", "RINGING", "ANSWERED", "ON_HOLD", "UNANSWERED")
}
STATES = ["QUEUED", "RINGING", "ANSWERED", "ON_HOLD", "UNANSWERED", "COMPLETED"]
# Where each event takes a call: the second state an invalid transition's message names.
TARGET = {
    "call_routed": "RINGING",
    "call_answered": "ANSWERED",
    "call_unanswered": "UNANSWERED",
    "call_hold": "ON_HOLD",
    "call_resumed": "ANSWERED",
    "call_ended": "COMPLETED",
}
# The least each event needs to pass validation.
MINIMAL: dict[str, dict[str, Any]] = {
    "call_routed": {"agent_id": "agent-7"},
    "call_ended": {"end_reason": "completed"},
}
# The events that bring a new ingested call to each state.
ROUTE_TO: dict[str, list[str]] = {
    "QUEUED": [],
    "RINGING": ["call_routed"],
    "ANSWERED": ["call_routed", "call_answered"],
    "ON_HOLD": ["call_routed", "call_answered", "call_hold"],
    "UNANSWERED": ["call_routed", "call_unanswered"],
    "COMPLETED": ["call_ended"],
}
INVALID = [(state, event) for state in STATES for event in TARGET if (state, event) not in VALID]
EVENT_FIELDS = {
    "call_id",
    "seq",
    "status",
    "previous_status",
    "event",
    "flags",
    "timestamp",
    "event_id",
    "raised_flags",
    "data",
    "occurred_at",
    "received_at",
}
MESSAGE_FIELDS = {"call_id", "seq", "status", "previous_status", "event", "flags", "timestamp"}


def at(seconds: float) -> str:
    """T0 plus `seconds`, as an ISO 8601 occurred_at."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def iso_ms(seconds: float) -> str:
    """T0 plus `seconds` the way the API prints times (milliseconds and a Z)."""
    moment = T0 + timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- talking to the API ----------------------------------------------------------------------


async def send(
    api: Api, event: str, call_id: str | None = None, *, path: str = "/events", **fields: Any
) -> tuple[int, dict[str, Any]]:
    body = {"event": event} | ({"call_id": call_id} if call_id else {}) | fields
    status, answer, _ = await api.request("POST", path, json=body)
    return status, answer


async def initiate(api: Api, **fields: Any) -> str:
    """A new ingested call, started at T0 unless `fields` say otherwise; returns its id."""
    status, body = await send(
        api,
        "call_initiated",
        **({"type": "voice", "queue_id": "support", "occurred_at": at(0)} | fields),
    )
    assert status == 201, body
    return body["call_id"]


async def move(api: Api, call_id: str, event: str, **fields: Any) -> dict[str, Any]:
    """Post an event that must be accepted; returns the stored event."""
    status, body = await send(api, event, call_id, **(MINIMAL.get(event, {}) | fields))
    assert status == 201, body
    return body


async def call_in(api: Api, state: str) -> str:
    """A new ingested call brought to `state` by events."""
    call_id = await initiate(api)
    for second, event in enumerate(ROUTE_TO[state], start=1):
        await move(api, call_id, event, occurred_at=at(second))
    return call_id


async def history(api: Api, call_id: str, prefix: str = "") -> list[dict[str, Any]]:
    status, body, _ = await api.request("GET", f"{prefix}/calls/{call_id}/events")
    assert status == 200, body
    assert body["call_id"] == call_id
    return body["data"]


async def stored(pg, call_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The call's row and its call_events rows, straight from PostgreSQL (`call_id`: the id its
    key knows it by, unique enough among the tests' random ids)."""
    call = await pg.fetchrow(
        """
        SELECT kind, status, seq, flags, agent_id, queue_id, call_type, end_reason, updated_at,
               started_at, routed_at, answered_at, held_at, ended_at
          FROM calls WHERE coalesce(ref, id::text) = $1
        """,
        call_id,
    )
    events = await pg.fetch(
        """
        SELECT seq, event, event_id, from_status, to_status, flags, raised_flags, data
          FROM call_events
         WHERE call_id = (SELECT id FROM calls WHERE coalesce(ref, id::text) = $1)
         ORDER BY seq
        """,
        call_id,
    )
    rows = [dict(row) | {"data": json.loads(row["data"])} for row in events]
    return (dict(call) if call else None), rows


# -- watching what is published --------------------------------------------------------------


@dataclass
class SseEvent:
    event: str | None
    data: str


class KeyStream:
    """`GET /stream` of one key, read one SSE event at a time (comments and queue figures
    skipped)."""

    def __init__(self, api: Api, response: aiohttp.ClientResponse) -> None:
        self.api, self.response = api, response

    async def next(self, timeout: float = READ_TIMEOUT_S) -> SseEvent:
        name: str | None = None
        data: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                assert raw, "the key stream ended"
                line = raw.decode().rstrip("\r\n")
                if not line:
                    # A queue's figures (`stats`, test_stats.py) come as its calls move.
                    if data and name != "stats":
                        return SseEvent(name, "\n".join(data))
                    name, data = None, []
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "data":
                    data.append(value)
                elif field == "event":
                    name = value

    async def message(self) -> dict[str, Any]:
        event = await self.next()
        assert event.event == "call", event
        return json.loads(event.data)

    async def until(self, call_id: str, seq: int) -> list[dict[str, Any]]:
        """Every message up to and including `call_id`'s message at `seq`."""
        seen = []
        while True:
            message = await self.message()
            seen.append(message)
            if message["call_id"] == call_id and message["seq"] == seq:
                return seen

    async def before_marker(self) -> tuple[list[dict[str, Any]], str]:
        """Every message published before a marker call created now (whatever this key did
        before that has been published ahead of it), and the marker's call id."""
        marker = await initiate(self.api, queue_id="marker")
        seen = await self.until(marker, 1)
        return seen[:-1], marker


@contextlib.asynccontextmanager
async def key_stream(api: Api) -> AsyncIterator[KeyStream]:
    async with api.http.get(api.url("/stream"), headers=api.auth) as response:
        assert response.status == 200, await response.text()
        stream = KeyStream(api, response)
        ready = await stream.next()
        assert ready.event == "ready", ready
        yield stream


@contextlib.asynccontextmanager
async def raw_channel(redis: Redis) -> AsyncIterator[Any]:
    """The pub/sub channel itself: every PUBLISH, before any subscriber drops repeats."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.EVENTS_CHANNEL)
    confirmed = await pubsub.get_message(timeout=READ_TIMEOUT_S)
    assert confirmed and confirmed["type"] == "subscribe", confirmed
    try:
        yield pubsub
    finally:
        await pubsub.aclose()


async def published_until(pubsub: Any, call_id: str, seq: int) -> list[dict[str, Any]]:
    """Raw messages up to and including `call_id`'s at `seq`."""
    seen = []
    async with asyncio.timeout(READ_TIMEOUT_S):
        while True:
            item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if item is None:
                continue
            message = json.loads(item["data"])
            seen.append(message)
            if message["call_id"] == call_id and message["seq"] == seq:
                return seen


# -- 1. the whole lifecycle ------------------------------------------------------------------


async def test_an_ingested_call_goes_through_every_valid_transition_in_order(api: Api, pg) -> None:
    call_id = str(uuid.uuid4())
    steps = [
        (
            "call_initiated",
            {
                "call_id": call_id,
                "type": "video",
                "queue_id": "sales",
                "from": "+14155550100",
                "to": "+14155550199",
                "metadata": {"crm": "42"},
                "occurred_at": at(0),
            },
        ),
        ("call_routed", {"agent_id": "agent-1", "occurred_at": at(5)}),
        ("call_answered", {"occurred_at": at(20)}),
        ("call_hold", {"occurred_at": at(30)}),
        ("call_resumed", {"occurred_at": at(40)}),
        ("call_hold", {"occurred_at": at(50)}),
        ("call_resumed", {"occurred_at": at(70)}),
        ("call_ended", {"end_reason": "completed", "occurred_at": at(200)}),
    ]
    expected = [
        (None, "QUEUED"),
        ("QUEUED", "RINGING"),
        ("RINGING", "ANSWERED"),
        ("ANSWERED", "ON_HOLD"),
        ("ON_HOLD", "ANSWERED"),
        ("ANSWERED", "ON_HOLD"),
        ("ON_HOLD", "ANSWERED"),
        ("ANSWERED", "COMPLETED"),
    ]

    answers = []
    for (event, fields), (before, after), seconds in zip(
        steps, expected, [0, 5, 20, 30, 40, 50, 70, 200], strict=True
    ):
        body = {"event": event, "call_id": call_id} | fields
        status, answer, _ = await api.request("POST", "/events", json=body)
        assert status == 201, answer
        assert set(answer) == EVENT_FIELDS, answer
        assert (answer["call_id"], answer["event"]) == (call_id, event)
        assert (answer["previous_status"], answer["status"]) == (before, after)
        assert answer["seq"] == len(answers) + 1
        assert answer["occurred_at"] == answer["timestamp"] == iso_ms(seconds)
        assert answer["flags"] == answer["raised_flags"] == [], "no rule is broken here"
        assert answer["event_id"] is None
        assert answer["received_at"].endswith("Z")
        answers.append(answer)

    assert answers[1]["data"] == {"agent_id": "agent-1"}
    assert answers[-1]["data"] == {"end_reason": "completed"}
    assert await history(api, call_id) == answers
    assert await history(api, call_id, prefix="/api") == answers

    _, call, _ = await api.get_call(call_id)
    assert call["status"] == "COMPLETED"
    assert (call["type"], call["source"], call["queue_id"]) == ("video", "ingested", "sales")
    assert (call["agent_id"], call["end_reason"]) == ("agent-1", "completed")
    assert (call["from"], call["to"], call["metadata"]) == (
        "+14155550100",
        "+14155550199",
        {"crm": "42"},
    )
    assert call["flags"] == []

    row, events = await stored(pg, call_id)
    assert row["seq"] == 8 and row["status"] == "COMPLETED" and row["kind"] == "ingested"
    assert row["started_at"] == T0 and row["ended_at"] == T0 + timedelta(seconds=200)
    assert row["answered_at"] == T0 + timedelta(seconds=20)
    assert row["held_at"] == T0 + timedelta(seconds=50), "the latest hold"
    assert [(e["seq"], e["from_status"], e["to_status"]) for e in events] == [
        (i, before, after) for i, (before, after) in enumerate(expected, start=1)
    ]


async def test_a_rung_call_that_is_not_answered_can_still_end(api: Api) -> None:
    call_id = await initiate(api)

    routed = await move(api, call_id, "call_routed")
    unanswered = await move(api, call_id, "call_unanswered")
    ended = await move(api, call_id, "call_ended", end_reason="abandoned")

    assert [(a["previous_status"], a["status"]) for a in (routed, unanswered, ended)] == [
        ("QUEUED", "RINGING"),
        ("RINGING", "UNANSWERED"),
        ("UNANSWERED", "COMPLETED"),
    ]
    assert [e["event"] for e in await history(api, call_id)] == [
        "call_initiated",
        "call_routed",
        "call_unanswered",
        "call_ended",
    ]


@pytest.mark.parametrize("state", ["QUEUED", "RINGING", "ANSWERED", "ON_HOLD", "UNANSWERED"])
async def test_call_ended_ends_a_call_from_every_state_but_completed(api: Api, state) -> None:
    call_id = await call_in(api, state)

    ended = await move(api, call_id, "call_ended", end_reason="canceled")

    assert (ended["previous_status"], ended["status"]) == (state, "COMPLETED")
    assert ended["seq"] == len(ROUTE_TO[state]) + 2
    _, call, _ = await api.get_call(call_id)
    assert (call["status"], call["end_reason"]) == ("COMPLETED", "canceled")


# -- 2. what the state machine refuses -------------------------------------------------------


@pytest.mark.parametrize(("state", "event"), INVALID, ids=[f"{e}-from-{s}" for s, e in INVALID])
async def test_an_invalid_transition_is_422_naming_both_states_and_changes_nothing(
    api: Api, pg, state, event
) -> None:
    call_id = await call_in(api, state)
    if state == "COMPLETED":
        await api.wait_recorded(call_id)  # the upload touches the call; let it be done first
    before = await stored(pg, call_id)
    listed = await history(api, call_id)

    async with key_stream(api) as stream:
        status, body = await send(
            api, event, call_id, event_id=f"refused-{event}", **MINIMAL.get(event, {})
        )
        published, _ = await stream.before_marker()

    assert status == 422, body
    assert body == {
        "error": "Unprocessable Entity",
        "message": f"Invalid transition: {event} cannot move a call from {state} "
        f"to {TARGET[event]}",
    }
    assert await stored(pg, call_id) == before
    assert await history(api, call_id) == listed
    assert published == [], "a refused event published something"
    _, call, _ = await api.get_call(call_id)
    assert call["status"] == state


async def test_the_seed_example_of_an_invalid_transition(api: Api) -> None:
    call_id = await initiate(api)

    status, body = await send(api, "call_hold", call_id)

    assert (status, body["message"]) == (
        422,
        "Invalid transition: call_hold cannot move a call from QUEUED to ON_HOLD",
    )


async def test_a_second_call_ended_is_refused_and_the_first_stays(api: Api, pg) -> None:
    call_id = await call_in(api, "ANSWERED")
    first = await move(api, call_id, "call_ended", end_reason="completed")

    status, body = await send(api, "call_ended", call_id, end_reason="failed")

    assert status == 422
    assert body["message"] == (
        "Invalid transition: call_ended cannot move a call from COMPLETED to COMPLETED"
    )
    _, events = await stored(pg, call_id)
    assert [e["to_status"] for e in events].count("COMPLETED") == 1
    assert (await history(api, call_id))[-1] == first
    _, call, _ = await api.get_call(call_id)
    assert call["end_reason"] == "completed"


@pytest.mark.parametrize("event_id", [None, "another-start"])
async def test_call_initiated_for_an_existing_call_id_is_409(api: Api, pg, event_id) -> None:
    call_id = await initiate(api, event_id="first-start")

    status, body = await send(
        api,
        "call_initiated",
        call_id,
        type="voice",
        queue_id="other",
        **({"event_id": event_id} if event_id else {}),
    )

    assert status == 409, body
    assert body["error"] == "Conflict" and call_id in body["message"]
    _, events = await stored(pg, call_id)
    assert len(events) == 1 and events[0]["event_id"] == "first-start"


# -- 3. spellings, paths and keys ------------------------------------------------------------


async def test_a_whole_lifecycle_in_camel_case(api: Api, pg) -> None:
    call_id = str(uuid.uuid4())
    bodies = [
        {
            "event": "call_initiated",
            "callId": call_id,
            "eventId": "c1",
            "type": "voice",
            "queueId": "camel",
            "occurredAt": at(0),
        },
        {
            "event": "call_routed",
            "callId": call_id,
            "eventId": "c2",
            "agentId": "agent-c",
            "routingTime": 3,
            "occurredAt": at(3),
        },
        {
            "event": "call_answered",
            "callId": call_id,
            "eventId": "c3",
            "waitTime": 12.5,
            "occurredAt": at(12.5),
        },
        {
            "event": "call_hold",
            "callId": call_id,
            "eventId": "c4",
            "holdDuration": 20,
            "occurredAt": at(20),
        },
        {
            "event": "call_resumed",
            "callId": call_id,
            "eventId": "c5",
            "holdDuration": 20,
            "occurredAt": at(40),
        },
        {
            "event": "call_ended",
            "callId": call_id,
            "eventId": "c6",
            "endReason": "completed",
            "duration": 100,
            "occurredAt": at(112.5),
        },
    ]

    answers = []
    for body in bodies:
        status, answer, _ = await api.request("POST", "/events", json=body)
        assert status == 201, answer
        answers.append(answer)

    assert [a["status"] for a in answers] == [
        "QUEUED",
        "RINGING",
        "ANSWERED",
        "ON_HOLD",
        "ANSWERED",
        "COMPLETED",
    ]
    assert [a["event_id"] for a in answers] == ["c1", "c2", "c3", "c4", "c5", "c6"]
    assert [a["data"] for a in answers[1:]] == [
        {"agent_id": "agent-c", "routing_time": 3},
        {"wait_time": 12.5},
        {"hold_duration": 20},
        {"hold_duration": 20},
        {"end_reason": "completed", "duration": 100},
    ]
    assert answers[2]["occurred_at"] == iso_ms(12.5)
    assert all(a["flags"] == [] for a in answers)
    assert await history(api, call_id) == answers
    # eventId deduplicates in camelCase too.
    status, again, _ = await api.request("POST", "/events", json=bodies[2])
    assert (status, again) == (200, answers[2])
    _, call, _ = await api.get_call(call_id)
    assert (call["queue_id"], call["agent_id"], call["end_reason"]) == (
        "camel",
        "agent-c",
        "completed",
    )


async def test_snake_case_and_camel_case_mix_across_events(api: Api) -> None:
    call_id = await initiate(api)

    routed = await send(
        api, "call_routed", callId=call_id, agentId="agent-x", routing_time=2, occurredAt=at(2)
    )
    answered = await send(api, "call_answered", call_id, waitTime=4, occurred_at=at(4))

    assert routed[0] == answered[0] == 201, (routed, answered)
    assert routed[1]["data"] == {"agent_id": "agent-x", "routing_time": 2}
    assert answered[1]["data"] == {"wait_time": 4}


async def test_a_field_in_both_spellings_is_400(api: Api) -> None:
    call_id = await initiate(api)

    status, body = await send(api, "call_routed", call_id, agent_id="a", agentId="b")

    assert status == 400
    assert "agent_id" in body["message"]


async def test_api_events_is_the_same_endpoint(api: Api) -> None:
    status, started = await send(
        api, "call_initiated", path="/api/events", type="voice", queue_id="alias"
    )
    assert status == 201, started
    call_id = started["call_id"]

    status, routed = await send(api, "call_routed", call_id, path="/api/events", agent_id="a-1")
    assert status == 201, routed
    status, refused = await send(api, "call_hold", call_id, path="/api/events")
    assert status == 422, refused

    assert await history(api, call_id, prefix="/api") == [started, routed]
    assert await history(api, call_id) == [started, routed]


@pytest.mark.parametrize("path", ["/events", "/api/events"])
async def test_the_key_may_come_as_x_api_key(api: Api, path) -> None:
    headers = {"X-API-Key": api.key}
    body = {"event": "call_initiated", "type": "voice", "queue_id": "x"}
    async with api.http.post(api.url(path), json=body, headers=headers) as response:
        assert response.status == 201, await response.text()
        started = await response.json()
    async with api.http.get(
        api.url(f"/calls/{started['call_id']}/events"), headers=headers
    ) as response:
        assert response.status == 200
        assert (await response.json())["data"] == [started]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/events"),
        ("POST", "/api/events"),
        ("GET", "/calls/{call_id}/events"),
        ("GET", "/api/calls/{call_id}/events"),
    ],
)
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API key: send Authorization: Bearer <key>, or X-API-Key: <key>"),
        ({"Authorization": "Bearer not-a-key"}, "Invalid API key"),
        ({"X-API-Key": "not-a-key"}, "Invalid API key"),
    ],
    ids=["none", "bad-bearer", "bad-x-api-key"],
)
async def test_without_a_valid_key_it_is_401(api: Api, pg, method, path, headers, message) -> None:
    call_id = await initiate(api)
    body = {"event": "call_routed", "call_id": call_id, "agent_id": "a"}

    async with api.http.request(
        method, api.url(path.format(call_id=call_id)), json=body, headers=headers
    ) as response:
        status, answer = response.status, await response.json()

    assert (status, answer) == (401, {"error": "Unauthorized", "message": message})
    _, events = await stored(pg, call_id)
    assert len(events) == 1


@pytest.mark.parametrize("prefix", ["", "/api"])
async def test_the_history_of_what_cannot_be_a_call_id_is_400(api: Api, prefix) -> None:
    status, body, _ = await api.request("GET", f"{prefix}/calls/not%20a%20call/events")

    assert status == 400
    assert body == {
        "error": "Bad Request",
        "message": "call_id must be a UUID or 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', "
        "':' and '-', got 'not a call'",
    }


async def test_events_for_an_unknown_call_are_404(api: Api) -> None:
    unknown = str(uuid.uuid4())

    status, body = await send(api, "call_routed", unknown, agent_id="a")
    listed = await api.request("GET", f"/calls/{unknown}/events")

    assert (status, body) == (404, {"error": "Not Found", "message": "Call not found"})
    assert (listed[0], listed[1]["message"]) == (404, "Call not found")


async def test_another_keys_call_is_404_and_untouched(make_api, pg) -> None:
    owner, stranger = await make_api(), await make_api()
    call_id = await initiate(owner)
    await move(owner, call_id, "call_routed", event_id="owner-route")
    before = await stored(pg, call_id)

    for event in TARGET:
        # The owner's event_id must not fetch the owner's event back either.
        status, body = await send(
            stranger, event, call_id, event_id="owner-route", **MINIMAL.get(event, {})
        )
        assert (status, body) == (404, {"error": "Not Found", "message": "Call not found"})
    for prefix in ("", "/api"):
        status, body, _ = await stranger.request("GET", f"{prefix}/calls/{call_id}/events")
        assert (status, body) == (404, {"error": "Not Found", "message": "Call not found"})

    assert await stored(pg, call_id) == before


async def test_a_stranger_naming_another_keys_call_gets_a_call_of_its_own(make_api, pg) -> None:
    """Call ids a sender gives are its key's: another key's id, its event id too, makes an
    independent call, and nothing of the owner's call shows or changes."""
    owner, stranger = await make_api(), await make_api()
    call_id = await initiate(owner, event_id="start-1")
    before = (await owner.request("GET", f"/calls/{call_id}/events"))[:2]

    status, body = await send(
        stranger, "call_initiated", call_id, event_id="start-1", type="voice", queue_id="theirs"
    )

    assert status == 201, body
    assert (body["call_id"], body["seq"], body["data"]["queue_id"]) == (call_id, 1, "theirs")
    assert (await owner.request("GET", f"/calls/{call_id}/events"))[:2] == before
    _, theirs, _ = await stranger.get_call(call_id)
    assert theirs["queue_id"] == "theirs"


# -- 4. bad bodies ---------------------------------------------------------------------------

CALL = "5f1c1d0e-8a9b-4c59-9f3e-0b6a4b7c2d11"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"event": "call_routed", "call_id": CALL}, ["Missing required fields: agent_id"]),
        (
            {"event": "call_ended", "call_id": CALL, "end_reason": "bored"},
            ["end_reason must be one of completed, abandoned, failed, canceled"],
        ),
        ({"event": "call_ended", "call_id": CALL}, ["Missing required fields: end_reason"]),
        ({"event": "call_answered", "call_id": CALL, "wait_time": -1}, ["wait_time is too small"]),
        (
            {"event": "call_answered", "call_id": CALL, "wait_time": "5"},
            ["wait_time must be a number of seconds"],
        ),
        (
            {"event": "call_answered", "call_id": CALL, "wait_time": True},
            ["wait_time must be a number of seconds"],
        ),
        (
            {"event": "call_hold", "call_id": CALL, "hold_duration": -0.5},
            ["hold_duration is too small"],
        ),
        (
            {"event": "call_routed", "call_id": CALL, "agent_id": "a", "routing_time": "fast"},
            ["routing_time must be a number of seconds"],
        ),
        (
            {"event": "call_ended", "call_id": CALL, "end_reason": "completed", "duration": -3},
            ["duration is too small"],
        ),
        ({"event": "call_teleported", "call_id": CALL}, ["event must be one of call_initiated"]),
        ({"call_id": CALL}, ["Missing required fields: event"]),
        ({"event": "call_answered"}, ["Missing required fields: call_id"]),
        ({"event": "call_answered", "call_id": "4 2"}, ["call_id must be a UUID or 1 to 128"]),
        ({"event": "call_answered", "call_id": CALL, "colour": "red"}, ["colour"]),
        (
            {"event": "call_answered", "call_id": CALL, "occurred_at": "yesterday"},
            ["occurred_at must be an ISO 8601 date and time"],
        ),
        ({"event": "call_answered", "call_id": CALL, "event_id": ""}, ["event_id"]),
        ({"event": "call_initiated", "type": "fax", "queue_id": "q"}, ["type must be one of"]),
        ({"event": "call_initiated", "type": "voice"}, ["Missing required fields: queue_id"]),
        (
            {"event": "call_initiated", "type": "voice", "queue_id": "q", "from": "0800"},
            ["from must be an E.164 phone number"],
        ),
        (
            {"event": "call_initiated", "type": "voice", "queue_id": "q", "metadata": [1]},
            ["metadata must be a JSON object"],
        ),
        (
            {
                "event": "call_routed",
                "call_id": "no/pe",
                "agent_id": "",
                "routingTime": -1,
                "colour": "red",
            },
            [
                "call_id must be a UUID",
                "agent_id must not be empty",
                "routing_time is too small",
                "colour is not a known field",
            ],
        ),
        (
            {"event": "call_initiated", "queue_id": "", "callId": "x y", "to": 5},
            [
                "Missing required fields: type",
                "queue_id must not be empty",
                "call_id must be a UUID",
                "to must be a string",
            ],
        ),
    ],
    ids=[
        "missing-agent_id",
        "bad-end_reason",
        "missing-end_reason",
        "negative-wait_time",
        "string-wait_time",
        "boolean-wait_time",
        "negative-hold_duration",
        "string-routing_time",
        "negative-duration",
        "unknown-event",
        "missing-event",
        "missing-call_id",
        "non-uuid-call_id",
        "unknown-field",
        "bad-occurred_at",
        "empty-event_id",
        "bad-type",
        "missing-queue_id",
        "bad-from",
        "list-metadata",
        "four-bad-fields",
        "four-bad-initiated-fields",
    ],
)
async def test_a_bad_event_is_400_naming_every_bad_field(api: Api, body, named) -> None:
    status, answer, _ = await api.request("POST", "/events", json=body)

    assert status == 400, answer
    assert answer["error"] == "Bad Request"
    for words in named:
        assert words in answer["message"], (words, answer["message"])


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{not json", "Malformed JSON"),
        (b"", "Request body must be a JSON object"),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b'"call_ended"', "Request body must be a JSON object"),
    ],
    ids=["malformed", "empty", "array", "string"],
)
async def test_a_body_that_is_not_an_object_is_400(api: Api, raw, words) -> None:
    status, body, _ = await api.request(
        "POST", "/events", data=raw, headers={"Content-Type": "application/json"}
    )

    assert status == 400
    assert body["error"] == "Bad Request" and words in body["message"]


async def test_a_bad_event_for_a_real_call_writes_nothing(api: Api, pg) -> None:
    call_id = await initiate(api)
    before = await stored(pg, call_id)

    status, _ = await send(api, "call_routed", call_id, routing_time=-1)

    assert status == 400
    assert await stored(pg, call_id) == before


# -- 5. event_id deduplication ---------------------------------------------------------------


async def test_a_repeated_event_id_answers_200_with_the_original_and_writes_nothing(
    api: Api, pg
) -> None:
    call_id = await initiate(api)
    status, first = await send(api, "call_routed", call_id, event_id="r-1", agent_id="agent-1")
    assert status == 201

    async with key_stream(api) as stream:
        status, again = await send(api, "call_routed", call_id, event_id="r-1", agent_id="agent-1")
        published, _ = await stream.before_marker()

    assert status == 200
    assert again == first
    assert published == []
    _, events = await stored(pg, call_id)
    assert [e["event_id"] for e in events] == [None, "r-1"]


@pytest.mark.parametrize(
    ("repeat", "field"),
    [
        ({"event": "call_routed", "agent_id": "agent-2"}, "agent_id"),
        ({"event": "call_routed", "agent_id": "agent-1", "routing_time": 3}, "routing_time"),
        (
            {"event": "call_routed", "agent_id": "agent-1", "occurred_at": "2026-01-01T00:00:00Z"},
            "occurred_at",
        ),
        ({"event": "call_answered"}, "event"),
    ],
    ids=["another-agent", "a-field-added", "another-time", "another-event"],
)
async def test_an_event_id_reused_for_another_event_is_422_naming_the_field(
    api: Api, pg, repeat: dict, field: str
) -> None:
    """Like an Idempotency-Key reused with another body: the sender's mistake, said, and
    nothing changes."""
    call_id = await initiate(api)
    status, _ = await send(api, "call_routed", call_id, event_id="r-1", agent_id="agent-1")
    assert status == 201
    before = await stored(pg, call_id)

    body = {"call_id": call_id, "event_id": "r-1"} | repeat
    status, answer, _ = await api.request("POST", "/events", json=body)

    assert status == 422, answer
    assert answer == {
        "error": "Unprocessable Entity",
        "message": f"event_id 'r-1' was already used for a different event: its {field} differs",
    }
    assert await stored(pg, call_id) == before


async def test_a_call_initiated_id_reused_with_another_queue_is_422(api: Api) -> None:
    status, _ = await send(api, "call_initiated", event_id="start-9", type="voice", queue_id="q")
    assert status == 201
    status, answer = await send(
        api, "call_initiated", event_id="start-9", type="voice", queue_id="other"
    )
    assert (status, answer["message"]) == (
        422,
        "event_id 'start-9' was already used for a different event: its queue_id differs",
    )


async def test_an_event_id_repeated_after_the_call_moved_on_is_still_the_original(
    api: Api,
) -> None:
    call_id = await initiate(api)
    _, routed = await send(api, "call_routed", call_id, event_id="r-1", agent_id="a")
    await move(api, call_id, "call_answered", event_id="a-1")

    status, again = await send(api, "call_routed", call_id, event_id="r-1", agent_id="a")

    assert (status, again) == (200, routed)
    assert [e["seq"] for e in await history(api, call_id)] == [1, 2, 3]


async def test_a_repeated_call_initiated_answers_200_with_the_original(api: Api, pg) -> None:
    status, first = await send(
        api, "call_initiated", event_id="start-1", type="voice", queue_id="q"
    )
    assert status == 201
    again_status, again = await send(
        api, "call_initiated", event_id="start-1", type="voice", queue_id="q"
    )
    explicit_status, explicit = await send(
        api, "call_initiated", first["call_id"], event_id="start-1", type="voice", queue_id="q"
    )

    assert (again_status, again) == (200, first)
    assert (explicit_status, explicit) == (200, first)
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM call_events WHERE event_id = 'start-1' AND call_id = $1",
            first["call_id"],
        )
        == 1
    )


async def test_event_ids_belong_to_their_key(make_api) -> None:
    one, two = await make_api(), await make_api()

    first = await send(one, "call_initiated", event_id="shared", type="voice", queue_id="q")
    second = await send(two, "call_initiated", event_id="shared", type="voice", queue_id="q")

    assert first[0] == second[0] == 201
    assert first[1]["call_id"] != second[1]["call_id"]


async def test_call_initiated_without_ids_makes_a_new_call_each_time(api: Api) -> None:
    first = await send(api, "call_initiated", type="voice", queue_id="q")
    second = await send(api, "call_initiated", type="voice", queue_id="q")

    assert first[0] == second[0] == 201
    assert first[1]["call_id"] != second[1]["call_id"]
    uuid.UUID(first[1]["call_id"])


async def storm(api: Api, body: dict[str, Any], copies: int = 20) -> list[tuple[int, Any]]:
    results = await asyncio.gather(
        *(api.request("POST", "/events", json=body) for _ in range(copies))
    )
    return [(status, answer) for status, answer, _ in results]


def assert_one_created(results: list[tuple[int, Any]]) -> dict[str, Any]:
    """Exactly one 201; every other copy 200 with the same body. Returns that body."""
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (len(results) - 1) + [201], statuses
    (created,) = [answer for status, answer in results if status == 201]
    assert all(answer == created for _, answer in results), results
    return created


async def test_twenty_identical_call_initiated_at_once_create_one_call(
    api: Api, pg, redis: Redis
) -> None:
    body = {
        "event": "call_initiated",
        "event_id": f"storm-{uuid.uuid4()}",
        "type": "voice",
        "queue_id": "storm",
    }

    async with key_stream(api) as stream, raw_channel(redis) as channel:
        results = await storm(api, body)
        created = assert_one_created(results)
        call_id = created["call_id"]
        streamed, marker = await stream.before_marker()
        raw = await published_until(channel, marker, 1)

    assert created["seq"] == 1 and created["status"] == "QUEUED"
    assert [m for m in streamed if m["call_id"] == call_id] == [
        {k: created[k] for k in MESSAGE_FIELDS}
    ]
    assert len([m for m in raw if m["call_id"] == call_id]) == 1, raw
    assert await pg.fetchval("SELECT count(*) FROM calls WHERE id = $1", call_id) == 1
    _, events = await stored(pg, call_id)
    assert len(events) == 1


async def test_twenty_identical_call_routed_at_once_move_the_call_once(
    api: Api, pg, redis: Redis
) -> None:
    call_id = await initiate(api)
    body = {
        "event": "call_routed",
        "call_id": call_id,
        "event_id": "route-once",
        "agent_id": "agent-9",
    }

    async with key_stream(api) as stream, raw_channel(redis) as channel:
        results = await storm(api, body)
        created = assert_one_created(results)
        streamed, marker = await stream.before_marker()
        raw = await published_until(channel, marker, 1)

    assert (created["seq"], created["status"], created["previous_status"]) == (
        2,
        "RINGING",
        "QUEUED",
    )
    # (The stream may also catch up on the call's seq 1, posted just before it opened.)
    assert [m for m in streamed if m["call_id"] == call_id and m["seq"] >= 2] == [
        {k: created[k] for k in MESSAGE_FIELDS}
    ]
    assert len([m for m in raw if m["call_id"] == call_id and m["seq"] == 2]) == 1, raw
    row, events = await stored(pg, call_id)
    assert row["seq"] == 2
    assert [e["event_id"] for e in events] == [None, "route-once"]


async def test_twenty_different_events_at_once_move_the_call_exactly_once(api: Api, pg) -> None:
    """No event_id: the compare-and-set alone lets one call_routed through."""
    call_id = await initiate(api)
    body = {"event": "call_routed", "call_id": call_id, "agent_id": "agent-9"}

    results = await storm(api, body)

    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [422] * 19, statuses
    _, events = await stored(pg, call_id)
    assert [e["to_status"] for e in events] == ["QUEUED", "RINGING"]


# -- 6. business rules -----------------------------------------------------------------------


async def assert_flagged_everywhere(
    api: Api, pg, stream: KeyStream, answer: dict[str, Any], raised: list[str], flags: list[str]
) -> None:
    """The event, its history row, the call (API and PostgreSQL) and the published message all
    carry the flags."""
    call_id = answer["call_id"]
    assert answer["raised_flags"] == raised, answer
    assert answer["flags"] == flags, answer
    assert (await history(api, call_id))[-1] == answer
    _, call, _ = await api.get_call(call_id)
    assert call["flags"] == flags
    row, events = await stored(pg, call_id)
    assert sorted(row["flags"]) == flags
    assert (sorted(events[-1]["flags"]), sorted(events[-1]["raised_flags"])) == (flags, raised)
    published = (await stream.until(call_id, answer["seq"]))[-1]
    assert published == {k: answer[k] for k in MESSAGE_FIELDS}


# (steps before, the event under test with its fields, the flag it should raise or None).
# The timestamps say the opposite of the field each time: the sender's own figure wins.
BY_FIELD = {
    "routing_time-15": ([], ("call_routed", {"routing_time": 15, "occurred_at": at(100)}), None),
    "routing_time-16": (
        [],
        ("call_routed", {"routing_time": 16, "occurred_at": at(1)}),
        "rerouted",
    ),
    "wait_time-30": (
        [("call_routed", at(1))],
        ("call_answered", {"wait_time": 30, "occurred_at": at(100)}),
        None,
    ),
    "wait_time-31": (
        [("call_routed", at(1))],
        ("call_answered", {"wait_time": 31, "occurred_at": at(2)}),
        "wait_sla_exceeded",
    ),
    "hold_duration-60-on-hold": (
        [("call_routed", at(1)), ("call_answered", at(2))],
        ("call_hold", {"hold_duration": 60, "occurred_at": at(3)}),
        None,
    ),
    "hold_duration-61-on-hold": (
        [("call_routed", at(1)), ("call_answered", at(2))],
        ("call_hold", {"hold_duration": 61, "occurred_at": at(3)}),
        "hold_limit_exceeded",
    ),
    "hold_duration-60-on-resume": (
        [("call_routed", at(1)), ("call_answered", at(2)), ("call_hold", at(3))],
        ("call_resumed", {"hold_duration": 60, "occurred_at": at(300)}),
        None,
    ),
    "hold_duration-61-on-resume": (
        [("call_routed", at(1)), ("call_answered", at(2)), ("call_hold", at(3))],
        ("call_resumed", {"hold_duration": 61, "occurred_at": at(4)}),
        "hold_limit_exceeded",
    ),
    "duration-9": (
        [("call_routed", at(1)), ("call_answered", at(2))],
        ("call_ended", {"duration": 9, "occurred_at": at(500)}),
        "short_call",
    ),
    "duration-10": (
        [("call_routed", at(1)), ("call_answered", at(2))],
        ("call_ended", {"duration": 10, "occurred_at": at(3)}),
        None,
    ),
}

# The same boundaries measured from occurred_at alone: the call starts at T0.
BY_TIMESTAMP = {
    "routed-after-15s": ([], ("call_routed", at(15)), None),
    "routed-after-16s": ([], ("call_routed", at(16)), "rerouted"),
    "routed-after-15.001s": ([], ("call_routed", at(15.001)), "rerouted"),
    "answered-after-30s": ([("call_routed", at(1))], ("call_answered", at(30)), None),
    "answered-after-31s": (
        [("call_routed", at(1))],
        ("call_answered", at(31)),
        "wait_sla_exceeded",
    ),
    "answered-after-30.5s": (
        [("call_routed", at(1))],
        ("call_answered", at(30.5)),
        "wait_sla_exceeded",
    ),
    "resumed-after-60s": (
        [("call_routed", at(1)), ("call_answered", at(2)), ("call_hold", at(10))],
        ("call_resumed", at(70)),
        None,
    ),
    "resumed-after-61s": (
        [("call_routed", at(1)), ("call_answered", at(2)), ("call_hold", at(10))],
        ("call_resumed", at(71)),
        "hold_limit_exceeded",
    ),
    "ended-on-hold-after-60s": (
        [("call_routed", at(1)), ("call_answered", at(2)), ("call_hold", at(10))],
        ("call_ended", at(70)),
        None,
    ),
    "ended-on-hold-after-61s": (
        [("call_routed", at(1)), ("call_answered", at(2)), ("call_hold", at(10))],
        ("call_ended", at(71)),
        "hold_limit_exceeded",
    ),
    "talked-9s": (
        [("call_routed", at(1)), ("call_answered", at(2))],
        ("call_ended", at(11)),
        "short_call",
    ),
    "talked-9.999s": (
        [("call_routed", at(1)), ("call_answered", at(2))],
        ("call_ended", at(11.999)),
        "short_call",
    ),
    "talked-10s": (
        [("call_routed", at(1)), ("call_answered", at(2))],
        ("call_ended", at(12)),
        None,
    ),
    "talk-counts-holds-from-the-first-answer": (
        [
            ("call_routed", at(1)),
            ("call_answered", at(2)),
            ("call_hold", at(3)),
            ("call_resumed", at(8)),
        ],
        ("call_ended", at(12)),
        None,
    ),
    "never-answered-ended-from-ringing": ([("call_routed", at(1))], ("call_ended", at(2)), None),
    "never-answered-ended-from-unanswered": (
        [("call_routed", at(1)), ("call_unanswered", at(2))],
        ("call_ended", at(3)),
        None,
    ),
    "never-answered-ended-from-queued": ([], ("call_ended", at(2)), None),
}


async def run_rule_case(
    api: Api, pg, before: list[tuple[str, str]], event: str, fields: dict[str, Any], flag
) -> None:
    call_id = await initiate(api, occurred_at=at(0))
    for step, occurred_at in before:
        answer = await move(api, call_id, step, occurred_at=occurred_at)
        assert answer["flags"] == [], answer
    async with key_stream(api) as stream:
        status, answer = await send(api, event, call_id, **(MINIMAL.get(event, {}) | fields))
        assert status == 201, answer
        expected = [flag] if flag else []
        await assert_flagged_everywhere(api, pg, stream, answer, expected, expected)


@pytest.mark.parametrize(("before", "tested", "flag"), BY_FIELD.values(), ids=BY_FIELD.keys())
async def test_rule_boundaries_from_the_events_own_fields(api: Api, pg, before, tested, flag):
    event, fields = tested
    await run_rule_case(api, pg, before, event, fields, flag)


@pytest.mark.parametrize(
    ("before", "tested", "flag"), BY_TIMESTAMP.values(), ids=BY_TIMESTAMP.keys()
)
async def test_rule_boundaries_from_occurred_at(api: Api, pg, before, tested, flag) -> None:
    event, occurred_at = tested
    await run_rule_case(api, pg, before, event, {"occurred_at": occurred_at}, flag)


async def test_a_duration_on_a_call_never_answered_is_not_a_short_call(api: Api) -> None:
    call_id = await call_in(api, "RINGING")

    ended = await move(api, call_id, "call_ended", end_reason="abandoned", duration=2)

    assert ended["raised_flags"] == [] and ended["flags"] == []
    assert ended["data"] == {"end_reason": "abandoned", "duration": 2}


async def test_flags_accumulate_on_the_call_and_each_event_says_what_it_raised(
    api: Api, pg
) -> None:
    call_id = await initiate(api)

    async with key_stream(api) as stream:
        steps = [
            ("call_routed", {"routing_time": 20}, ["rerouted"], ["rerouted"]),
            (
                "call_answered",
                {"wait_time": 45},
                ["wait_sla_exceeded"],
                ["rerouted", "wait_sla_exceeded"],
            ),
            ("call_hold", {}, [], ["rerouted", "wait_sla_exceeded"]),
            (
                "call_resumed",
                {"hold_duration": 90},
                ["hold_limit_exceeded"],
                ["hold_limit_exceeded", "rerouted", "wait_sla_exceeded"],
            ),
            (
                "call_ended",
                {"duration": 3},
                ["short_call"],
                ["hold_limit_exceeded", "rerouted", "short_call", "wait_sla_exceeded"],
            ),
        ]
        for event, fields, raised, flags in steps:
            answer = await move(api, call_id, event, **fields)
            await assert_flagged_everywhere(api, pg, stream, answer, raised, flags)

    for flag in ("rerouted", "wait_sla_exceeded", "hold_limit_exceeded", "short_call"):
        status, page, _ = await api.request("GET", "/calls", params={"flag": flag})
        assert status == 200
        assert call_id in [c["call_id"] for c in page["data"]], flag


async def test_occurred_at_without_a_zone_is_utc(api: Api) -> None:
    status, body = await send(
        api, "call_initiated", type="voice", queue_id="q", occurred_at="2024-05-01T12:00:00"
    )

    assert status == 201
    assert body["occurred_at"] == body["timestamp"] == "2024-05-01T12:00:00.000Z"


async def test_an_event_dated_before_the_calls_previous_one_is_422_naming_both_times(
    api: Api, pg
) -> None:
    """A sender's clock that runs backwards would give negative durations: refused, said."""
    call_id = await initiate(api)
    await move(api, call_id, "call_routed", occurred_at=at(5))
    await move(api, call_id, "call_answered", occurred_at=at(20))
    before = await stored(pg, call_id)

    status, answer = await send(
        api, "call_ended", call_id, end_reason="completed", occurred_at=at(10)
    )

    assert status == 422, answer
    assert answer["message"] == (
        f"occurred_at {iso_ms(10)} is before the call's previous event, at {iso_ms(20)}:"
        " a call's events come in time order"
    )
    assert await stored(pg, call_id) == before
    # The same moment as the previous event is in order.
    ended = await move(api, call_id, "call_ended", end_reason="completed", occurred_at=at(20))
    assert ended["occurred_at"] == iso_ms(20)


async def test_an_undated_event_after_a_call_dated_ahead_takes_the_calls_latest_time(
    api: Api,
) -> None:
    """A sender's clock ahead of the platform's: an event it does not date is the platform's
    now, but never before what the call already holds."""
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    call_id = await initiate(api, occurred_at=ahead)

    routed = await move(api, call_id, "call_routed")
    ended = await move(api, call_id, "call_ended", end_reason="abandoned")

    started = datetime.fromisoformat(ahead).isoformat(timespec="milliseconds")
    assert routed["occurred_at"] == ended["occurred_at"] == started.replace("+00:00", "Z")


# -- 7. events on simulated calls ------------------------------------------------------------


async def simulated_call_on_hold(api: Api) -> tuple[str, dict[str, Any]]:
    """A new simulated call driven to ON_HOLD by events before a timer moves it (its first
    timer is 50-100 ms away, so no coin decides whether it is answered). A call a timer moved
    first is hung up (freeing its slot) and another is tried."""
    for _ in range(5):
        status, created, _ = await api.create_call()
        assert status == 201, created
        call_id = created["call_id"]
        for event in ROUTE_TO["ON_HOLD"]:
            status, body = await send(api, event, call_id, **MINIMAL.get(event, {}))
            if status != 201:
                assert status == 422, body  # a timer won the race
                await send(api, "call_ended", call_id, end_reason="canceled")
                break
        else:
            return call_id, body
    raise AssertionError("timers moved five calls before their events could")


async def pending_timers(redis: Redis, call_id: str) -> list[str]:
    members = await redis.zrange(keys.timers(keys.ADVANCE), 0, -1)
    return [m.decode() for m in members if m.decode().startswith(f"{keys.ADVANCE}:{call_id}:")]


@pytest.mark.parametrize("when", ["at once", "while on hold"])
async def test_hanging_up_a_simulated_call_ends_it_at_once_and_frees_its_slot(
    make_api, pg, redis: Redis, when
) -> None:
    api = await make_api(max_concurrent=1, max_cps=100)
    if when == "while on hold":
        call_id, _ = await simulated_call_on_hold(api)
    else:
        status, created, _ = await api.create_call()
        assert status == 201
        call_id = created["call_id"]
    status, refused, _ = await api.create_call()
    assert (status, refused["message"]) == (429, "Maximum concurrent calls reached (1)")

    status, ended = await send(api, "call_ended", call_id, end_reason="canceled")
    next_status, _, _ = await api.create_call()

    assert status == 201, ended
    assert ended["status"] == "COMPLETED"
    assert ended["previous_status"] in (
        {"ON_HOLD"} if when == "while on hold" else {"QUEUED", "RINGING", "ANSWERED", "UNANSWERED"}
    )
    assert ended["data"] == {"end_reason": "canceled"}
    assert next_status == 201, "the hung-up call's slot was not freed at once"
    _, call, _ = await api.get_call(call_id)
    assert (call["status"], call["end_reason"]) == ("COMPLETED", "canceled")
    assert await pending_timers(redis, call_id) == []

    await asyncio.sleep(0.5)  # past when its timers would have fired (a call lives ~0.5 s)

    row, events = await stored(pg, call_id)
    assert [e["to_status"] for e in events].count("COMPLETED") == 1
    assert events[-1]["seq"] == ended["seq"] == row["seq"]
    assert events[-1]["data"] == {"end_reason": "canceled"}
    assert (await history(api, call_id))[-1] == ended
    recorded = await api.wait_recorded(call_id)
    async with api.http.get(recorded["recording_url"], headers=api.auth) as response:
        assert response.status == 200
        assert len(await response.read()) > 0


async def test_a_simulated_call_held_twice_then_finishes_on_its_own(
    api: Api, pg, redis: Redis
) -> None:
    call_id, held = await simulated_call_on_hold(api)

    for second_hold in (False, True):
        if second_hold:
            held = await move(api, call_id, "call_hold")
        assert held["status"] == "ON_HOLD"
        assert await pending_timers(redis, call_id) == []
        await asyncio.sleep(0.4)  # longer than the talk timer that was pending (100-200 ms)
        _, call, _ = await api.get_call(call_id)
        assert call["status"] == "ON_HOLD", "a timer moved a held call"
        row, _ = await stored(pg, call_id)
        assert row["seq"] == held["seq"]
        resumed = await move(api, call_id, "call_resumed")
        assert (resumed["previous_status"], resumed["status"]) == ("ON_HOLD", "ANSWERED")
        assert len(await pending_timers(redis, call_id)) == 1, "no new talk timer"

    call = await api.wait_recorded(call_id)

    _, events = await stored(pg, call_id)
    assert [(e["event"], e["status"]) for e in await history(api, call_id)] == [
        (e["event"], e["to_status"]) for e in events
    ]
    assert [(e["event"], e["to_status"]) for e in events] == [
        ("call_initiated", "QUEUED"),
        ("call_routed", "RINGING"),
        ("call_answered", "ANSWERED"),
        ("call_hold", "ON_HOLD"),
        ("call_resumed", "ANSWERED"),
        ("call_hold", "ON_HOLD"),
        ("call_resumed", "ANSWERED"),
        ("call_ended", "COMPLETED"),
    ]
    # Ended by its timer (which says only why), not by an event.
    assert events[-1]["data"] == {"end_reason": "completed"}
    assert call["status"] == "COMPLETED"


# -- 8. what upkeep does to ingested calls ---------------------------------------------------


async def test_an_open_ingested_call_never_takes_a_simulated_calls_slot(
    make_api, pg, redis: Redis
) -> None:
    """Ingesting a call takes no concurrency slot, and upkeep must not give it one later: its
    lease restore once counted every active call (db/calls.py fetch_active_by_key had no
    `kind = 'simulated'` filter), so a few hundred ms after an ingested call started, POST
    /calls was refused for as long as the contact centre left that call open."""
    api = await make_api(max_concurrent=1, max_cps=100)
    key_id = await pg.fetchval("SELECT id::text FROM api_keys WHERE name = $1", api.key)
    call_id = await initiate(api)
    assert await redis.zscore(keys.leases(key_id), call_id) is None, "ingesting takes no slot"

    # Upkeep runs every RECONCILE_INTERVAL_MS (300 ms here): give it three passes (1 s).
    for _ in range(20):
        if await redis.zscore(keys.leases(key_id), call_id) is not None:
            break  # the regression has shown already
        await asyncio.sleep(0.05)
    status, body, _ = await api.create_call()

    assert status == 201, f"an ingested call in QUEUED blocks POST /calls: {body}"
    assert await redis.zscore(keys.leases(key_id), call_id) is None, "upkeep gave it a slot"
