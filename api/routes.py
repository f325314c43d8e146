"""Every route of the API, read top to bottom."""

from __future__ import annotations

from aiohttp import web

from api.handlers import calls, events, health, metrics, recordings, streams


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/", health.index),
            web.get("/health", health.health),
            web.get("/ready", health.ready),
            web.post("/calls", calls.create_call),
            web.get("/calls", calls.list_calls),
            web.get("/calls/{call_id}", calls.get_call),
            web.get("/calls/{call_id}/events", events.call_events),
            web.get("/calls/{call_id}/recording", recordings.get_recording),
            web.get("/calls/{call_id}/stream", streams.call_stream),
            web.get("/ws", streams.call_websocket),
            web.post("/events", events.post_event),
            web.get("/stream", streams.key_stream),
            web.get("/metrics", metrics.metrics),
            # The contact-centre service's paths, for its clients.
            web.post("/api/events", events.post_event),
            web.get("/api/calls", calls.list_calls),
            web.get("/api/calls/{call_id}/events", events.call_events),
        ]
    )
