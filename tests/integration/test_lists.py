"""Listing a key's calls: `GET /calls` and `GET /api/calls` (filters, pages, refusals, plans)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from db.calls import CallFilter, fetch_calls_page
from tests.integration.conftest import Api
from tests.integration.platform import Platform

PATHS = ["/calls", "/api/calls"]
STATUSES = ["QUEUED", "RINGING", "ANSWERED", "ON_HOLD", "UNANSWERED", "COMPLETED"]
FLAGS = ["wait_sla_exceeded", "hold_limit_exceeded", "short_call", "rerouted"]
TYPES = ["voice", "video"]
LIST_FIELDS = {
    "call_id",
    "status",
    "from",
    "to",
    "metadata",
    "type",
    "source",
    "queue_id",
    "agent_id",
    "end_reason",
    "flags",
    "recording_url",
    "created_at",
    "updated_at",
}
# Any request here that takes longer is a hang, not a slow answer.
REQUEST_TIMEOUT_S = 10


# -- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A call inserted straight into PostgreSQL, with what the filters look at."""

    call_id: str
    status: str
    flags: tuple[str, ...]
    call_type: str
    queue_id: str | None
    created_at: datetime


async def key_id_of(pg: asyncpg.Connection, secret: str) -> str:
    return str(await pg.fetchval("SELECT id FROM api_keys WHERE name = $1", secret))


async def insert_calls(pg: asyncpg.Connection, key_id: str, rows: list[Row]) -> None:
    """Calls as the list reads them, counted as the platform counts them. Kind 'ingested' and
    moved just now, so no timer moves them and upkeep does not end them as idle."""
    await pg.execute(
        """
        WITH inserted AS (
            INSERT INTO calls (id, api_key_id, kind, status, seq, from_number, to_number,
                               metadata, flags, call_type, queue_id, created_at, updated_at,
                               status_changed_at, started_at)
            SELECT r.id, $1, 'ingested', r.status, 1, '+14155550100', '+14155550199', '{}',
                   string_to_array(r.flags, ','), r.call_type, r.queue_id, r.created_at,
                   r.created_at, now(), r.created_at
              FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                          $7::timestamptz[]) AS r(id, status, flags, call_type, queue_id,
                                                  created_at)
            RETURNING status
        )
        INSERT INTO counter_deltas (api_key_id, calls_created, calls_completed)
        SELECT $1, count(*), count(*) FILTER (WHERE status = 'COMPLETED') FROM inserted
        """,
        key_id,
        [r.call_id for r in rows],
        [r.status for r in rows],
        [",".join(r.flags) for r in rows],
        [r.call_type for r in rows],
        [r.queue_id for r in rows],
        [r.created_at for r in rows],
    )


def plain_rows(count: int, *, start: datetime | None = None, step_s: float = 1.0) -> list[Row]:
    """`count` COMPLETED voice calls, one `step_s` apart, in a shuffled insertion order."""
    start = start or datetime.now(UTC) - timedelta(days=1)
    rows = [
        Row(
            str(uuid.uuid4()), "COMPLETED", (), "voice", None, start + timedelta(seconds=i * step_s)
        )
        for i in range(count)
    ]
    random.shuffle(rows)
    return rows


def newest_first(rows: list[Row]) -> list[str]:
    """The order the API promises: created_at descending, ties by id descending."""
    ordered = sorted(rows, key=lambda r: (r.created_at, uuid.UUID(r.call_id)), reverse=True)
    return [r.call_id for r in ordered]


async def fresh_key_with(make_api, pg, rows: list[Row]) -> Api:
    api = await make_api()
    await insert_calls(pg, await key_id_of(pg, api.key), rows)
    return api


async def get_list(api: Api, path: str = "/calls", **params: Any) -> tuple[int, Any]:
    async with asyncio.timeout(REQUEST_TIMEOUT_S):
        status, body, headers = await api.request("GET", path, params=params)
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    return status, body


