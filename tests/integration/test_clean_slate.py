"""A test suite's clean slate: `DELETE /calls` removes the key's ended calls with their history
and recordings (409 while calls are active, unless `?force=true` ends them first), and
`GET /metrics?scope=key` gives the caller's key's counters alone. On a platform of its own: the
shared one's tests compare the counters with the tables, which a delete sets apart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.integration.conftest import Api
from tests.integration.platform import Platform


@pytest.fixture(scope="module")
async def own(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    running = Platform(tmp_path_factory.mktemp("clean-slate"))
    try:
        yield await running.start()
    finally:
        await running.stop()


@pytest.fixture
async def pg(own: Platform) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(own.dsn)
    yield conn
    await conn.close()


@pytest.fixture
def make_api(make_api, own: Platform):
    """Keys of the module's own platform."""

    async def make(**limits: Any) -> Api:
        return await make_api(on=own, **limits)

    return make


@pytest.fixture
async def api(make_api) -> Api:
    return await make_api(max_concurrent=1000, max_cps=1000)


async def ended_calls(api: Api, simulated: int, ingested: int) -> list[str]:
    """Calls of the key that have all ended and been recorded."""
    made = []
    for _ in range(simulated):
        status, created, _ = await api.create_call()
        assert status == 201, created
        made.append(created["call_id"])
    for _ in range(ingested):
        call_id = await initiate(api)
        status, ended, _ = await api.request(
            "POST",
            "/events",
            json={"event": "call_ended", "call_id": call_id, "end_reason": "abandoned"},
        )
        assert status == 201, ended
        made.append(call_id)
    for call_id in made:  # ingested calls are recorded too, once ended
        await api.wait_recorded(call_id)
    return made


async def initiate(api: Api) -> str:
    status, started, _ = await api.request(
        "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
    )
    assert status == 201, started
    return started["call_id"]


async def test_delete_calls_removes_the_keys_ended_calls_with_all_kept_of_them(
    make_api, own: Platform, pg: asyncpg.Connection
) -> None:
    api = await make_api(max_concurrent=50, max_cps=50)
    other = await make_api(max_concurrent=50, max_cps=50)
    mine = await ended_calls(api, simulated=3, ingested=2)
    theirs = await ended_calls(other, simulated=1, ingested=1)
    ids = await pg.fetchval(
        "SELECT array_agg(id) FROM calls WHERE id::text = ANY($1) OR ref = ANY($1)", mine
    )
    files = [
        own.recordings_dir / key
        for key in await pg.fetchval(
            "SELECT array_agg(storage_key) FROM recordings WHERE call_id = ANY($1)", ids
        )
    ]
    assert len(ids) == len(files) == 5 and all(path.exists() for path in files)

    status, cleared, _ = await api.request("DELETE", "/calls")

    assert status == 200, cleared
    assert cleared == {"deleted": 5, "ended": 0, "remaining": 0}
    _, page, _ = await api.request("GET", "/calls")
    assert page["total"] == 0 and page["data"] == []
    for call_id in mine:
        for path in ("", "/events", "/recording"):
            assert (await api.request("GET", f"/calls/{call_id}{path}"))[0] == 404, path
    assert not any(path.exists() for path in files)
    # Nothing of another key's is touched.
    _, their_page, _ = await other.request("GET", "/calls")
    assert sorted(c["call_id"] for c in their_page["data"]) == sorted(theirs)
    assert (await other.get_call(theirs[0]))[0] == 200
    # Nothing is left anywhere: no row of theirs in any table that points at a call.
    for table in ("call_events", "outbox", "recordings", "callback_deliveries"):
        left = await pg.fetchval(f"SELECT count(*) FROM {table} WHERE call_id = ANY($1)", ids)
        assert left == 0, table
    assert await pg.fetchval("SELECT count(*) FROM calls WHERE id = ANY($1)", ids) == 0
    # Again: nothing more to delete.
    assert (await api.request("DELETE", "/calls"))[1] == {"deleted": 0, "ended": 0, "remaining": 0}


async def test_a_sender_may_reuse_its_call_ids_after_a_clean_slate(make_api) -> None:
    api = await make_api(max_concurrent=50, max_cps=50)
    body = {"event": "call_initiated", "call_id": "suite-call-1", "type": "voice", "queue_id": "q"}
    assert (await api.request("POST", "/events", json=body))[0] == 201
    ended = {"event": "call_ended", "call_id": "suite-call-1", "end_reason": "completed"}
    assert (await api.request("POST", "/events", json=ended))[0] == 201
    assert (await api.request("POST", "/events", json=body))[0] == 409

    assert (await api.request("DELETE", "/calls"))[1]["deleted"] == 1

    status, again, _ = await api.request("POST", "/events", json=body)
    assert status == 201, again
    assert again["seq"] == 1


