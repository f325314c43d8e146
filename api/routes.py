"""Every route of the API, read top to bottom: what serves it, who may call it, and what it
takes and answers (the OpenAPI document is built from this table)."""

from __future__ import annotations

from aiohttp import web

from api import appkeys, models, schemas
from api.handlers import calls, docs, events, health, metrics, pages, recordings, stats, streams
from api.route import AUDIO, HTML, SSE, WEBSOCKET, Route

# One line per route, so the table reads top to bottom (hence no formatter and long lines here).
# fmt: off
P = {"public": True, "tag": "platform"}
ROUTES: list[Route] = [
    Route("GET",  "/",              health.index,    "What this is and where to go",  {200: models.Index}, **P),
    Route("GET",  "/health",        health.health,   "Liveness",                      {200: models.Health}, **P),
    Route("GET",  "/ready",         health.ready,    "Readiness: both stores answer", {200: models.Ready, 503: models.Ready}, **P),
    Route("GET",  "/openapi.json",  docs.openapi,    "This document, OpenAPI 3.2",    {200: "application/json"}, **P),
    Route("GET",  "/docs",          pages.page("docs.html"), "This document in Swagger UI", {200: HTML}, **P),
    Route("GET",  "/dashboard",     pages.page("dashboard.html"), "The live dashboard page", {200: HTML}, **P),
    Route("GET",  "/static/{name:.+}", pages.asset,  "The pages' scripts and styles", {200: "text/*"}, (404,), **P),
    Route("POST", "/calls",         calls.create_call, "Create a simulated call",     {201: models.CreatedCall}, (400, 422, 429), body=schemas.CreateCall,
          headers={"Idempotency-Key": "A repeat replays the first answer; the same key with another body is a 422."}),
    Route("GET",  "/calls",         calls.list_calls, "The key's calls, newest first", {200: models.CallPage}, (400,), query=schemas.ListCalls),
    Route("GET",  "/calls/{call_id}", calls.get_call, "One call",                     {200: models.Call}, (400, 404)),
    Route("GET",  "/calls/{call_id}/events", events.call_events, "A call's history, in order, a page at a time", {200: models.History}, (400, 404), query=schemas.HistoryPage, tag="events"),
    Route("GET",  "/calls/{call_id}/recording", recordings.get_recording, "A call's recording", {200: AUDIO}, (400, 404)),
    Route("GET",  "/calls/{call_id}/stream", streams.call_stream, "Follow one call (SSE)", {200: SSE}, (400, 404), query_token=True, tag="realtime",
          headers={"Last-Event-ID": "Resume after this seq (also ?last_event_id=)."}),
    Route("GET",  "/ws",            streams.call_websocket, "Follow one call (WebSocket, ?call_id=)", {101: WEBSOCKET}, (400, 404), query_token=True, tag="realtime"),
    Route("GET",  "/stream",        streams.key_stream, "Follow every call of the key (SSE)", {200: SSE}, query_token=True, tag="realtime"),
    Route("POST", "/events",        events.post_event, "Ingest one lifecycle event",  {201: models.StoredEvent, 200: models.StoredEvent}, (400, 404, 409, 422, 429), body=schemas.PostEvent, tag="events"),
    Route("GET",  "/stats/queues",  stats.queue_stats, "Each queue's service level, abandonment, ASA, AHT over a window, and who waits now", {200: models.QueueStats}, (400,), query=schemas.QueueStatsQuery, tag="stats"),
    Route("GET",  "/stats/queues/{queue_id}/series", stats.queue_series, "One queue's figures per bucket over a window", {200: models.QueueSeries}, (400, 404), query=schemas.SeriesQuery, tag="stats"),
    Route("GET",  "/stats/agents",  stats.agent_stats, "Each agent's handled calls, AHT and hold time over a window", {200: models.AgentStats}, (400,), query=schemas.AgentStatsQuery, tag="stats"),
    Route("GET",  "/metrics",       metrics.metrics, "Platform counters (JSON, Prometheus text or OpenMetrics)", {200: models.Metrics}, tag="platform"),
    # The contact-centre service's paths, for its clients.
    Route("POST", "/api/events",    events.post_event, "Ingest one lifecycle event",  {201: models.StoredEvent, 200: models.StoredEvent}, (400, 404, 409, 422, 429), body=schemas.PostEvent, tag="events"),
    Route("GET",  "/api/calls",     calls.list_calls, "The key's calls, newest first", {200: models.CallPage}, (400,), query=schemas.ListCalls, tag="events"),
    Route("GET",  "/api/stats/queues", stats.queue_stats, "Each queue's service level, abandonment, ASA, AHT over a window, and who waits now", {200: models.QueueStats}, (400,), query=schemas.QueueStatsQuery, tag="stats"),
    Route("GET",  "/api/calls/{call_id}/events", events.call_events, "A call's history, in order, a page at a time", {200: models.History}, (400, 404), query=schemas.HistoryPage, tag="events"),
]
# fmt: on


def setup_routes(app: web.Application) -> None:
    specs = {}
    for route in ROUTES:
        specs[app.router.add_route(route.method, route.path, route.handler)] = route
    app[appkeys.ROUTES] = specs