async def listed(api: Api, path: str = "/calls", **params: Any) -> dict[str, Any]:
    status, body = await get_list(api, path, **params)
    assert status == 200, body
    assert set(body) == {"data", "total", "page", "limit", "totalPages"}, body
    return body


async def every_page(api: Api, path: str = "/calls", **params: Any) -> tuple[list[str], int]:
    """All ids the list gives, page after page of 100, and the total it announced."""
    ids: list[str] = []
    page, total = 1, None
    while True:
        body = await listed(api, path, page=page, limit=100, **params)
        total = body["total"] if total is None else total
        assert body["total"] == total, "the total moved while paging a still list"
        ids += [call["call_id"] for call in body["data"]]
        if page >= body["totalPages"]:
            return ids, total
        page += 1


# -- 1. whose calls, which order, what shape -------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_list_holds_only_the_callers_calls_newest_first(make_api, path) -> None:
    mine, other = await make_api(100, 100), await make_api(100, 100)
    created: list[str] = []
    for i in range(3):
        _, body, _ = await mine.create_call(metadata={"n": i})
        created.append(body["call_id"])
        # An ingested call of the same key is listed as well.
        status, event, _ = await mine.request(
            "POST", "/events", json={"event": "call_initiated", "type": "video", "queue_id": "q1"}
        )
        assert status == 201, event
        created.append(event["call_id"])
        status, theirs, _ = await other.create_call()
        assert status == 201, theirs

    body = await listed(mine, path)

    assert [call["call_id"] for call in body["data"]] == created[::-1]
    assert (body["total"], body["page"], body["limit"], body["totalPages"]) == (6, 1, 20, 1)
    stamps = [call["created_at"] for call in body["data"]]
    assert stamps == sorted(stamps, reverse=True)
    for call in body["data"]:
        assert set(call) == LIST_FIELDS, call
    simulated = [c for c in body["data"] if c["source"] == "simulated"]
    ingested = [c for c in body["data"] if c["source"] == "ingested"]
    assert [c["metadata"] for c in simulated] == [{"n": 2}, {"n": 1}, {"n": 0}]
    assert {(c["type"], c["queue_id"]) for c in ingested} == {("video", "q1")}
    theirs_listed = await listed(other, path)
    assert theirs_listed["total"] == 3
    assert not {c["call_id"] for c in theirs_listed["data"]} & set(created)


async def test_list_orders_by_created_at_not_by_insertion_and_breaks_ties_by_id(
    make_api, pg
) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    rows = plain_rows(20, start=start)
    # Ten more calls created in the very same microsecond: their order is the id.
    twin_at = start + timedelta(seconds=7.5)
    rows += [Row(str(uuid.uuid4()), "COMPLETED", (), "voice", None, twin_at) for _ in range(10)]
    random.shuffle(rows)
    api = await fresh_key_with(make_api, pg, rows)

    pages = [await listed(api, page=page, limit=7) for page in range(1, 6)]

    ids = [call["call_id"] for body in pages for call in body["data"]]
    assert ids == newest_first(rows)
    assert [len(body["data"]) for body in pages] == [7, 7, 7, 7, 2]


@pytest.mark.parametrize("path", PATHS)
async def test_both_paths_give_the_same_answer(make_api, pg, path) -> None:
    api = await fresh_key_with(make_api, pg, plain_rows(5))

    assert await listed(api, path, limit=3, page=2) == await listed(api, "/calls", limit=3, page=2)


async def test_list_needs_a_key(api: Api) -> None:
    for path in PATHS:
        async with api.http.get(api.url(path)) as response:
            assert response.status == 401
            assert await response.json() == {
                "error": "Unauthorized",
                "message": "Missing API key: send Authorization: Bearer <key>, or X-API-Key: <key>",
            }


# -- 2. filters ------------------------------------------------------------------------------


