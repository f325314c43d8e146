"""`GET /stats/queues`, `/stats/queues/{queue_id}/series` and `/stats/agents`: the supervisor's
figures over a window, from the rollups (calls/stats.py, db/stats.py); and `GET /stats/calls`:
how many calls the key has in each status now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from api import appkeys
from api.handlers.common import json_response
from api.request_models import AgentStatsQuery, QueueStatsQuery, SeriesQuery, parse_query
from calls import stats
from core.clock import iso
from core.errors import BadRequest, NotFound
from core.lifecycle import Status
from db import stats as db_stats
from db.counters import BREACHES_COUNTED, fetch_call_counts

QUEUE_ID_MAX = 100
_NOTHING = dict.fromkeys(db_stats.QUEUE_COLUMNS, 0)


def _more(rows: list[Any], name: str) -> tuple[list[Any], str | None]:
    """An answer's rows and the `after` of the next page (None on the last)."""
    if len(rows) <= stats.MAX_PER_ANSWER:
        return rows, None
    rows = rows[: stats.MAX_PER_ANSWER]
    return rows, rows[-1][name]


async def queue_stats(request: web.Request) -> web.Response:
    query = parse_query(QueueStatsQuery, request.query)
    settings = request.app[appkeys.SETTINGS]
    window = stats.window_of(query.window, query.since, query.until, datetime.now(UTC))
    where = db_stats.StatsFilter(
        queue_ids=None if query.queue_id is None else [query.queue_id],
        call_type=query.type,
        after=query.after,
    )
    queues = await stats.read_queues(
        request.app[appkeys.STORES].pool,
        appkeys.api_key(request).id,
        window,
        where,
        settings.time_scale,
        stats.MAX_PER_ANSWER + 1,
    )
    queues, next_after = _more(queues, "queue_id")
    return json_response(
        window.body()
        | stats.measured_against(settings)
        | {"data": queues, "next_after": next_after}
    )


async def queue_series(request: web.Request) -> web.Response:
    queue_id = request.match_info["queue_id"]
    if len(queue_id) > QUEUE_ID_MAX:
        raise BadRequest(f"queue_id must be at most {QUEUE_ID_MAX} characters")
    query = parse_query(SeriesQuery, request.query)
    step, span = stats.BUCKETS[query.bucket]
    window = stats.window_of(query.window, query.since, query.until, datetime.now(UTC), step)
    points = (window.until - window.since) // step
    if points > stats.MAX_SERIES_POINTS:
        raise BadRequest(
            f"bucket {query.bucket} over this window gives {points} points, more than"
            f" {stats.MAX_SERIES_POINTS}: take a larger bucket or a shorter window"
        )
    pool = request.app[appkeys.STORES].pool
    key_id = appkeys.api_key(request).id
    if not await db_stats.has_queue(pool, key_id, queue_id):
        raise NotFound("Queue not found")
    rows = await db_stats.fetch_queue_series(
        pool,
        key_id,
        queue_id,
        span,
        window.since,
        window.until,
        int(step.total_seconds()),
        query.type,
    )
    by_start = {row["starts_at"]: row for row in rows}
    starts = (window.since + i * step for i in range(points))
    data = [
        {"start": iso(start)} | stats.window_figures(by_start.get(start, _NOTHING))
        for start in starts
    ]
    settings = request.app[appkeys.SETTINGS]
    return json_response(
        {"queue_id": queue_id, "bucket": query.bucket}
        | window.body()
        | stats.measured_against(settings)
        | {"data": data}
    )


async def agent_stats(request: web.Request) -> web.Response:
    query = parse_query(AgentStatsQuery, request.query)
    window = stats.window_of(query.window, query.since, query.until, datetime.now(UTC))
    rows = await db_stats.fetch_agent_figures(
        request.app[appkeys.STORES].pool,
        appkeys.api_key(request).id,
        stats.ranges_of(window.since, window.until),
        db_stats.StatsFilter(
            queue_ids=None if query.queue_id is None else [query.queue_id],
            call_type=query.type,
            after=query.after,
        ),
        limit=stats.MAX_PER_ANSWER + 1,
    )
    rows, next_after = _more(rows, "agent_id")
    return json_response(
        window.body()
        | {"data": [stats.agent_figures(row) for row in rows], "next_after": next_after}
    )


async def call_counts(request: web.Request) -> web.Response:
    """`GET /stats/calls`: the key's calls by status and its breached calls, counted by the
    server (the dashboard's counters), cheaply however many calls the key has."""
    row = await fetch_call_counts(request.app[appkeys.STORES].pool, appkeys.api_key(request).id)
    active: dict[str, int] = row["active"]
    by_status = {status.value: active.get(status.value, 0) for status in Status}
    by_status[Status.COMPLETED.value] = max(0, row["stored"] - sum(active.values()))
    return json_response(
        {
            "total": sum(by_status.values()),
            "by_status": by_status,
            "breaches": min(row["breaches"], BREACHES_COUNTED),
            "breaches_capped": row["breaches"] > BREACHES_COUNTED,
        }
    )
