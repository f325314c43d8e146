"""`POST /events` and `GET /calls/{id}/events`: contact-centre events in, a call's history out."""

from __future__ import annotations

from aiohttp import web

from api import appkeys
from api.handlers.common import json_body, json_response, path_uuid
from api.schemas import posted_event
from calls.views import event_body


async def post_event(request: web.Request) -> web.Response:
    """201 with the stored event; 200 with the original when its event_id was seen before."""
    posted = posted_event(await json_body(request))
    ingested = await request.app[appkeys.EVENTS].ingest(appkeys.api_key(request), posted)
    return json_response(event_body(ingested.event), status=201 if ingested.created else 200)


async def call_events(request: web.Request) -> web.Response:
    call_id = path_uuid(request)
    events = await request.app[appkeys.EVENTS].history(appkeys.api_key(request), call_id)
    return json_response({"call_id": call_id, "data": [event_body(event) for event in events]})
