"""Every route of the API, read top to bottom: what serves it, who may call it, and what it
takes and answers. The auth middleware and the OpenAPI document both read this table."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from api import appkeys, request_models, response_models, twilio_requests
from api.handlers import (
    callbacks,
    calls,
    docs,
    events,
    health,
    metrics,
    pages,
    recordings,
    stats,
    streams,
    twilio,
)
from api.handlers.common import Handler

# What a response that is not JSON carries, for the document.
SSE, WEBSOCKET, AUDIO, PROMETHEUS, HTML = (
    "text/event-stream",
    "websocket",
    "audio/*",
    "text/plain",
    "text/html",
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    # The answers besides the errors every route shares (401, 405, 413, 503 …).
    ok: dict[int, type[BaseModel] | str]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    public: bool = False
    # Browsers cannot set headers on EventSource or WebSocket: streams take `access_token=`.
    query_token: bool = False
    # A call's own streams also open with its stream token (`token=`), which names no key.
    call_token: bool = False
    tag: str = "calls"
    # What the platform POSTs to the URL the body's `status_callback` names (its callbacks).
    callback: type[BaseModel] | None = None
    # The Twilio face: Twilio's form bodies and error shape, and HTTP Basic AccountSid:AuthToken
    # besides our own ways of presenting the key.
    twilio: bool = False


# One line per route, so the table reads top to bottom (hence no formatter and long lines here).
# fmt: off
P = {"public": True, "tag": "platform"}
T = {"twilio": True, "tag": "twilio"}
ROUTES: list[Route] = [
    Route("GET",  "/",              health.index,    "What this is and where to go",  {200: response_models.Index}, **P),
    Route("GET",  "/health",        health.health,   "Liveness",                      {200: response_models.Health}, **P),
    Route("GET",  "/ready",         health.ready,    "Readiness: both stores answer", {200: response_models.Ready, 503: response_models.Ready}, **P),
    Route("GET",  "/openapi.json",  docs.openapi,    "This document, OpenAPI 3.2",    {200: "application/json"}, **P),
    Route("GET",  "/docs",          pages.page("docs.html"), "This document in Swagger UI", {200: HTML}, **P),
    Route("GET",  "/dashboard",     pages.page("dashboard.html"), "The live dashboard page", {200: HTML}, **P),
    Route("GET",  "/static/{name:.+}", pages.asset,  "The pages' scripts and styles", {200: "text/*"}, (404,), **P),
    Route("POST", "/calls",         calls.create_call, "Create a simulated call",     {201: response_models.CreatedCall}, (400, 422, 429), body=request_models.CreateCall, callback=response_models.StatusUpdate,
          headers={"Idempotency-Key": "A repeat replays the first answer; the same key with another body is a 422."}),
    Route("DELETE", "/calls",       calls.delete_calls, "Delete the key's ended calls: a clean slate for a test suite", {200: response_models.DeletedCalls}, (400, 409), query=request_models.DeleteCalls),
    Route("GET",  "/calls",         calls.list_calls, "The key's calls, newest first", {200: response_models.CallPage}, (400,), query=request_models.ListCalls),
    Route("GET",  "/calls/{call_id}", calls.get_call, "One call",                     {200: response_models.Call}, (400, 404)),
    Route("POST", "/calls/{call_id}/advance", calls.advance_call, "Move a simulated call to its next timed state now", {200: response_models.StatusUpdate}, (400, 404, 409), query=request_models.Advance),
    Route("POST", "/calls/{call_id}/hangup", calls.hang_up_call, "End a simulated call now, as its caller hanging up", {200: response_models.StatusUpdate}, (400, 404, 409)),
    Route("GET",  "/calls/{call_id}/callbacks", callbacks.call_callbacks, "A call's status callbacks, each with every attempt", {200: response_models.CallbackLog}, (400, 404), query=request_models.CallbackPage),
    Route("GET",  "/calls/{call_id}/events", events.call_events, "A call's history, in order, a page at a time", {200: response_models.History}, (400, 404), query=request_models.HistoryPage, tag="events"),
    Route("GET",  "/calls/{call_id}/recording", recordings.get_recording, "A call's recording", {200: AUDIO}, (400, 404)),
    Route("GET",  "/calls/{call_id}/stream", streams.call_stream, "Follow one call (SSE)", {200: SSE}, (400, 404), query_token=True, call_token=True, tag="realtime",
          headers={"Last-Event-ID": "Resume after this seq (also ?last_event_id=)."}),
    Route("GET",  "/ws",            streams.call_websocket, "Follow one call (WebSocket, ?call_id=)", {101: WEBSOCKET}, (400, 404), query_token=True, call_token=True, tag="realtime"),
    Route("GET",  "/stream",        streams.key_stream, "Follow every call of the key (SSE)", {200: SSE}, query_token=True, tag="realtime"),
    Route("POST", "/events",        events.post_event, "Ingest one lifecycle event",  {201: response_models.StoredEvent, 200: response_models.StoredEvent}, (400, 404, 409, 422, 429), body=request_models.PostEvent, tag="events"),
    Route("GET",  "/stats/calls",   stats.call_counts, "The key's calls by status now, and its breached calls", {200: response_models.CallCounts}, tag="stats"),
    Route("GET",  "/stats/queues",  stats.queue_stats, "Each queue's service level, abandonment, ASA, AHT over a window, and who waits now", {200: response_models.QueueStats}, (400,), query=request_models.QueueStatsQuery, tag="stats"),
    Route("GET",  "/stats/queues/{queue_id}/series", stats.queue_series, "One queue's figures per bucket over a window", {200: response_models.QueueSeries}, (400, 404), query=request_models.SeriesQuery, tag="stats"),
    Route("GET",  "/stats/agents",  stats.agent_stats, "Each agent's handled calls, AHT and hold time over a window", {200: response_models.AgentStats}, (400,), query=request_models.AgentStatsQuery, tag="stats"),
    Route("GET",  "/metrics",       metrics.metrics, "Platform counters (JSON, Prometheus text or OpenMetrics)", {200: response_models.Metrics}, (400,), query=request_models.MetricsQuery, tag="platform"),
    # The contact-centre service's paths, for its clients.
    Route("POST", "/api/events",    events.post_event, "Ingest one lifecycle event",  {201: response_models.StoredEvent, 200: response_models.StoredEvent}, (400, 404, 409, 422, 429), body=request_models.PostEvent, tag="events"),
    Route("GET",  "/api/calls",     calls.list_calls, "The key's calls, newest first", {200: response_models.CallPage}, (400,), query=request_models.ListCalls, tag="events"),
    Route("GET",  "/api/stats/queues", stats.queue_stats, "Each queue's service level, abandonment, ASA, AHT over a window, and who waits now", {200: response_models.QueueStats}, (400,), query=request_models.QueueStatsQuery, tag="stats"),
    Route("GET",  "/api/calls/{call_id}/events", events.call_events, "A call's history, in order, a page at a time", {200: response_models.History}, (400, 404), query=request_models.HistoryPage, tag="events"),
    # The Twilio face: Twilio's Calls API over the same calls (api/handlers/twilio.py).
    Route("GET",  "/2010-04-01/Accounts.json", twilio.list_accounts, "The caller's account, as Twilio's Accounts list", {200: response_models.TwilioAccountPage}, **T),
    Route("GET",  "/2010-04-01/Accounts/{account_sid}.json", twilio.get_account, "The caller's account", {200: response_models.TwilioAccount}, **T),
    Route("POST", "/2010-04-01/Accounts/{account_sid}/Calls.json", twilio.create_call, "Create a call (Twilio's Calls API)", {201: response_models.TwilioCall}, (400, 429), body=twilio_requests.CreateTwilioCall, **T),
    Route("GET",  "/2010-04-01/Accounts/{account_sid}/Calls.json", twilio.list_calls, "The account's calls, newest first (Twilio's page)", {200: response_models.TwilioCallPage}, (400,), query=twilio_requests.ListTwilioCalls, **T),
    Route("GET",  "/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json", twilio.get_call, "One call", {200: response_models.TwilioCall}, (404,), **T),
    Route("POST", "/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json", twilio.update_call, "Hang a call up (Status=completed or canceled)", {200: response_models.TwilioCall}, (400, 404), body=twilio_requests.UpdateTwilioCall, **T),
]
# fmt: on


def setup_routes(app: web.Application) -> None:
    specs = {}
    for route in ROUTES:
        specs[app.router.add_route(route.method, route.path, route.handler)] = route
    app[appkeys.ROUTES] = specs
