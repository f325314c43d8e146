"""`GET /metrics`: the platform's counters as JSON (or the caller's key's: `?scope=key`), or
every figure for Prometheus."""

from __future__ import annotations

from aiohttp import web

from api import appkeys, prometheus
from api.handlers.common import json_response
from api.request_models import MetricsQuery, parse_query
from core.errors import BadRequest
from db.counters import fetch_counters, figures_of

# The JSON answer's counters, the original service's six.
JSON_COUNTERS = (
    "total_calls",
    "active_calls",
    "completed_calls",
    "current_cps",
    "uploads_in_progress",
    "uploads_completed",
)


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
    if not wants_exposition:
        row = await fetch_counters(stores.pool, appkeys.api_key(request).id if by_key else None)
        figures = figures_of(row)
        return json_response({name: figures[name] for name in JSON_COUNTERS})
    body, content_type = prometheus.render(await prometheus.read(request.app), accept)
    return web.Response(body=body, headers={"Content-Type": content_type})