def filter_grid(start: datetime) -> list[Row]:
    """Every status x type x queue x flag set, each at its own time, in random order."""
    combos = list(
        itertools.product(
            STATUSES,
            TYPES,
            [None, "q1", "q2"],
            [(), ("short_call",), ("wait_sla_exceeded", "rerouted"), ("hold_limit_exceeded",)],
        )
    )
    random.shuffle(combos)
    return [
        Row(str(uuid.uuid4()), status, flags, call_type, queue, start + timedelta(seconds=i))
        for i, (status, call_type, queue, flags) in enumerate(combos)
    ]


def matches(row: Row, query: dict[str, str]) -> bool:
    return (
        query.get("status", row.status) == row.status
        and ("flag" not in query or query["flag"] in row.flags)
        and query.get("queue_id", row.queue_id) == row.queue_id
        and query.get("type", row.call_type) == row.call_type
    )


FILTERS: list[dict[str, str]] = (
    [{"status": s} for s in STATUSES]
    + [{"flag": f} for f in FLAGS]
    + [{"queue_id": q} for q in ("q1", "q2", "no-such-queue")]
    + [{"type": t} for t in TYPES]
    + [
        {"status": "COMPLETED", "flag": "short_call"},
        {"status": "QUEUED", "type": "video"},
        {"queue_id": "q1", "type": "voice"},
        {"flag": "rerouted", "queue_id": "q2"},
        {"flag": "wait_sla_exceeded", "type": "video", "status": "ON_HOLD"},
        {"status": "ANSWERED", "flag": "hold_limit_exceeded", "queue_id": "q1", "type": "video"},
        {"status": "RINGING", "flag": "short_call", "queue_id": "q2", "type": "voice"},
    ]
)


@pytest.fixture(scope="module")
async def grid(platform: Platform) -> AsyncIterator[tuple[str, list[Row]]]:
    """A key with the whole filter grid, and another key with the same grid (never listed)."""
    start = datetime.now(UTC) - timedelta(days=2)
    conn = await asyncpg.connect(platform.dsn)
    try:
        secret, other = await platform.new_key(), await platform.new_key()
        rows = filter_grid(start)
        await insert_calls(conn, await key_id_of(conn, secret), rows)
        await insert_calls(
            conn,
            await key_id_of(conn, other),
            [replace(row, call_id=str(uuid.uuid4())) for row in rows],
        )
    finally:
        await conn.close()
    yield secret, rows


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("query", FILTERS, ids=lambda q: "&".join(f"{k}={v}" for k, v in q.items()))
async def test_each_filter_alone_and_combined_lists_exactly_the_matching_calls(
    http, platform, grid, path, query
) -> None:
    secret, rows = grid
    api = Api(http, platform, secret)
    expected = newest_first([r for r in rows if matches(r, query)])

    ids, total = await every_page(api, path, **query)

    assert ids == expected
    assert total == len(expected)
    first = await listed(api, path, **query)
    assert first["totalPages"] == math.ceil(len(expected) / 20)
    for call in first["data"]:
        for name, value in query.items():
            field = {"status": "status", "queue_id": "queue_id", "type": "type"}.get(name)
            if field:
                assert call[field] == value, call
            else:
                assert value in call["flags"], call


