"""`GET /metrics`: the platform's counters as JSON (or the caller's key's: `?scope=key`), or
every figure for Prometheus."""

from __future__ import annotations

from aiohttp import web

from api import appkeys, prometheus
from api.handlers.common import json_response
from api.request_models import MetricsQuery, parse_query
from calls import metrics as shared_metrics
from core import keys
from core.clock import now_ms
from core.errors import BadRequest
from db.counters import fetch_counters


async def metrics(request: web.Request) -> web.Response:
    query: MetricsQuery = parse_query(MetricsQuery, request.query)
    stores = request.app[appkeys.STORES]
    accept = request.headers.get("Accept", "")
    wants_exposition = query.format == "prometheus" or (
        query.format is None
        and ("text/plain" in accept or "application/openmetrics-text" in accept)
        and "application/json" not in accept
    )
    by_key = query.scope == "key"
    if by_key and wants_exposition:
        raise BadRequest(
            "scope=key answers JSON: the Prometheus exposition is the platform's"
            " (ask for application/json, or leave out format)"
        )
    row = await fetch_counters(stores.pool, appkeys.api_key(request).id if by_key else None)
    counters = {
        "total_calls": row["total_calls"],
        "active_calls": row["active_calls"],
        "completed_calls": row["total_calls"] - row["active_calls"],
        "current_cps": row["current_cps"],
        "uploads_in_progress": row["uploads_in_progress"],
        "uploads_completed": row["uploads_completed"],
    }
    if not wants_exposition:
        return json_response(counters)

    now = now_ms()
    async with stores.redis.pipeline(transaction=False) as pipe:
        pipe.llen(f"rq:queue:{keys.TIMERS_QUEUE}")
        for kind in keys.TIMER_KINDS:
            pipe.zcard(keys.timers(kind))
            pipe.zcount(keys.timers(kind), "-inf", now)
        depth, *counts = await pipe.execute()
    histograms, shared = await shared_metrics.read(stores.redis)
    figures = prometheus.Figures(
        counts=counters | {"uploads_failed": row["uploads_failed"]},
        queue_depth=depth,
        timers_pending={kind: counts[2 * i] for i, kind in enumerate(keys.TIMER_KINDS)},
        timers_overdue={kind: counts[2 * i + 1] for i, kind in enumerate(keys.TIMER_KINDS)},
        open_streams=request.app[appkeys.HUB].open_subscriptions,
        histograms=histograms,
        shared=shared,
    )
    body, content_type = prometheus.render(
        prometheus.Exposition(figures, request.app[appkeys.REGISTRY]), accept
    )
    return web.Response(body=body, headers={"Content-Type": content_type})