async def test_delete_calls_is_409_while_calls_are_active_and_changes_nothing(make_api) -> None:
    api = await make_api(max_concurrent=50, max_cps=50)
    done = await ended_calls(api, simulated=0, ingested=1)
    active = await initiate(api)

    status, body, _ = await api.request("DELETE", "/calls")

    assert status == 409, body
    assert body["message"] == (
        "1 of the key's calls are active: end them first, or delete with ?force=true"
        " (which ends them as canceled)"
    )
    for call_id in (*done, active):
        assert (await api.get_call(call_id))[0] == 200


async def test_force_ends_the_active_calls_as_canceled_then_deletes_them_all(make_api) -> None:
    api = await make_api(max_concurrent=50, max_cps=50)
    ingested = [await initiate(api) for _ in range(3)]
    # A simulated call that rings for ten minutes: active when the delete comes.
    status, created, _ = await api.create_call(scenario={"ring_ms": 600_000})
    assert status == 201, created
    async with api.http.get(api.url("/stream"), headers=api.auth) as stream:
        assert await stream.content.readline()  # subscribed

        status, cleared, _ = await api.request("DELETE", "/calls", params={"force": "true"})

        assert status == 200, cleared
        assert cleared == {"deleted": 4, "ended": 4, "remaining": 0}
        seen = b""
        while seen.count(b'"status":"COMPLETED"') < 4:  # each end was published
            seen += await asyncio.wait_for(stream.content.readline(), 5)
    for call_id in (*ingested, created["call_id"]):
        assert (await api.get_call(call_id))[0] == 404
    assert (await api.request("DELETE", "/calls"))[1] == {"deleted": 0, "ended": 0, "remaining": 0}
    # Its limit slots were freed: a key limited to one call may make one again.
    limited = await make_api(max_concurrent=1, max_cps=50)
    assert (await limited.create_call(scenario={"ring_ms": 600_000}))[0] == 201
    assert (await limited.create_call())[0] == 429
    assert (await limited.request("DELETE", "/calls", params={"force": "1"}))[1]["ended"] == 1
    assert (await limited.create_call())[0] == 201


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"force": "maybe"}, "force"),
        ({"forse": "true"}, "Unknown query parameter: forse"),
    ],
)
async def test_delete_calls_refuses_a_query_it_does_not_take(
    api: Api, query: dict, message: str
) -> None:
    status, body, _ = await api.request("DELETE", "/calls", params=query)

    assert status == 400
    assert message in body["message"]


async def test_metrics_scope_key_counts_the_callers_key_alone(make_api) -> None:
    api = await make_api(max_concurrent=50, max_cps=50)
    other = await make_api(max_concurrent=50, max_cps=50)
    await ended_calls(other, simulated=1, ingested=0)
    await ended_calls(api, simulated=2, ingested=1)
    active = await initiate(api)

    status, mine, _ = await api.request("GET", "/metrics", params={"scope": "key"})
    _, platform_wide, _ = await api.request("GET", "/metrics")

    assert status == 200, mine
    assert mine == {
        "total_calls": 4,
        "active_calls": 1,
        "completed_calls": 3,
        "current_cps": mine["current_cps"],
        "uploads_in_progress": 0,
        "uploads_completed": 3,
    }
    assert 0 <= mine["current_cps"] <= 4
    assert platform_wide["total_calls"] > mine["total_calls"]
    # Counters count what was made: a clean slate does not take them back.
    await api.request(
        "POST",
        "/events",
        json={"event": "call_ended", "call_id": active, "end_reason": "completed"},
    )
    await api.request("DELETE", "/calls")
    _, after, _ = await api.request("GET", "/metrics", params={"scope": "key"})
    assert (after["total_calls"], after["active_calls"]) == (4, 0)


@pytest.mark.parametrize(
    ("params", "headers", "message"),
    [
        ({"scope": "key", "format": "prometheus"}, {}, "scope=key answers JSON"),
        ({"scope": "key"}, {"Accept": "text/plain"}, "scope=key answers JSON"),
        ({"scope": "tenant"}, {}, "scope"),
        ({"format": "xml"}, {}, "format"),
    ],
)
async def test_metrics_refuses_what_it_cannot_answer(
    api: Api, params: dict, headers: dict, message: str
) -> None:
    status, body, _ = await api.request("GET", "/metrics", params=params, headers=headers)

    assert status == 400, body
    assert message in body["message"]