async def test_flags_raised_by_the_rules_are_filterable(api: Api) -> None:
    """Each business rule's flag, raised by posted events, finds exactly its call."""

    async def post(event: dict[str, Any]) -> dict[str, Any]:
        status, body, _ = await api.request("POST", "/events", json=event)
        assert status == 201, body
        return body

    async def new_call(call_type: str, queue_id: str) -> str:
        body = await post({"event": "call_initiated", "type": call_type, "queue_id": queue_id})
        return body["call_id"]

    async def routed(call_id: str, **extra: Any) -> None:
        await post({"event": "call_routed", "call_id": call_id, "agent_id": "a1"} | extra)

    waited = await new_call("voice", "sales")
    await routed(waited)
    await post({"event": "call_answered", "call_id": waited, "wait_time": 31})

    rerouted = await new_call("video", "support")
    await routed(rerouted, routing_time=16)

    short = await new_call("voice", "support")
    await routed(short)
    await post({"event": "call_answered", "call_id": short, "wait_time": 1})
    await post({"event": "call_ended", "call_id": short, "end_reason": "completed", "duration": 5})

    held = await new_call("video", "sales")
    await routed(held)
    await post({"event": "call_answered", "call_id": held, "wait_time": 1})
    await post({"event": "call_hold", "call_id": held, "hold_duration": 61})

    plain = await new_call("voice", "sales")

    expected = {
        "wait_sla_exceeded": [waited],
        "rerouted": [rerouted],
        "short_call": [short],
        "hold_limit_exceeded": [held],
    }
    for flag, ids in expected.items():
        body = await listed(api, flag=flag)
        assert [c["call_id"] for c in body["data"]] == ids, (flag, body)
        assert body["data"][0]["flags"] == [flag]
    assert [c["call_id"] for c in (await listed(api, queue_id="sales"))["data"]] == [
        plain,
        held,
        waited,
    ]
    assert [c["call_id"] for c in (await listed(api, type="video"))["data"]] == [held, rerouted]
    body = await listed(api, status="ON_HOLD", type="video", queue_id="sales")
    assert [c["call_id"] for c in body["data"]] == [held]
    body = await listed(api, status="COMPLETED", flag="short_call", queue_id="support")
    assert [c["call_id"] for c in body["data"]] == [short]


# -- 3. limit and pages ----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def many(platform: Platform) -> AsyncIterator[tuple[str, list[Row]]]:
    """A key with 150 calls."""
    conn = await asyncpg.connect(platform.dsn)
    try:
        secret = await platform.new_key()
        rows = plain_rows(150)
        await insert_calls(conn, await key_id_of(conn, secret), rows)
    finally:
        await conn.close()
    yield secret, rows


@pytest.mark.parametrize(
    ("asked", "served"),
    [(None, 20), ("1", 1), ("99", 99), ("100", 100), ("101", 100), ("1000", 100)],
)
async def test_limit_defaults_to_20_and_is_capped_at_100_which_the_answer_says(
    http, platform, many, asked, served
) -> None:
    secret, rows = many
    api = Api(http, platform, secret)

    body = await listed(api, **({} if asked is None else {"limit": asked}))

    assert body["limit"] == served
    assert [c["call_id"] for c in body["data"]] == newest_first(rows)[:served]
    assert body["total"] == 150
    assert body["totalPages"] == math.ceil(150 / served)
    assert body["page"] == 1


async def test_pages_cover_every_call_once_and_a_page_past_the_end_is_empty(
    http, platform, many
) -> None:
    secret, rows = many
    api = Api(http, platform, secret)

    pages = [await listed(api, page=page, limit=40) for page in range(1, 6)]

    assert [len(body["data"]) for body in pages] == [40, 40, 40, 30, 0]
    assert [c["call_id"] for body in pages for c in body["data"]] == newest_first(rows)
    for page, body in enumerate(pages, start=1):
        assert (body["total"], body["page"], body["limit"], body["totalPages"]) == (
            150,
            page,
            40,
            4,
        )
    far = await listed(api, page=1_000_000, limit=100)
    assert (far["data"], far["total"], far["page"], far["totalPages"]) == ([], 150, 1_000_000, 2)


async def test_a_total_that_is_an_exact_multiple_of_the_limit(make_api, pg) -> None:
    rows = plain_rows(40)
    api = await fresh_key_with(make_api, pg, rows)

    last = await listed(api, page=2, limit=20)
    past = await listed(api, page=3, limit=20)

    assert [c["call_id"] for c in last["data"]] == newest_first(rows)[20:]
    assert (last["total"], last["totalPages"]) == (40, 2)
    assert (past["data"], past["total"], past["totalPages"]) == ([], 40, 2)


async def test_limit_1_pages_one_call_at_a_time(make_api, pg) -> None:
    rows = plain_rows(5)
    api = await fresh_key_with(make_api, pg, rows)

    pages = [await listed(api, page=page, limit=1) for page in range(1, 7)]

    assert [[c["call_id"] for c in body["data"]] for body in pages[:5]] == [
        [call_id] for call_id in newest_first(rows)
    ]
    assert pages[5]["data"] == []
    assert {(body["total"], body["limit"], body["totalPages"]) for body in pages} == {(5, 1, 5)}


