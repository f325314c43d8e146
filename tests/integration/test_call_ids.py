"""Call ids a sender gives belong to its key: the same id from two keys is two calls, no answer
tells whether another key used an id, and a sender's own ids (not only UUIDs) work in every
route that takes a call id."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from tests.integration.conftest import Api
from tests.integration.test_key_stream import (
    as_message,
    completed,
    key_stream,
    post_event,
)
from tests.integration.test_realtime import SseReader, stream_url, ws_url

READ_TIMEOUT_S = 5.0
NOT_FOUND = {"error": "Not Found", "message": "Call not found"}


def asterisk_id() -> str:
    """An id in Asterisk's shape (`<epoch>.<sequence>`), unique to the test."""
    return f"{uuid.uuid4().int % 10**10}.{uuid.uuid4().int % 1000}"


async def initiate(api: Api, call_id: str, queue_id: str = "q") -> tuple[int, dict[str, Any]]:
    status, body, _ = await api.request(
        "POST",
        "/events",
        json={"event": "call_initiated", "call_id": call_id, "type": "voice", "queue_id": queue_id},
    )
    return status, body


@pytest.mark.parametrize("shape", ["uuid", "asterisk", "sip"])
async def test_the_same_call_id_from_two_keys_makes_two_independent_calls(
    make_api, shape: str
) -> None:
    one, two = await make_api(), await make_api()
    call_id = {
        "uuid": str(uuid.uuid4()),
        "asterisk": asterisk_id(),
        "sip": f"sip:{uuid.uuid4().hex[:8]}@pbx-1",
    }[shape]
    if shape == "sip":
        call_id = call_id.replace("@", "_")

    assert (await initiate(one, call_id, "sales"))[0] == 201
    assert (await initiate(two, call_id, "support"))[0] == 201
    # Each key moves its own call, and only its own.
    await post_event(one, {"event": "call_routed", "call_id": call_id, "agent_id": "one-7"})
    for event in ({"event": "call_routed", "agent_id": "two-9"}, {"event": "call_answered"}):
        await post_event(two, {"call_id": call_id} | event)

    _, mine, _ = await one.get_call(call_id)
    _, theirs, _ = await two.get_call(call_id)
    assert (mine["call_id"], mine["queue_id"], mine["agent_id"], mine["status"]) == (
        call_id,
        "sales",
        "one-7",
        "RINGING",
    )
    assert (theirs["call_id"], theirs["queue_id"], theirs["agent_id"], theirs["status"]) == (
        call_id,
        "support",
        "two-9",
        "ANSWERED",
    )
    _, history_one, _ = await one.request("GET", f"/calls/{call_id}/events")
    _, history_two, _ = await two.request("GET", f"/calls/{call_id}/events")
    assert [e["event"] for e in history_one["data"]] == ["call_initiated", "call_routed"]
    assert [e["event"] for e in history_two["data"]] == [
        "call_initiated",
        "call_routed",
        "call_answered",
    ]


async def test_no_answer_differs_by_whether_another_key_used_an_id(make_api) -> None:
    """A stranger probing ids learns nothing: another key's call id reads as an unknown one on
    every route, and naming it in call_initiated makes the stranger's own call (no 409)."""
    owner, stranger = await make_api(), await make_api()
    _, simulated, _ = await owner.create_call()
    named = asterisk_id()
    await initiate(owner, named)
    unknown = [str(uuid.uuid4()), asterisk_id()]

    for path in ("/calls/{}", "/calls/{}/events", "/api/calls/{}/events", "/calls/{}/recording"):
        answers = [
            (await stranger.request("GET", path.format(call_id)))[:2]
            for call_id in [simulated["call_id"], named, *unknown]
        ]
        assert answers == [answers[0]] * 4 and answers[0][0] == 404, (path, answers)
    for call_id in [simulated["call_id"], named, *unknown]:
        status, body, _ = await stranger.request(
            "POST", "/events", json={"event": "call_hold", "call_id": call_id}
        )
        assert (status, body) == (404, NOT_FOUND)
        status, body, _ = await stranger.request("GET", f"/calls/{call_id}/stream")
        assert (status, body) == (404, NOT_FOUND)

    for call_id in (simulated["call_id"], named):
        status, body = await initiate(stranger, call_id, "strangers")
        assert status == 201, body
        assert body["call_id"] == call_id
    # The owner's calls are as they were.
    _, call, _ = await owner.get_call(named)
    assert (call["queue_id"], call["status"]) == ("q", "QUEUED")
    _, history, _ = await owner.request("GET", f"/calls/{simulated['call_id']}/events")
    assert history["data"][0]["event"] == "call_initiated"
    assert history["data"][0]["data"] == {}


