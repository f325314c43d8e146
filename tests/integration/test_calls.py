"""Creating and reading calls, as the original service's README does it."""

from __future__ import annotations

import asyncio
import uuid

from tests.integration.conftest import Api


async def test_create_call_answers_201_with_the_original_fields(api: Api) -> None:
    status, body, _ = await api.create_call(**{"from": "+1234567890", "to": "+0987654321"})

    assert status == 201
    assert body["status"] == "QUEUED"
    assert body["from"] == "+1234567890" and body["to"] == "+0987654321"
    assert body["metadata"] == {"test": True}
    uuid.UUID(body["call_id"])
    assert body["websocket_url"].startswith(
        f"ws://127.0.0.1:{api.platform.api_port}/ws?call_id={body['call_id']}&token="
    )
    assert f"/calls/{body['call_id']}/stream?token=" in body["stream_url"]
    assert api.key not in body["websocket_url"] + body["stream_url"]
    assert body["created_at"].endswith("Z")


async def test_get_after_create_returns_the_call(api: Api) -> None:
    _, created, _ = await api.create_call()

    status, body, _ = await api.get_call(created["call_id"])

    assert status == 200
    assert body["call_id"] == created["call_id"]
    assert body["status"] in {"QUEUED", "RINGING", "ANSWERED", "UNANSWERED", "COMPLETED"}
    assert body["metadata"] == {"test": True}
    # The original service's fields, and what the contact-centre events add.
    assert set(body) == {
        "call_id",
        "status",
        "from",
        "to",
        "metadata",
        "flags",
        "recording_url",
        "created_at",
        "updated_at",
        "type",
        "source",
        "queue_id",
        "agent_id",
        "end_reason",
    }
    assert (body["type"], body["source"]) == ("voice", "simulated")


async def test_another_keys_call_is_not_found(make_api) -> None:
    owner, stranger = await make_api(), await make_api()
    _, created, _ = await owner.create_call()

    status, body, _ = await stranger.get_call(created["call_id"])

    assert status == 404
    assert body == {"error": "Not Found", "message": "Call not found"}


async def test_unknown_call_is_not_found(api: Api) -> None:
    status, body, _ = await api.get_call(str(uuid.uuid4()))
    assert (status, body["message"]) == (404, "Call not found")


async def test_idempotency_key_replays_the_first_call(api: Api) -> None:
    headers = {"Idempotency-Key": "order-42"}
    body = {"from": "+14155550100", "to": "+14155550199"}
    first = await api.request("POST", "/calls", json=body, headers=headers)
    again = await api.request("POST", "/calls", json=body, headers=headers)

    assert first[0] == again[0] == 201
    assert again[1]["call_id"] == first[1]["call_id"]
    assert again[2]["Idempotent-Replayed"] == "true"


async def test_idempotency_key_with_another_body_is_refused(api: Api) -> None:
    headers = {"Idempotency-Key": "order-43"}
    await api.request(
        "POST", "/calls", json={"from": "+14155550100", "to": "+14155550199"}, headers=headers
    )

    status, body, _ = await api.request(
        "POST", "/calls", json={"from": "+14155550100", "to": "+14155550111"}, headers=headers
    )

    assert status == 422
    assert "Idempotency-Key" in body["message"]


async def test_parallel_requests_with_one_idempotency_key_create_one_call(make_api, pg) -> None:
    api = await make_api(max_concurrent=50, max_cps=50)
    headers = {"Idempotency-Key": "burst"}
    body = {"from": "+14155550100", "to": "+14155550199"}

    results = await asyncio.gather(
        *(api.request("POST", "/calls", json=body, headers=headers) for _ in range(10))
    )

    assert {status for status, _, _ in results} == {201}
    assert len({created["call_id"] for _, created, _ in results}) == 1
    count = await pg.fetchval("SELECT count(*) FROM calls WHERE idempotency_key = 'burst'")
    assert count == 1