@pytest.mark.parametrize("path", PATHS)
async def test_a_key_without_calls_gets_total_0_and_0_pages(make_api, path) -> None:
    api = await make_api()

    body = await listed(api, path)
    filtered = await listed(api, path, status="QUEUED", page=3, limit=5)

    assert body == {"data": [], "total": 0, "page": 1, "limit": 20, "totalPages": 0}
    assert filtered == {"data": [], "total": 0, "page": 3, "limit": 5, "totalPages": 0}


async def test_a_filter_without_matches_gets_total_0_and_0_pages(http, platform, many) -> None:
    secret, _ = many
    api = Api(http, platform, secret)

    body = await listed(api, status="QUEUED", flag="short_call")

    assert body == {"data": [], "total": 0, "page": 1, "limit": 20, "totalPages": 0}


# -- 4. refusals -----------------------------------------------------------------------------


BAD_QUERIES: list[tuple[str, str, str]] = [
    # (id, query string, the field its message must name)
    ("page=0", "page=0", "page"),
    ("page=-1", "page=-1", "page"),
    ("page=abc", "page=abc", "page"),
    ("page=1.5", "page=1.5", "page"),
    ("page=empty", "page=", "page"),
    ("page=superscript", "page=%C2%B2", "page"),
    ("page=huge", "page=" + "9" * 30, "page"),
    ("page=5000-digits", "page=" + "9" * 5000, "page"),
    ("limit=0", "limit=0", "limit"),
    ("limit=-5", "limit=-5", "limit"),
    ("limit=abc", "limit=abc", "limit"),
    ("limit=empty", "limit=", "limit"),
    ("limit=5000-digits", "limit=" + "9" * 5000, "limit"),
    ("status=LOST", "status=LOST", "status"),
    ("status=empty", "status=", "status"),
    ("status=long", "status=" + "Q" * 5_000, "status"),
    ("flag=nope", "flag=nope", "flag"),
    ("flag=long", "flag=" + "x" * 5_000, "flag"),
    ("type=fax", "type=fax", "type"),
    ("type=empty", "type=", "type"),
    ("queue_id=empty", "queue_id=", "queue_id"),
    ("queue_id=101-chars", "queue_id=" + "q" * 101, "queue_id"),
    ("queue_id=5000-chars", "queue_id=" + "q" * 5_000, "queue_id"),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("query", "field"), [q[1:] for q in BAD_QUERIES], ids=[q[0] for q in BAD_QUERIES]
)
async def test_a_bad_query_value_is_a_400_naming_the_parameter(
    api: Api, path, query, field
) -> None:
    async with (
        asyncio.timeout(REQUEST_TIMEOUT_S),
        api.http.get(api.url(path) + "?" + query, headers=api.auth) as response,
    ):
        text = await response.text()

    assert response.status == 400, text[:500]
    assert response.content_type == "application/json", text[:500]
    body = json.loads(text)
    assert set(body) == {"error", "message"}, body
    assert body["error"] == "Bad Request"
    assert field in body["message"], body
    assert len(body["message"]) < 1_000, "the refusal echoes the whole value back"


@pytest.mark.parametrize(
    "query",
    [
        "queue_id=%FF%FE",  # not UTF-8
        "queue_id=%F0%9F%93%9E",  # an emoji is a fine queue id
        "queue_id=" + "%27%3B--",  # quotes are data, never SQL
        "status=queued",  # the states are upper case
        "flag=SHORT_CALL",
        "page=%201",
        "limit=1e3",
        "page=0x10",
    ],
)
async def test_odd_query_values_never_get_a_500(api: Api, query) -> None:
    async with (
        asyncio.timeout(REQUEST_TIMEOUT_S),
        api.http.get(api.url("/calls") + "?" + query, headers=api.auth) as response,
    ):
        text = await response.text()

    assert response.status in (200, 400), (response.status, text[:500])
    assert response.content_type == "application/json", text[:500]
    body = json.loads(text)
    if response.status == 400:
        assert body["error"] == "Bad Request" and body["message"], body
    else:
        assert body["total"] == 0 and body["data"] == []