async def test_a_key_cannot_give_one_name_to_two_of_its_calls(api: Api) -> None:
    named = asterisk_id()
    assert (await initiate(api, named))[0] == 201
    status, body = await initiate(api, named)
    assert (status, body) == (409, {"error": "Conflict", "message": f"Call {named} already exists"})

    # Nor the name of a call whose id the platform made.
    _, simulated, _ = await api.create_call()
    status, body = await initiate(api, simulated["call_id"])
    assert status == 409, body
    _, made, _ = await api.request(
        "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
    )
    status, body = await initiate(api, made["call_id"].upper())
    assert status == 409, body


async def test_a_senders_own_id_works_in_every_route(api: Api) -> None:
    call_id = asterisk_id()
    async with key_stream(api) as live:
        sse = await api.http.get(stream_url(api, call_id), headers=api.auth)
        assert sse.status == 404  # not yet made
        posted = await ingested_lifecycle_open(api, call_id)
        sse = await api.http.get(stream_url(api, call_id), headers=api.auth)
        assert sse.status == 200
        reader = SseReader(sse)
        first = await reader.message()
        assert first == as_message(posted[-1])
        ws = await api.http.ws_connect(ws_url(api, call_id), headers=api.auth)
        assert json.loads((await ws.receive(timeout=READ_TIMEOUT_S)).data) == first

        ended = await post_event(
            api, {"event": "call_ended", "call_id": call_id, "end_reason": "completed"}
        )
        assert await reader.rest() == [as_message(ended)]
        assert json.loads((await ws.receive(timeout=READ_TIMEOUT_S)).data) == as_message(ended)
        await ws.close()
        streamed = await live.until(completed({call_id}), READ_TIMEOUT_S)
    assert [m["call_id"] for m in streamed] == [call_id] * (len(posted) + 1)

    _, listed, _ = await api.request("GET", "/api/calls?queue_id=q1")
    assert [c["call_id"] for c in listed["data"]] == [call_id]
    call = await api.wait_recorded(call_id)
    assert call["recording_url"].endswith(f"/calls/{call_id}/recording")
    async with api.http.get(call["recording_url"], headers=api.auth) as response:
        assert response.status == 200
        assert f'filename="{call_id}.wav"' in response.headers["Content-Disposition"]
    _, history, _ = await api.request("GET", f"/calls/{call_id}/events?after_seq=4")
    assert [e["seq"] for e in history["data"]] == [5]


async def ingested_lifecycle_open(api: Api, call_id: str) -> list[dict[str, Any]]:
    """An ingested call taken on hold (the answers of its four events)."""
    return [
        await post_event(api, event)
        for event in (
            {"event": "call_initiated", "call_id": call_id, "type": "video", "queue_id": "q1"},
            {"event": "call_routed", "call_id": call_id, "agent_id": "agent-7"},
            {"event": "call_answered", "call_id": call_id},
            {"event": "call_hold", "call_id": call_id},
        )
    ]


async def test_streams_by_id_are_per_key(make_api) -> None:
    """Two keys streaming calls of the same name each see only their own call's messages."""
    one, two = await make_api(), await make_api()
    call_id = asterisk_id()
    await initiate(one, call_id)
    await initiate(two, call_id)
    first = await one.http.get(stream_url(one, call_id), headers=one.auth)
    reader = SseReader(first)
    assert (await reader.message())["seq"] == 1
    await post_event(two, {"event": "call_routed", "call_id": call_id, "agent_id": "x"})
    with pytest.raises(TimeoutError):
        await reader.message(timeout=0.5)
    await post_event(one, {"event": "call_routed", "call_id": call_id, "agent_id": "y"})
    assert (await reader.message())["seq"] == 2
    first.close()
    await asyncio.sleep(0)