@pytest.mark.parametrize("path", PATHS)
async def test_a_nul_byte_in_queue_id_is_a_400(api: Api, path) -> None:
    """PostgreSQL text cannot hold NUL, so it is refused before it gets there."""
    async with (
        asyncio.timeout(REQUEST_TIMEOUT_S),
        api.http.get(api.url(path) + "?queue_id=a%00b", headers=api.auth) as response,
    ):
        body = await response.json(content_type=None)

    assert (response.status, body["error"]) == (400, "Bad Request"), (response.status, body)
    assert "queue_id" in body["message"], body


@pytest.mark.parametrize("param", ["status", "flag", "queue_id"])
async def test_a_request_line_over_8190_bytes_still_gets_a_json_400(api: Api, param) -> None:
    """aiohttp's parser refuses a request line over its max_line_size in plain text before any
    middleware runs; the app raises that limit to 32 KiB so long values reach validation."""
    async with (
        asyncio.timeout(REQUEST_TIMEOUT_S),
        api.http.get(api.url("/calls") + f"?{param}=" + "x" * 10_000, headers=api.auth) as response,
    ):
        text = await response.text()

    assert response.status in (400, 414), (response.status, text[:300])
    assert response.content_type == "application/json", (response.content_type, text[:300])
    assert json.loads(text)["error"] in ("Bad Request", "URI Too Long"), text[:300]


@pytest.mark.parametrize(
    ("query", "last_value_wins"),
    [
        ("status=QUEUED&status=COMPLETED", {"status": "COMPLETED"}),
        ("status=LOST&status=COMPLETED", {"status": "COMPLETED"}),
        ("status=COMPLETED&status=LOST", None),
        ("limit=5&limit=2", {"limit": "2"}),
        ("limit=0&limit=2", {"limit": "2"}),
        ("page=2&page=abc", None),
        ("flag=short_call&flag=rerouted", {"flag": "rerouted"}),
        ("type=voice&type=video", {"type": "video"}),
        ("queue_id=q1&queue_id=", None),
    ],
)
async def test_a_repeated_parameter_is_a_400_or_the_last_one_wins_never_a_500(
    http, platform, grid, query, last_value_wins
) -> None:
    """Either answer is defensible; a 500, a mix of both values, or the first value is not."""
    secret, _ = grid
    api = Api(http, platform, secret)
    async with (
        asyncio.timeout(REQUEST_TIMEOUT_S),
        api.http.get(api.url("/calls") + "?" + query, headers=api.auth) as response,
    ):
        assert response.content_type == "application/json", await response.text()
        body = await response.json()

    if response.status == 400 or last_value_wins is None:
        assert response.status == 400, body
        assert body["error"] == "Bad Request"
    else:
        assert response.status == 200, body
        assert body == await listed(api, **last_value_wins)


# -- 5. the list query's plans on a big table -------------------------------------------------

# The key whose calls are listed, and how its 200k calls are spread (three other keys have 50k).
BIG_KEY = "00000000-0000-4000-8000-00000000000a"
BIG_CALLS, OTHER_CALLS = 200_000, 50_000


class Recorder:
    """Stands in for the pool to catch the statement fetch_calls_page sends."""

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.sql, self.args = sql, args
        return []


@pytest.fixture(scope="module")
async def big_table(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[asyncpg.Connection]:
    """A database of its own with the real migrations and 250k calls, vacuumed and analysed."""
    own = Platform(tmp_path_factory.mktemp("plans"))
    await own.create_database()
    try:
        conn = await asyncpg.connect(own.dsn)
        try:
            await conn.execute(
                """
                INSERT INTO api_keys (id, name, key_hash, key_prefix)
                SELECT ('00000000-0000-4000-8000-00000000000' || to_hex(k))::uuid,
                       'plans-' || k, sha256(('plans-' || k)::bytea), 'plan'
                  FROM generate_series(10, 13) AS k
                """
            )
            # Realistic shares: 94 % COMPLETED, 90 % voice, half from a queue, ~7 % flagged.
            await conn.execute(
                """
                INSERT INTO calls (id, api_key_id, kind, status, seq, from_number, to_number,
                                   flags, call_type, queue_id, created_at, updated_at,
                                   status_changed_at, started_at)
                SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
                       CASE WHEN g <= $1 THEN $2::uuid
                            ELSE ('00000000-0000-4000-8000-00000000000' || to_hex(11 + g % 3))::uuid
                       END,
                       CASE WHEN g % 2 = 0 THEN 'simulated' ELSE 'ingested' END,
                       CASE WHEN g % 100 < 94 THEN 'COMPLETED'
                            ELSE (ARRAY['QUEUED', 'RINGING', 'ANSWERED', 'ON_HOLD',
                                        'UNANSWERED'])[1 + g % 5] END,
                       1, '+14155550100', '+14155550199',
                       CASE WHEN g % 20 = 0 THEN ARRAY['short_call']
                            WHEN g % 97 = 0 THEN ARRAY['wait_sla_exceeded', 'rerouted']
                            WHEN g % 89 = 0 THEN ARRAY['hold_limit_exceeded']
                            ELSE '{}'::text[] END,
                       CASE WHEN g % 10 = 0 THEN 'video' ELSE 'voice' END,
                       CASE WHEN g % 2 = 1 THEN 'q' || (g % 10) END,
                       now() - make_interval(secs => $3 - g), now(), now(), now()
                  FROM generate_series(1, $3) AS g
                """,
                BIG_CALLS,
                BIG_KEY,
                BIG_CALLS + OTHER_CALLS,
            )
            # VACUUM as autovacuum would soon: a plan that depends on whether it has run yet
            # is not one a test can pin down.
            await conn.execute("VACUUM ANALYZE calls")
            yield conn
        finally:
            await conn.close()
    finally:
        await own.drop_database()


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def list_plans(conn: asyncpg.Connection, where: CallFilter) -> dict[str, dict[str, Any]]:
    """The plan PostgreSQL picks for the list statement with these values (custom), and the one
    a prepared statement may switch to after five runs (generic)."""
    recorder = Recorder()
    await fetch_calls_page(recorder, BIG_KEY, where, limit=20, offset=0)  # type: ignore[arg-type]
    custom = await conn.fetchval("EXPLAIN (FORMAT JSON) " + recorder.sql, *recorder.args)
    name = f"list_{uuid.uuid4().hex}"
    await conn.execute(f"PREPARE {name} AS {recorder.sql}")
    values = ", ".join(f"'{value}'" for value in recorder.args)
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    try:
        generic = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({values})")
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute(f"DEALLOCATE {name}")
    return {
        "custom": json.loads(custom)[0]["Plan"],
        "generic": json.loads(generic)[0]["Plan"],
    }


def seq_scans_of_calls(plans: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {
        kind: [
            {k: node.get(k) for k in ("Node Type", "Filter", "Plan Rows", "Total Cost")}
            for node in plan_nodes(plan)
            if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "calls"
        ]
        for kind, plan in plans.items()
        if any(
            n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "calls"
            for n in plan_nodes(plan)
        )
    }


PLAN_FILTERS = {
    "none": CallFilter(),
    **{f"status={s}": CallFilter(status=s) for s in STATUSES if s != "COMPLETED"},
    **{f"flag={f}": CallFilter(flag=f) for f in FLAGS},
    "queue_id=q1": CallFilter(queue_id="q1"),
    "type=video": CallFilter(call_type="video"),
    "status+type": CallFilter(status="QUEUED", call_type="video"),
    "status+flag": CallFilter(status="COMPLETED", flag="short_call"),
    "queue+type": CallFilter(queue_id="q3", call_type="voice"),
    "all four": CallFilter(
        status="ANSWERED", flag="hold_limit_exceeded", queue_id="q1", call_type="voice"
    ),
}
# Filters that match most of the key's calls (94 % are COMPLETED, 90 % are voice).
BROAD_FILTERS = {
    "status=COMPLETED": CallFilter(status="COMPLETED"),
    "type=voice": CallFilter(call_type="voice"),
}


@pytest.mark.parametrize("name", PLAN_FILTERS)
async def test_the_list_query_reads_calls_through_an_index(big_table, name) -> None:
    plans = await list_plans(big_table, PLAN_FILTERS[name])

    assert not seq_scans_of_calls(plans), json.dumps(plans, indent=1)[:4000]
    used = {n["Index Name"] for p in plans.values() for n in plan_nodes(p) if "Index Name" in n}
    assert used, plans


@pytest.mark.parametrize("name", BROAD_FILTERS)
async def test_a_filter_matching_most_calls_still_reads_its_page_through_an_index(
    big_table, name
) -> None:
    """For a filter most of the key's calls match, the exact count reads the table (cheaper
    than an index when nearly every row matches: the total costs what counting costs), but
    the page itself is still a LIMIT over an index in list order."""
    plans = await list_plans(big_table, BROAD_FILTERS[name])

    for plan in plans.values():
        limits = [n for n in plan_nodes(plan) if n["Node Type"] == "Limit"]
        assert limits, plan
        page_scans = [
            n for limit in limits for n in plan_nodes(limit) if n.get("Relation Name") == "calls"
        ]
        assert page_scans and all("Index" in n["Node Type"] for n in page_scans), page_scans


# -- the filters users reach for, and parameters that are not filters ---------------------------


async def test_a_misspelt_filter_is_a_400_naming_it_not_every_call(api: Api) -> None:
    for query in ("statsu=QUEUED", "from_=%2B14155550100", "sort_by=created_at"):
        status, body, _ = await api.request("GET", f"/calls?{query}")
        assert status == 400, body
        assert body["message"].startswith("Unknown query parameter: " + query.split("=")[0])


async def test_numbers_source_end_reason_times_and_order_filter_the_list(make_api) -> None:
    api = await make_api(max_concurrent=100, max_cps=100)
    made = []
    for i in range(3):
        _, body, _ = await api.create_call(**{"from": f"+1555000000{i}", "to": "+14155550199"})
        made.append(body["call_id"])
    _, ingested, _ = await api.request(
        "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
    )
    await api.request(
        "POST",
        "/events",
        json={"event": "call_ended", "call_id": ingested["call_id"], "end_reason": "abandoned"},
    )
    for call_id in made:
        await api.wait_recorded(call_id)

    async def ids(**params: str) -> list[str]:
        status, body, _ = await api.request("GET", "/calls", params=params)
        assert status == 200, body
        return [c["call_id"] for c in body["data"]]

    assert await ids(**{"from": "+15550000001"}) == [made[1]]
    assert await ids(to="+14155550199") == made[::-1]
    assert await ids(source="ingested") == [ingested["call_id"]]
    assert await ids(source="simulated", sort="created_at") == made
    assert await ids(end_reason="abandoned") == [ingested["call_id"]]
    _, second, _ = await api.get_call(made[1])
    # Times are shown to the millisecond and stored to the microsecond: the second call was
    # made within the millisecond it shows.
    shown = datetime.fromisoformat(second["created_at"])
    next_ms = (shown + timedelta(milliseconds=1)).isoformat()
    after = await ids(created_after=next_ms, source="simulated")
    before = await ids(created_before=second["created_at"], source="simulated")
    assert (after, before) == ([made[2]], [made[0]])
    status, body, _ = await api.request("GET", "/calls", params={"created_after": "yesterday"})
    assert (status, body["message"]) == (400, "created_after must be an ISO 8601 date and time")
